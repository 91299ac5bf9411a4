"""One sampling function for every command: x4 SR and /4 downscaling with an SDFlow-like model (and any
x4 network for the benchmark's baselines), on images of any size.

The recipe, written once: pad the input (reflection) to what the model needs, draw the sample's randomness
in a fixed order (the mixture component for downscaling, unless given, then the whole-image noise), run the
model in overlapping tiles that cut that one noise field (so tiling does not change a sample), crop, and
apply the colour guard once to the whole image (so it cannot seam at tile borders).

Images: float32 1×3×h×w in [0, 1] on the CPU, unpadded. Noise: standard normal on the CPU, of the shape
`noise_shape` gives for the padded input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import torch
from torch import Tensor

from sdtool.tiling import (
    AUTO_TILE_PIXELS, AUTO_TILE_PIXELS_CUDA, DEFAULT_OVERLAP, DEFAULT_TILE, DOWNSCALE_ALIGN, MIN_TILE, pad_reflect,
    run_tiled,
)

Op = Literal["upscale", "downscale"]


def check_temperature(temperature: float) -> None:
    """OptionError unless the sampling temperature is a finite number ≥ 0."""
    from sdtool.errors import OptionError

    if not math.isfinite(temperature):
        raise OptionError("temperature", f"must be a finite number, got {temperature}")
    if temperature < 0:
        raise OptionError("temperature", f"must be >= 0, got {temperature}")


@dataclass(frozen=True)
class Tiling:
    """tile: side in input pixels (None: automatic, tiles only inputs over AUTO_TILE_PIXELS; 0: off);
    overlap: input pixels (None: DEFAULT_OVERLAP; rounded up to the 8-pixel noise grid for downscaling)."""

    tile: Optional[int] = None
    overlap: Optional[int] = None

    def resolve(self, op: Op, height: int, width: int, device: torch.device) -> tuple[int, int]:
        """(tile, overlap) for an input of height × width on `device`."""
        if self.tile is None:
            limit = AUTO_TILE_PIXELS_CUDA if device.type == "cuda" else AUTO_TILE_PIXELS
            tile = DEFAULT_TILE[op] if height * width > limit else 0
        else:
            tile = self.tile
        overlap = DEFAULT_OVERLAP[op] if self.overlap is None else self.overlap
        if op == "downscale":
            overlap = math.ceil(overlap / DOWNSCALE_ALIGN) * DOWNSCALE_ALIGN
        return tile, overlap


_PAD = {"upscale": (1, 2), "downscale": (DOWNSCALE_ALIGN, DOWNSCALE_ALIGN)}  # (multiple, minimum) per op


def pad_input(x: Tensor, op: Op) -> Tensor:
    """Reflection-pad bottom/right to what the model needs: 2 px for SR, the 8-px noise grid for downscaling."""
    return pad_reflect(x, *_PAD[op])


def noise_shape(model: Any, op: Op, height: int, width: int) -> tuple[int, ...]:
    """Shape of the whole-image noise of one sample of a height × width input (unpadded size)."""
    mult, minimum = _PAD[op]
    ph, pw = (max(minimum, math.ceil(n / mult) * mult) for n in (height, width))  # what pad_input gives
    shape_fn = model.upscale_noise_shape if op == "upscale" else model.downscale_noise_shape
    return tuple(shape_fn(1, ph, pw))


def draw(model: Any, op: Op, height: int, width: int, generator: torch.Generator,
         component: Optional[int] = None) -> tuple[Optional[int], Tensor]:
    """The randomness of one sample, in a fixed order: the mixture component (downscaling, unless given),
    then the whole-image noise. Drawn even for samples that are skipped, so sample k never depends on
    which other samples exist."""
    comp = None
    if op == "downscale":
        comp = component if component is not None else int(torch.randint(model.n_components, (1,), generator=generator))
    return comp, torch.randn(noise_shape(model, op, height, width), generator=generator)


def run(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, noise: Tensor, op: Op, tiling: Tiling, device: Any,
        on_oom: Optional[Callable[[int], None]] = None, on_tile: Optional[Callable[[int, int], None]] = None,
        size: Optional[tuple[int, int]] = None) -> tuple[Tensor, int]:
    """fn(tile, its noise cut) over the padded input `x` in tiles; returns (the whole output, the tile used).
    size: the unpadded input size that automatic tiling looks at (default: x's)."""
    device = torch.device(device)
    tile, overlap = tiling.resolve(op, *(size or x.shape[2:]), device)
    shape_fn = getattr(fn, "noise_size", None) or (lambda th, tw: (th, tw))
    stride = 1 if op == "upscale" else DOWNSCALE_ALIGN
    res = run_tiled(fn, x, noise, scale=4.0 if op == "upscale" else 0.25, noise_stride=stride, noise_size=shape_fn,
                    tile=tile, overlap=overlap, align=stride, min_tile=MIN_TILE[op], device=device,
                    autocast_dtype=None, on_oom=on_oom, on_tile=on_tile)
    return res.image, res.tile


def sample(model: Any, op: Op, x: Tensor, noise: Tensor, *, temperature: float, component: Optional[int] = None,
           latent: Optional[Tensor] = None, tiling: Tiling = Tiling(), color_fix: str = "none",
           on_oom: Optional[Callable[[int], None]] = None, on_tile: Optional[Callable[[int, int], None]] = None,
           ) -> tuple[Tensor, int]:
    """One SR (op "upscale") or downscaled (op "downscale") sample of x (1×3×h×w, [0, 1], CPU, unpadded).

    noise: from `draw` (ignored when `latent`, a Gaussianised degradation latent z_d' of the noise's shape, is
    given for downscaling, e.g. a transferred one). color_fix: the colour guard of SR outputs (sdtool.colorfix).
    Returns (1×3×4h×4w or 1×3×ceil(h/4)×ceil(w/4) float32 CPU in [0, 1], the tile used)."""
    from sdtool.colorfix import apply_color_fix

    h, w = x.shape[2:]
    xp = pad_input(x, op)
    if op == "upscale":
        def fn(xt: Tensor, nt: Tensor) -> Tensor:
            return model.upscale(xt, temperature=temperature, noise=nt, color_fix="none")
        fn.noise_size = lambda th, tw: tuple(model.upscale_noise_shape(1, th, tw)[2:])  # type: ignore[attr-defined]
    else:
        def fn(xt: Tensor, nt: Tensor) -> Tensor:
            if latent is not None:
                return model.downscale(xt, latent=nt)
            return model.downscale(xt, temperature=temperature, component=component, noise=nt)
        fn.noise_size = lambda th, tw: tuple(model.downscale_noise_shape(1, th, tw)[2:])  # type: ignore[attr-defined]
    out, tile = run(fn, xp, latent if latent is not None else noise, op, tiling, model.device, on_oom, on_tile, (h, w))
    oh, ow = (4 * h, 4 * w) if op == "upscale" else (math.ceil(h / 4), math.ceil(w / 4))
    y = out[:, :, :oh, :ow].clamp_(0, 1)
    if op == "upscale":
        y = apply_color_fix(y, x, color_fix)
    return y, tile
