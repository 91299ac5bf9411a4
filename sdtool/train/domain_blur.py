"""Unpaired estimates of how real LR photographs differ from bicubic-downscaled HR images.

Real x4 LR photographs (RealSR, DRealSR) are softer than the MATLAB-bicubic LR of an HR image. The blur
that closes the gap can be measured without pairs, from statistics that depend on how sharp images are
rather than on what they show: natural images are roughly scale-invariant, so the ratio of fine-scale to
coarse-scale luma detail, |Y − G₁Y| / |G₁Y − G₂Y| (Gₛ a Gaussian of σ s), is set mostly by the blur.
`estimate_domain_blur` blurs the bicubic LR of the HR crops until that ratio matches the real LR crops
(0.55 LR px on the RealSR train split; on the validation pairs, bicubic + σ 0.5–0.7 is closest to the real LR).
Training uses it as the target of generated LR images, so that the degradation flow carries the blur.

Camera LR images are softer still in colour than in brightness (demosaicking and chroma denoising): the
high-frequency energy of their chroma, relative to that of their luma, is about 0.65 of bicubic LR's on the
RealSR train split. `estimate_chroma_blur` finds the extra chroma blur that matches this ratio, also unpaired.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from sdtool.degrade.ops import gaussian_blur
from sdtool.imageio import LUMA_WEIGHTS
from sdtool.resize import imresize


def split_luma_chroma(x: Tensor) -> tuple[Tensor, Tensor]:
    """N×3×h×w → BT.601 luma N×1×h×w and chroma N×3×h×w (colour differences RGB − Y), x = luma + chroma."""
    y = sum(w * x[:, i:i + 1] for i, w in enumerate(LUMA_WEIGHTS))
    return y, x - y


def _hf(x: Tensor) -> float:
    """Mean fine-scale detail |x − G₁x|."""
    return float((x - gaussian_blur(x, 1.0)).abs().mean())


def detail_ratio(x: Tensor) -> float:
    """Fine over coarse luma detail, |Y − G₁Y| / |G₁Y − G₂Y| averaged over a batch: lower = blurrier."""
    y, _ = split_luma_chroma(x)
    coarse = float((gaussian_blur(y, 1.0) - gaussian_blur(y, 2.0)).abs().mean())
    return _hf(y) / max(coarse, 1e-12)


def _closest_sigma(grid: Sequence[float], target: float, stat: Callable[[float], float]) -> float:
    """The σ of `grid` whose statistic stat(σ) comes closest to `target`."""
    errors = [abs(stat(float(s)) - target) for s in grid]
    return float(grid[int(np.argmin(errors))])


def estimate_domain_blur(lr: Tensor, hr: Tensor, sigmas: Optional[Sequence[float]] = None) -> float:
    """σ (in LR pixels) of the Gaussian that gives bicubic-downscaled `hr` crops (N×3×4s×4s, [0, 1]) the
    fine/coarse detail ratio of the real `lr` crops (M×3×s×s). Unpaired: the sets need not show the same scenes."""
    grid = np.round(np.arange(0.0, 2.0001, 0.05), 2) if sigmas is None else sigmas
    bic = imresize(hr, 0.25).clamp(0, 1)
    return _closest_sigma(grid, detail_ratio(lr), lambda s: detail_ratio(gaussian_blur(bic, s)))


def domain_target(bic: Tensor, sigma: float, chroma_sigma: float = 0.0) -> Tensor:
    """Bicubic LR softened like the LR domain: Gaussian σ on the whole image, then chroma_sigma more on chroma."""
    out = gaussian_blur(bic, sigma)
    if chroma_sigma <= 0:
        return out
    y, c = split_luma_chroma(out)
    return y + gaussian_blur(c, chroma_sigma)


def chroma_luma_ratio(x: Tensor) -> float:
    """Mean high-frequency energy (|x − blur_σ1(x)|) of chroma over that of luma: a colour-softness
    statistic that depends little on what the images show."""
    y, c = split_luma_chroma(x)
    return _hf(c) / max(_hf(y), 1e-12)


def estimate_chroma_blur(lr: Tensor, hr: Tensor, sigma: float, sigmas: Optional[Sequence[float]] = None) -> float:
    """Extra chroma σ (LR px) that gives `domain_target(bicubic(hr), sigma, ·)` the chroma/luma
    high-frequency ratio of the real `lr` crops. Unpaired, like `estimate_domain_blur`."""
    grid = np.round(np.arange(0.0, 3.0001, 0.05), 2) if sigmas is None else sigmas
    bic = imresize(hr, 0.25).clamp(0, 1)
    return _closest_sigma(grid, chroma_luma_ratio(lr), lambda s: chroma_luma_ratio(domain_target(bic, sigma, s)))


def bank_crops(images: list[np.ndarray], size: int, per_image: int = 2, seed: int = 0) -> Tensor:
    """Random size×size crops (per_image of each uint8 H×W×3 image) as an N×3×size×size float tensor."""
    g = np.random.default_rng(seed)
    crops = []
    for img in images:
        h, w = img.shape[:2]
        for _ in range(per_image):
            top, left = int(g.integers(0, h - size + 1)), int(g.integers(0, w - size + 1))
            crops.append(img[top:top + size, left:left + size])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0
