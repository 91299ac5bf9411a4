"""PSNR and SSIM as the SR literature computes them (MATLAB-compatible).

Image contract: H×W×3 RGB numpy arrays on the 0..255 scale (uint8, or float already on the uint8 grid).
Everything is computed in float64. `crop_border` pixels are removed on every side first (x4 SR: 4).
Y is BT.601 luma as MATLAB `rgb2ycbcr` gives it: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, range
[16, 235], not rounded. SSIM uses an 11×11 Gaussian window (sigma 1.5), 'valid' filtering and the
constants of Wang et al. 2004 (K1 0.01, K2 0.03, L 255); on RGB it is the mean over the three channels.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def _as_float(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected H×W or H×W×C image, got shape {np.shape(img)}")
    return arr


def crop(img: np.ndarray, border: int) -> np.ndarray:
    """Remove `border` pixels on each side of an H×W(×C) array."""
    if border <= 0:
        return img
    if img.shape[0] <= 2 * border or img.shape[1] <= 2 * border:
        raise ValueError(f"image {img.shape[:2]} too small for crop border {border}")
    return img[border:-border, border:-border]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an H×W×3 RGB image on the 0..255 scale → H×W float64 in [16, 235] (MATLAB rgb2ycbcr)."""
    arr = _as_float(img)
    if arr.shape[2] == 1:
        return arr[:, :, 0]
    return arr[:, :, :3] @ _Y_WEIGHTS + 16.0


def psnr(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB between two same-size images on the 0..255 scale; inf when identical."""
    x, y = _as_float(a), _as_float(b)
    if x.shape != y.shape:
        raise ValueError(f"PSNR needs images of the same size, got {x.shape} and {y.shape}")
    if y_channel:
        x, y = rgb_to_y(x), rgb_to_y(y)
    x, y = crop(x, crop_border), crop(y, crop_border)
    mse = float(np.mean((x - y) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


@lru_cache(maxsize=4)
def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    g /= g.sum()
    return g  # separable: the 2-D window is outer(g, g)


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """'valid' correlation of an H×W array with the separable window outer(g, g)."""
    k = g.shape[0]
    h, w = img.shape
    # Rows then columns; sliding_window_view keeps it exact in float64 and vectorised.
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ g  # (h-k+1) × w
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g  # (h-k+1) × (w-k+1)


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    g = _gaussian_window()
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mu_x**2
    syy = _filter_valid(y * y, g) - mu_y**2
    sxy = _filter_valid(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM between two same-size images on the 0..255 scale (mean over channels for RGB)."""
    x, y = _as_float(a), _as_float(b)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs images of the same size, got {x.shape} and {y.shape}")
    if y_channel:
        x, y = rgb_to_y(x)[:, :, None], rgb_to_y(y)[:, :, None]
    x, y = crop(x, crop_border), crop(y, crop_border)
    if x.shape[0] < 11 or x.shape[1] < 11:
        raise ValueError(f"SSIM needs at least 11×11 pixels after cropping, got {x.shape[:2]}")
    return float(np.mean([_ssim_channel(x[:, :, c], y[:, :, c]) for c in range(x.shape[2])]))
