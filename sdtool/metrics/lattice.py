"""Lattice score: how strongly an image repeats with a period of 4 or 2 pixels.

A x4 model that decodes each 4×4 block from channels (a flow's squeezes, a pixel shuffle) can leave a
fine periodic grid on smooth areas. Such a grid puts power at the frequencies that are multiples of N/4
on each axis; a photo has no reason to. The score is the mean, over those 15 frequencies (all but DC),
of their power over the median power of their 7×7 spectral neighbourhood: about 4–5 for photos and
bicubic upsampling, hundreds for a visible lattice.
"""

from __future__ import annotations

import numpy as np

PERIOD = 4
_SIGMA = 2.0  # Gaussian low-pass removed first, so that the image's smooth content does not dominate
_HALF = 3  # 7×7 neighbourhood


def _gray(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3:
        if a.shape[2] == 1:
            return a[:, :, 0]
        a = a[:, :, :3] @ np.array([0.299, 0.587, 0.114])
    if a.ndim != 2:
        raise ValueError(f"lattice_score needs an H×W or H×W×C image, got shape {np.shape(img)}")
    return a


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    import cv2  # imported here: `import sdtool.metrics` stays light

    return cv2.GaussianBlur(a, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _power_spectrum(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    return np.abs(np.fft.fft2((a - _gaussian_blur(a, _SIGMA)) * window)) ** 2


def lattice_score(img: np.ndarray) -> float:
    """Mean peak-to-neighbourhood power ratio at the 15 non-zero multiples of (H/4, W/4) in the
    spectrum of the image's high-pass (grey minus Gaussian σ 2), Hann-windowed. img: H×W or H×W×C."""
    g = _gray(img)
    h, w = g.shape
    if min(h, w) < 4 * PERIOD:
        raise ValueError(f"lattice_score needs an image of at least {4 * PERIOD}×{4 * PERIOD} px, got {w}×{h}")
    p = _power_spectrum(g)
    ratios = []
    for i in range(PERIOD):
        for j in range(PERIOD):
            if i == 0 and j == 0:
                continue
            u, v = round(i * h / PERIOD), round(j * w / PERIOD)
            rows = np.arange(u - _HALF, u + _HALF + 1) % h
            cols = np.arange(v - _HALF, v + _HALF + 1) % w
            hood = p[np.ix_(rows, cols)].ravel()
            ring = np.delete(hood, hood.size // 2)  # leave the peak itself out
            ratios.append(p[u, v] / max(float(np.median(ring)), 1e-20))
    return float(np.mean(ratios))
