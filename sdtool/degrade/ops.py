"""Degradation operators: blur + stride-s downsampling, kernel synthesis, noise, JPEG.

Conventions (all functions):
- images are float32 tensors N×3×H×W in [0, 1] (HR) or N×3×h×w (LR); values are not clamped unless said;
- a kernel is applied as a cross-correlation exactly like `torch.nn.functional.conv2d` (no flip); all
  kernels synthesised here are point-symmetric, so correlation and convolution agree for them;
- blur-downsample pads the HR image by reflection with K//2 on every side and keeps every s-th pixel
  starting at 0, so LR pixel (i, j) is the kernel centred on HR pixel (s·i, s·j); output size ceil(H/s).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from torch import Generator, Tensor


def _pad_for_kernel(y: "Tensor", ksize: int, scale: int) -> "Tensor":
    """Reflect-pad y (N×C×H×W) by K//2 and round H, W up to a multiple of `scale` (extra bottom/right rows)."""
    import torch.nn.functional as F

    half = ksize // 2
    h, w = y.shape[-2:]
    extra_h = (-h) % scale
    extra_w = (-w) % scale
    left, right, top, bottom = half, half + extra_w, half, half + extra_h
    # reflect padding needs pad < size; fall back to replicate for tiny inputs (edge cases only)
    mode = "reflect" if max(left, right) < w and max(top, bottom) < h else "replicate"
    return F.pad(y, (left, right, top, bottom), mode=mode)


def blur_downsample(y: "Tensor", kernel: "Tensor", scale: int = 4) -> "Tensor":
    """Blur HR images with one kernel per image (or one shared kernel) and keep every `scale`-th pixel.

    y: float N×C×H×W. kernel: K×K (shared), N×K×K (one per image) or N×K×K×h×w with h = ceil(H/scale),
    w = ceil(W/scale) (spatially varying: one kernel per LR pixel). K odd. Kernels are used as given
    (callers normalise them to sum 1). Returns N×C×ceil(H/scale)×ceil(W/scale), same dtype/device.
    """
    import torch.nn.functional as F

    if kernel.dim() == 5:
        return blur_downsample_variant(y, kernel, scale)
    n, c, h, w = y.shape
    if kernel.dim() == 2:
        kernel = kernel.unsqueeze(0).expand(n, -1, -1)
    if kernel.dim() != 3 or kernel.shape[0] != n or kernel.shape[1] != kernel.shape[2]:
        raise ValueError(f"kernel shape {tuple(kernel.shape)} does not fit images {tuple(y.shape)}")
    ksize = int(kernel.shape[-1])
    if ksize % 2 != 1:
        raise ValueError(f"kernel size must be odd, got {ksize}")
    yp = _pad_for_kernel(y, ksize, scale)
    # grouped conv: every (image, channel) is its own group, the image's kernel is shared by its channels
    weight = kernel.to(y.dtype).unsqueeze(1).repeat_interleave(c, dim=0)  # (N·C)×1×K×K
    out = F.conv2d(yp.reshape(1, n * c, *yp.shape[-2:]), weight, stride=scale, groups=n * c)
    out = out.reshape(n, c, out.shape[-2], out.shape[-1])
    return out[..., : math.ceil(h / scale), : math.ceil(w / scale)].contiguous()


def blur_downsample_variant(y: "Tensor", kernels: "Tensor", scale: int = 4) -> "Tensor":
    """Spatially varying blur + downsampling. kernels: N×K×K×h×w, one kernel per LR output pixel.

    Memory is N·C·K²·h·w floats; tile large images. Returns N×C×h×w.
    """
    import torch.nn.functional as F

    n, c, h, w = y.shape
    ksize = int(kernels.shape[1])
    lh, lw = math.ceil(h / scale), math.ceil(w / scale)
    if kernels.shape != (n, ksize, ksize, lh, lw):
        raise ValueError(f"kernels shape {tuple(kernels.shape)}; expected {(n, ksize, ksize, lh, lw)}")
    yp = _pad_for_kernel(y, ksize, scale)
    cols = F.unfold(yp, ksize, stride=scale)  # N×(C·K²)×L, L = lh·lw; K² index is row-major like the kernel
    cols = cols.reshape(n, c, ksize * ksize, lh * lw)
    k = kernels.to(y.dtype).reshape(n, 1, ksize * ksize, lh * lw)
    return (cols * k).sum(dim=2).reshape(n, c, lh, lw)


def gaussian_blur(x: "Tensor", sigma: float, radius: Optional[int] = None) -> "Tensor":
    """Separable isotropic Gaussian blur of N×C×H×W images with reflection padding (replicate for images
    no larger than the radius). radius defaults to ceil(3σ); σ ≤ 0 returns x unchanged."""
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return x
    r = radius if radius is not None else max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian_kernel(
    size: int,
    sigma_x: "Tensor | float",
    sigma_y: "Tensor | float | None" = None,
    theta: "Tensor | float" = 0.0,
) -> "Tensor":
    """Normalised anisotropic Gaussian kernels.

    sigma_x, sigma_y (standard deviations along the rotated axes, HR pixels), theta (radians): floats or
    1-D tensors of length N (broadcast). Returns float32 N×K×K (N = 1 for floats), each summing to 1.
    """
    import torch

    sx = torch.as_tensor(sigma_x, dtype=torch.float32).reshape(-1)
    sy = sx if sigma_y is None else torch.as_tensor(sigma_y, dtype=torch.float32).reshape(-1)
    th = torch.as_tensor(theta, dtype=torch.float32).reshape(-1)
    n = max(sx.numel(), sy.numel(), th.numel())
    sx, sy, th = sx.expand(n), sy.expand(n), th.expand(n)
    half = size // 2
    ax = torch.arange(-half, half + 1, dtype=torch.float32)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    cos, sin = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
    u = cos * xx + sin * yy  # coordinates along the rotated axes
    v = -sin * xx + cos * yy
    sx2 = sx.clamp_min(1e-3)[:, None, None] ** 2
    sy2 = sy.clamp_min(1e-3)[:, None, None] ** 2
    k = torch.exp(-0.5 * (u * u / sx2 + v * v / sy2))
    return k / k.sum(dim=(-2, -1), keepdim=True)


def kernel_moments(kernel: "Tensor") -> "tuple[Tensor, Tensor]":
    """Centroid and central second-moment matrix of kernels (..., K, K) treated as distributions.

    Returns (mean (..., 2) as (x, y) offsets from the centre pixel, cov (..., 2, 2)), in HR pixels.
    """
    import torch

    size = kernel.shape[-1]
    half = size // 2
    ax = torch.arange(-half, half + 1, dtype=kernel.dtype, device=kernel.device)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    p = kernel / kernel.sum(dim=(-2, -1), keepdim=True)
    mx = (p * xx).sum(dim=(-2, -1))
    my = (p * yy).sum(dim=(-2, -1))
    dx = xx - mx[..., None, None]
    dy = yy - my[..., None, None]
    cxx = (p * dx * dx).sum(dim=(-2, -1))
    cyy = (p * dy * dy).sum(dim=(-2, -1))
    cxy = (p * dx * dy).sum(dim=(-2, -1))
    cov = torch.stack([torch.stack([cxx, cxy], -1), torch.stack([cxy, cyy], -1)], -2)
    return torch.stack([mx, my], -1), cov


def kernel_sigma(kernel: "Tensor") -> "Tensor":
    """Isotropic width of kernels (..., K, K): sqrt of the mean of the two principal variances, HR pixels."""
    _, cov = kernel_moments(kernel)
    return ((cov[..., 0, 0] + cov[..., 1, 1]) / 2).clamp_min(0).sqrt()


def poisson_noise(x: "Tensor", peak: "Tensor | float", generator: "Optional[Generator]" = None) -> "Tensor":
    """Signal-dependent shot noise: Poisson(x·peak)/peak − x. x: N×C×H×W in [0,1]; peak: photons at white
    (float or N-vector; smaller = noisier). Returns the noise (same shape), not the noisy image."""
    import torch

    p = torch.as_tensor(peak, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    counts = torch.poisson(x.clamp(0, 1) * p, generator=generator)
    return counts / p - x.clamp(0, 1)


def jpeg(x: "Tensor", quality: "int | list[int]") -> "Tensor":
    """JPEG-compress each image (OpenCV, 4:2:0, RGB order handled). x: N×3×H×W in [0,1] (clamped, quantised
    to 8 bit). quality: int or one per image, 1..100. Returns float32 N×3×H×W in [0,1] on x's device."""
    import cv2
    import numpy as np
    import torch

    qs = [int(quality)] * x.shape[0] if isinstance(quality, int) else [int(q) for q in quality]
    arr = (x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    out = []
    for img, q in zip(arr, qs):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:  # pragma: no cover - cv2 only fails on invalid input
            raise RuntimeError("JPEG encoding failed")
        dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        out.append(np.ascontiguousarray(dec))
    res = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div(255)
    return res.to(x.device)


