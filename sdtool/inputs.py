"""Checks on what callers hand to the library, in one place for the Python API and the CLI: images given as
tensors, the sampling temperature and the number of samples. Each raises a typed error naming what is wrong
and how to give it instead; nothing is converted silently.
"""

from __future__ import annotations

import math
from typing import Any

from sdtool.errors import InputError, OptionError

# The latent is drawn from N(0, τ²); the model learned τ = 1. Quality falls slowly up to τ 3 (RealSR crop, lite:
# PSNR 29.4 dB at τ 0.4, 28.9 at 3, 25.3 at 5, 9.9 at 10, where the output is noise).
MAX_TEMPERATURE = 4.0
MAX_SAMPLES = 1000  # samples of one image: each is a whole output file
RANGE_SLACK = 1e-3  # values this far outside [0, 1] (resampling overshoot) are accepted; the model clamps


def check_temperature(temperature: Any) -> None:
    """OptionError unless the sampling temperature is a number in 0..MAX_TEMPERATURE."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise OptionError("temperature", f"must be a number, got {type(temperature).__name__}") from None
    if not math.isfinite(value):
        raise OptionError("temperature", f"must be a finite number, got {value}")
    if value < 0:
        raise OptionError("temperature", f"must be >= 0, got {value:g}")
    if value > MAX_TEMPERATURE:
        raise OptionError("temperature", f"must be at most {MAX_TEMPERATURE:g} (1 is the learned spread; larger "
                          f"values give noise), got {value:g}")


def check_samples(samples: Any) -> None:
    """OptionError unless the number of samples per image is an integer in 1..MAX_SAMPLES."""
    if isinstance(samples, bool) or not isinstance(samples, int):
        raise OptionError("samples", f"must be an integer, got {samples!r}")
    if not 1 <= samples <= MAX_SAMPLES:
        raise OptionError("samples", f"must be in 1..{MAX_SAMPLES}, got {samples}")


def _shape_hint(shape: tuple[int, ...], x: str) -> str:
    if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        return f" (an H×W×C image? use {x}.permute(2, 0, 1)[None])"
    if len(shape) == 3:
        return f" (one C×H×W image? add the batch dimension: {x}[None])"
    if len(shape) == 4 and shape[-1] == 3:
        return f" (channels last? use {x}.permute(0, 3, 1, 2))"
    if len(shape) == 4 and shape[1] == 1:
        return f" (gray: {x}.expand(-1, 3, -1, -1))"
    if len(shape) == 4 and shape[1] == 4:
        return f" (RGBA: the colour is {x}[:, :3])"
    return ""


def check_image(x: Any, name: str = "x") -> None:
    """InputError unless `x` is a floating-point torch tensor N×3×H×W (N, H, W ≥ 1) with finite values in [0, 1]
    (RANGE_SLACK allowed): the contract of `SDFlow.upscale`, `SDFlow.downscale` and `PDM.degrade`."""
    import torch

    if not isinstance(x, torch.Tensor):
        hint = ""
        if hasattr(x, "__array__"):
            hint = " (an H×W×3 array a: torch.from_numpy(a).permute(2, 0, 1)[None], / 255 for uint8)"
        raise InputError(f"{name} must be a torch.Tensor N×3×H×W of floats in [0, 1], got {type(x).__name__}{hint}")
    shape = tuple(x.shape)
    if not x.is_floating_point():
        raise InputError(f"{name} is a {str(x.dtype).replace('torch.', '')} tensor; give floats in [0, 1] "
                         f"({name}.float() / 255 for 8-bit images)")
    if len(shape) != 4 or shape[1] != 3:
        raise InputError(f"{name} must be N×3×H×W (RGB), got shape {shape}{_shape_hint(shape, name)}")
    if x.numel() == 0:
        raise InputError(f"{name} is empty (shape {shape})")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} holds NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -RANGE_SLACK or hi > 1 + RANGE_SLACK:
        hint = " (0..255 images: divide by 255)" if hi > 2 else ""
        raise InputError(f"{name} must hold values in [0, 1], found {lo:.4g}..{hi:.4g}{hint}")
