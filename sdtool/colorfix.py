"""Colour guard for x4 SR outputs: keep the colour and brightness of whole regions from the LR input.

A sampled SR image can drift in colour (the model's HF latent carried some of it, see the model card); the
low frequencies of the bicubic upscale are a safe reference for them, while the detail stays the model's.
  wavelet  replace the SR image's low-frequency band (an à trous wavelet residual after `levels` levels of
           a dilated binomial blur, as in the colour fix of StableSR-style tools) by the bicubic upscale's.
  adain    match each channel's global mean and standard deviation to the bicubic upscale's.
Both are global in the sense that matters for tiling: applied once to the whole stitched image, so tiled
and untiled runs give the same result.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

ColorFix = Literal["none", "wavelet", "adain"]
COLOR_FIXES: tuple[str, ...] = ("none", "wavelet", "adain")
DEFAULT_COLOR_FIX: ColorFix = "wavelet"
WAVELET_LEVELS = 3  # low band ≈ Gaussian σ 3.2 HR px (0.8 LR px); chosen on RealSR validation (README "Numbers")


def resolve_color_fix(name: Optional[str]) -> ColorFix:
    """The colour guard a command runs: `name`, or the default when None; OptionError for an unknown one."""
    from sdtool.errors import OptionError

    fix = DEFAULT_COLOR_FIX if name is None else name
    if fix not in COLOR_FIXES:
        raise OptionError("color_fix", f"must be one of {', '.join(COLOR_FIXES)}, got {fix!r}")
    return fix  # type: ignore[return-value]


def check_color_fix(name: str) -> ColorFix:
    if name not in COLOR_FIXES:
        raise ValueError(f"unknown colour fix {name!r}; choose one of {', '.join(COLOR_FIXES)}")
    return name  # type: ignore[return-value]


def _binomial_blur(x: Tensor, dilation: int) -> Tensor:
    """[1, 2, 1]/4 ⊗ [1, 2, 1]/4 blur with holes of `dilation` px, replicate padding (any image size)."""
    c = x.shape[1]
    k = torch.tensor([0.25, 0.5, 0.25], dtype=x.dtype, device=x.device)
    x = F.conv2d(F.pad(x, (dilation, dilation, 0, 0), mode="replicate"), k.view(1, 1, 1, 3).expand(c, 1, 1, 3),
                 groups=c, dilation=(1, dilation))
    return F.conv2d(F.pad(x, (0, 0, dilation, dilation), mode="replicate"), k.view(1, 1, 3, 1).expand(c, 1, 3, 1),
                    groups=c, dilation=(dilation, 1))


def low_band(x: Tensor, levels: int = WAVELET_LEVELS) -> Tensor:
    """The à trous wavelet low band of N×C×H×W images: `levels` binomial blurs with dilation 1, 2, 4, …"""
    for i in range(levels):
        x = _binomial_blur(x, 2**i)
    return x


def wavelet_color_fix(sr: Tensor, reference: Tensor, levels: int = WAVELET_LEVELS) -> Tensor:
    """sr with its low band replaced by the reference's; both N×3×H×W in [0, 1] → the same, clamped."""
    return (sr + low_band(reference - sr, levels)).clamp_(0, 1)


def adain_color_fix(sr: Tensor, reference: Tensor, eps: float = 1e-5) -> Tensor:
    """sr with each channel's mean and standard deviation set to the reference's; N×3×H×W in [0, 1]."""
    mu_s, sd_s = sr.mean(dim=(2, 3), keepdim=True), sr.std(dim=(2, 3), keepdim=True)
    mu_r, sd_r = reference.mean(dim=(2, 3), keepdim=True), reference.std(dim=(2, 3), keepdim=True)
    return ((sr - mu_s) / (sd_s + eps) * sd_r + mu_r).clamp_(0, 1)


def bicubic_reference(lr: Tensor, height: int, width: int) -> Tensor:
    """MATLAB-style bicubic x4 upscale of N×3×h×w LR images in [0, 1], cropped to height × width."""
    from sdtool.resize import imresize

    return imresize(lr.float(), 4.0)[:, :, :height, :width].clamp(0, 1)


def apply_color_fix(sr: Tensor, lr: Tensor, method: str) -> Tensor:
    """Colour guard of x4 SR images sr (N×3×H×W, [0, 1]) against their LR inputs lr (N×3×h×w, H ≤ 4h)."""
    method = check_color_fix(method)
    if method == "none":
        return sr
    ref = bicubic_reference(lr.to(sr.device), sr.shape[2], sr.shape[3]).to(sr.dtype)
    return wavelet_color_fix(sr, ref) if method == "wavelet" else adain_color_fix(sr, ref)


class RowGuard:
    """The colour guard applied to an SR image that arrives in row bands (tiled runs), equal to applying it
    to the whole image: a sink for `tiling.run_tiled` that passes guarded rows on to `sink`.

    wavelet: the low band reaches 2**levels − 1 px, so a band is guarded once that many rows below it have
    arrived (with that many rows above it kept), and the bicubic reference is made from the LR rows around
    the band only: float32 memory is a band, not the image. adain needs the statistics of the whole image,
    so its rows are gathered first."""

    def __init__(self, lr: Tensor, height: int, width: int, method: str, sink, levels: int = WAVELET_LEVELS):
        self.lr, self.height, self.width = lr, height, width
        self.method, self.sink, self.levels = check_color_fix(method), sink, levels
        self.halo = 2**levels - 1
        self._reset()

    def _reset(self) -> None:
        self.buf: list[Tensor] = []
        self.buf_r0 = 0  # first row held in buf
        self.done = 0  # rows passed on

    def __call__(self, rows: Tensor, row0: int) -> None:
        if self.method == "none":
            self.sink(rows, row0)
            return
        if row0 == 0:  # a restart (after an out-of-memory error) sends every row again
            self._reset()
        self.buf.append(rows)
        end = row0 + rows.shape[2]
        if self.method == "adain":
            if end >= self.height:
                whole = torch.cat(self.buf, dim=2)
                self.sink(adain_color_fix(whole, bicubic_reference(self.lr, self.height, self.width)), 0)
            return
        ready = self.height if end >= self.height else end - self.halo
        if ready > self.done:
            self._guard(self.done, ready)

    def _guard(self, a: int, b: int) -> None:
        held = torch.cat(self.buf, dim=2)
        ca, cb = max(self.buf_r0, a - self.halo), b + self.halo
        sr = held[:, :, ca - self.buf_r0: cb - self.buf_r0]
        cb = ca + sr.shape[2]
        ref = self._reference_rows(ca, cb)
        self.sink(wavelet_color_fix(sr, ref, self.levels)[:, :, a - ca: b - ca], a)
        self.done = b
        keep = max(self.buf_r0, b - self.halo)
        self.buf, self.buf_r0 = [held[:, :, keep - self.buf_r0:]], keep

    def _reference_rows(self, a: int, b: int) -> Tensor:
        """Rows [a, b) of the bicubic x4 reference, from the LR rows they depend on (±2 LR rows, 3 kept)."""
        from sdtool.resize import imresize

        la, lb = max(0, a // 4 - 3), min(self.lr.shape[2], -(-b // 4) + 3)
        up = imresize(self.lr[:, :, la:lb].float(), 4.0)
        return up[:, :, a - 4 * la: b - 4 * la, : self.width].clamp(0, 1)
