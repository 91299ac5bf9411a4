"""Colour error: how far an image's overall colour is from the reference's.

For x4 SR a sample can win on LPIPS while turning an orange yellow; this number makes such a drift visible.
"""

from __future__ import annotations

import numpy as np

from sdtool.metrics.psnr_ssim import crop


def color_error(img: np.ndarray, ref: np.ndarray, crop_border: int = 0) -> float:
    """Mean over R, G, B of |mean(img channel) − mean(ref channel)|, in the images' units (0–255 for
    8-bit data). img, ref: H×W×3 arrays of the same size; `crop_border` pixels are left out on each side."""
    a = crop(np.asarray(img, dtype=np.float64), crop_border)
    b = crop(np.asarray(ref, dtype=np.float64), crop_border)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"color_error needs two H×W×3 images of one size, got {a.shape} and {b.shape}")
    return float(np.abs(a.reshape(-1, 3).mean(0) - b.reshape(-1, 3).mean(0)).mean())
