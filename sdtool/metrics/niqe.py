"""NIQE (Mittal et al. 2013), no-reference, with the parameters of the authors' MATLAB release.

Pipeline, as in MATLAB `computequality` with 96×96 blocks:
1. grey level = MATLAB `rgb2gray` (0.2989 R + 0.5870 G + 0.1140 B), rounded to the uint8 grid;
2. crop to whole 96×96 blocks; for two scales (the second is MATLAB bicubic imresize by 0.5):
   MSCN coefficients with a 7×7 Gaussian (sigma 7/6, replicate borders, +1 in the denominator;
   rounding noise in flat areas set to exactly 0, see `_mscn`),
   then per block 18 features: AGGD fit of the coefficients (shape, mean scale) and of the products with
   the 4 neighbours (0,1), (1,0), (1,1), (1,-1) taken with a circular shift inside the block;
3. fit a Gaussian to the 36-d block features and return the Mahalanobis-like distance to the pristine
   model (weights/niqe_pris_params.npz): sqrt(d^T pinv((C_pris + C_img) / 2) d).
Lower is more natural. An image needs at least two textured 96×96 blocks (else ValueError).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from sdtool.resize import imresize_np, quantize
from sdtool.metrics.psnr_ssim import rgb_to_y

BLOCK = 96
FLAT_TOL = 1e-9  # |MSCN| below this is rounding noise of a flat area (real values are ≳ 1e-6)
_GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])  # MATLAB rgb2gray


@lru_cache(maxsize=2)
def load_pristine(path: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """Pristine mean (36,) and covariance (36×36) of NIQE, float64."""
    from sdtool.errors import CheckpointError
    from sdtool.resources import NIQE_PARAMS, weights_path

    p = Path(path) if path else weights_path(NIQE_PARAMS)
    if not p.is_file():
        raise CheckpointError(f"NIQE parameters not found: {p}")
    with np.load(p, allow_pickle=False) as data:
        return np.ravel(data["mu_pris_param"]).astype(np.float64), np.asarray(data["cov_pris_param"], np.float64)


@lru_cache(maxsize=1)
def _gamma_table() -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import gamma

    shapes = np.arange(0.2, 10.0 + 1e-9, 0.001)
    ratio = gamma(2 / shapes) ** 2 / (gamma(1 / shapes) * gamma(3 / shapes))
    return shapes, ratio


def _aggd(vec: np.ndarray) -> tuple[float, float, float]:
    """Asymmetric generalised Gaussian fit by moment matching: (shape alpha, left scale, right scale)."""
    from scipy.special import gamma

    shapes, ratio = _gamma_table()
    left = vec[vec < 0]
    right = vec[vec > 0]
    # An empty side gives NaN (MATLAB: mean of an empty vector); nanmean/nancov then skip the block.
    left_std = math.sqrt(float(np.mean(left**2))) if left.size else math.nan
    right_std = math.sqrt(float(np.mean(right**2))) if right.size else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_hat = np.float64(left_std) / np.float64(right_std)
        r_hat = np.float64(np.mean(np.abs(vec))) ** 2 / np.float64(np.mean(vec**2))
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / ((gamma_hat**2 + 1) ** 2)
    if not np.isfinite(r_norm):
        return math.nan, math.nan, math.nan
    alpha = float(shapes[int(np.argmin((ratio - r_norm) ** 2))])
    k = math.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * k, right_std * k


def _block_features(block: np.ndarray) -> list[float]:
    from scipy.special import gamma

    alpha, bl, br = _aggd(block.ravel())
    feats = [alpha, (bl + br) / 2]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):
        prod = (block * np.roll(block, shift, axis=(0, 1))).ravel()
        a, bl, br = _aggd(prod)
        mean = (br - bl) * (gamma(2 / a) / gamma(1 / a)) if np.isfinite(a) else math.nan
        feats.extend([a, mean, bl, br])
    return feats


def _mscn(img: np.ndarray) -> np.ndarray:
    from scipy.ndimage import correlate

    ax = np.arange(7, dtype=np.float64) - 3
    g = np.exp(-(ax**2) / (2 * (7 / 6) ** 2))
    window = np.outer(g, g)
    window /= window.sum()
    mu = correlate(img, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(img * img, window, mode="nearest") - mu * mu))
    mscn = (img - mu) / (sigma + 1)
    # In flat areas the coefficients are 0 in exact arithmetic, but rounding leaves ±1e-14 whose sign
    # depends on the filter's summation order and decides which side of the AGGD fit they join. Snapping
    # them to 0 makes the score independent of that order (and brings TID2013 I19 from 9.02 to 8.67,
    # MATLAB: 8.64).
    mscn[np.abs(mscn) < FLAT_TOL] = 0.0
    return mscn


def niqe_features(gray: np.ndarray) -> np.ndarray:
    """Per-block NIQE features (n_blocks × 36) of an H×W grey image on the 0..255 scale."""
    h, w = gray.shape
    nr, nc = h // BLOCK, w // BLOCK
    if nr == 0 or nc == 0:
        raise ValueError(f"NIQE needs at least {BLOCK}×{BLOCK} pixels, got {h}×{w}")
    img = np.asarray(gray[: nr * BLOCK, : nc * BLOCK], dtype=np.float64)
    per_scale = []
    for scale in (1, 2):
        size = BLOCK // scale
        mscn = _mscn(img)
        feats = [
            _block_features(mscn[r * size : (r + 1) * size, c * size : (c + 1) * size])
            for c in range(nc)
            for r in range(nr)  # column-major block order, as MATLAB blkproc + reshape
        ]
        per_scale.append(np.asarray(feats, dtype=np.float64))
        if scale == 1:
            img = imresize_np(img, 0.5)
    return np.concatenate(per_scale, axis=1)


def to_gray(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray of an H×W×3 uint8-scale image, rounded to the uint8 grid (H×W float64)."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[:, :, 0] if arr.shape[2] == 1 else arr[:, :, :3] @ _GRAY
    return quantize(arr)


def niqe(img: np.ndarray, crop_border: int = 0, input: str = "gray") -> float:
    """NIQE of an H×W×3 RGB (or H×W grey) image on the 0..255 scale. Lower is better.

    input: "gray" computes it on MATLAB's rgb2gray, as the MATLAB reference code and the papers that use it;
    "y" on the BT.601 luma (rgb2ycbcr Y, 16..235) rounded to integers, as BasicSR's calculate_niqe."""
    if input == "y":
        arr = np.asarray(img, dtype=np.float64)
        gray = quantize(rgb_to_y(arr)) if arr.ndim == 3 and arr.shape[2] >= 3 else to_gray(arr)
    elif input == "gray":
        gray = to_gray(img)
    else:
        raise ValueError(f"NIQE input must be 'gray' or 'y', got {input!r}")
    if crop_border > 0:
        gray = gray[crop_border:-crop_border, crop_border:-crop_border]
    feats = niqe_features(gray)
    mu_p, cov_p = load_pristine()
    # nanmean per feature; nancov drops blocks with any NaN (flat blocks give NaN AGGD fits).
    good = feats[np.all(np.isfinite(feats), axis=1)]
    if good.shape[0] < 2:
        raise ValueError("NIQE needs at least two textured 96×96 blocks")
    mu = np.nanmean(feats, axis=0)
    cov = np.cov(good, rowvar=False)
    d = mu_p - mu
    return float(math.sqrt(max(float(d @ np.linalg.pinv((cov_p + cov) / 2) @ d), 0.0)))
