"""MATLAB-compatible bicubic `imresize` (Keys kernel, a = -0.5, antialiasing when downscaling).

MATLAB resizes one dimension at a time with a sparse weight matrix per dimension. We build the same
weights as small dense matrices (out × in) and apply them as two matrix products, so that one code path
serves numpy (float64, for metrics) and torch (any float dtype, differentiable, batched, on any device).

Conventions shared by both entry points:
- `scale` is the MATLAB scale factor (0.25 for x4 downscaling); the output size is ceil(in * scale).
- When `out_size` is given instead, the per-dimension scale is out / in (as MATLAB does).
- Borders are handled by symmetric reflection of indices (MATLAB's "symmetric" padding).
- Values are not rounded or clipped: MATLAB's uint8 rounding is the caller's choice (see `quantize`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

_A = -0.5  # MATLAB's bicubic kernel parameter


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's `cubic`), evaluated elementwise."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = ((_A + 2) * ax3 - (_A + 3) * ax2 + 1) * (ax <= 1)
    far = (_A * ax3 - 5 * _A * ax2 + 8 * _A * ax - 4 * _A) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=64)
def _taps_cached(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """The sparse form of the resampling: for each output index, its input indices (0-based, out_len × taps,
    int64, after symmetric reflection at the borders) and their weights (float64, rows sum to 1)."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        # Stretch the kernel by 1/scale: a low-pass filter at the output's Nyquist rate.
        kernel_width = kernel_width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    # Output pixel x (1-based) maps to input coordinate u; 0.5 terms align pixel centres.
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    if scale < 1 and antialias:
        w = scale * cubic(dist * scale)
    else:
        w = cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # Symmetric reflection: ... 2 1 | 1 2 ... n | n n-1 ...
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    src = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    src.setflags(write=False)
    w.setflags(write=False)
    return src, w


DENSE_LIMIT = 1 << 22  # matrix entries up to which a dense product is used (faster for training crops)


@lru_cache(maxsize=64)
def _weight_matrix_cached(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    src, w = _taps_cached(in_len, out_len, scale, antialias)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), src.shape[1])
    np.add.at(mat, (rows, src.ravel()), w.ravel())
    mat.setflags(write=False)
    return mat


def weight_matrix(in_len: int, out_len: int, scale: Optional[float] = None, antialias: bool = True) -> np.ndarray:
    """Dense resampling matrix M (out_len × in_len, float64) such that `out = M @ in` along one dimension."""
    return _weight_matrix_cached(*_key(in_len, out_len, scale, antialias))


def _key(in_len: int, out_len: int, scale: Optional[float], antialias: bool) -> tuple[int, int, float, bool]:
    """The cache key of a 1-D resampling: sizes checked, the scale defaulting to out_len / in_len."""
    if in_len < 1 or out_len < 1:
        raise ValueError(f"sizes must be positive, got in={in_len}, out={out_len}")
    s = float(scale) if scale is not None else out_len / in_len
    return int(in_len), int(out_len), s, bool(antialias)


def _plan(
    h: int, w: int, scale: Optional[Union[float, Sequence[float]]], out_size: Optional[Sequence[int]]
) -> tuple[int, int, Optional[float], Optional[float]]:
    if (scale is None) == (out_size is None):
        raise ValueError("give exactly one of scale or out_size")
    if out_size is not None:
        oh, ow = int(out_size[0]), int(out_size[1])
        return oh, ow, None, None
    if isinstance(scale, (int, float)):
        sh = sw = float(scale)
    else:
        sh, sw = float(scale[0]), float(scale[1])  # type: ignore[index]
    if sh <= 0 or sw <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return int(math.ceil(h * sh - 1e-9)), int(math.ceil(w * sw - 1e-9)), sh, sw


def imresize_np(
    img: np.ndarray,
    scale: Optional[Union[float, Sequence[float]]] = None,
    out_size: Optional[Sequence[int]] = None,
    antialias: bool = True,
) -> np.ndarray:
    """Resize an H×W or H×W×C array like MATLAB `imresize(img, scale, 'bicubic')`.

    img: any real dtype, any value range; computed in float64, returned as float64, not rounded.
    """
    if img.ndim not in (2, 3):
        raise ValueError(f"expected H×W or H×W×C, got shape {img.shape}")
    x = img.astype(np.float64, copy=False)
    h, w = x.shape[:2]
    oh, ow, sh, sw = _plan(h, w, scale, out_size)
    mh = weight_matrix(h, oh, sh, antialias)
    mw = weight_matrix(w, ow, sw, antialias)
    # MATLAB resizes rows first when both scales are equal; the order only matters in the last bits.
    out = np.tensordot(mh, x, axes=(1, 0))  # oh × w (× C)
    out = np.tensordot(mw, out, axes=(1, 1))  # ow × oh (× C)
    return np.swapaxes(out, 0, 1)


def imresize(
    x: "torch.Tensor",
    scale: Optional[Union[float, Sequence[float]]] = None,
    out_size: Optional[Sequence[int]] = None,
    antialias: bool = True,
) -> "torch.Tensor":
    """MATLAB bicubic resize of a torch tensor: (…)×H×W → (…)×H'×W', same dtype and device.

    Differentiable (two matrix products). Not rounded or clipped; inputs in [0,1] stay roughly in [0,1]
    (bicubic overshoots slightly at edges). Use for x4 bicubic LR: `imresize(hr, 0.25)`.
    """
    import torch

    if x.dim() < 2:
        raise ValueError(f"expected (…)×H×W, got shape {tuple(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    oh, ow, sh, sw = _plan(h, w, scale, out_size)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    xf = x.to(dtype)
    if h * oh <= DENSE_LIMIT and w * ow <= DENSE_LIMIT:
        mh = torch.from_numpy(np.array(weight_matrix(h, oh, sh, antialias))).to(device=x.device, dtype=dtype)
        mw = torch.from_numpy(np.array(weight_matrix(w, ow, sw, antialias))).to(device=x.device, dtype=dtype)
        return torch.matmul(torch.matmul(mh, xf), mw.transpose(0, 1))
    # Big images: the banded form (a few taps per output pixel) instead of out × in dense matrices, which for a
    # 3840-px wide x4 upscale would take 470 MB and a dense product's time.
    xf = _resample_taps(xf, -2, h, oh, sh, antialias)
    return _resample_taps(xf, -1, w, ow, sw, antialias)


def _resample_taps(x: "torch.Tensor", dim: int, in_len: int, out_len: int, scale: Optional[float],
                   antialias: bool) -> "torch.Tensor":
    """Resample x along `dim` as `weight_matrix` would, tap by tap (index_select + weighted sum)."""
    import torch

    src, w = _taps_cached(*_key(in_len, out_len, scale, antialias))
    idx = torch.from_numpy(np.array(src)).to(x.device)
    wt = torch.from_numpy(np.array(w)).to(device=x.device, dtype=x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out_len
    out = None
    for t in range(src.shape[1]):
        term = x.index_select(dim, idx[:, t]) * wt[:, t].view(shape)
        out = term if out is None else out.add_(term)
    assert out is not None  # src has at least one tap
    return out


def quantize(x: np.ndarray) -> np.ndarray:
    """Round to the uint8 grid like MATLAB's uint8 conversion (round half away from zero, clip to [0,255]).

    x: float array in [0,255] scale. Returns float64 integers in [0,255].
    """
    return np.clip(np.floor(np.asarray(x, dtype=np.float64) + 0.5), 0, 255)


def resize_alpha(alpha: np.ndarray, height: int, width: int, task: str) -> np.ndarray:
    """An alpha plane H×W in [0, 1] resized to height × width for an upscaled (bicubic) or downscaled (area)
    image; float32, clipped to [0, 1]."""
    import cv2

    interp = cv2.INTER_CUBIC if task == "upscale" else cv2.INTER_AREA
    return np.clip(cv2.resize(alpha, (width, height), interpolation=interp), 0.0, 1.0).astype(np.float32)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An H×W×C image (uint8, uint16 or float32) resized to height × width in its own dtype: area averaging
    when shrinking, Lanczos (8×8) when enlarging, as Real-ESRGAN's --outscale does after its x4 model."""
    import cv2

    shrink = height * width < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4
    out = cv2.resize(image, (width, height), interpolation=interp)
    if image.ndim == 3 and out.ndim == 2:  # OpenCV drops a single channel axis
        out = out[:, :, None]
    if out.dtype == np.float32:
        np.clip(out, 0.0, 1.0, out=out)  # Lanczos overshoots; integer outputs are saturated by OpenCV
    return out
