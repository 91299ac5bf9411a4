"""One sampling function for every command: x4 SR and /4 downscaling with an SDFlow-like model (and any
x4 network for the benchmark's baselines), on images of any size.

The recipe, written once: pad the input (reflection) to what the model needs, draw the sample's randomness
in a fixed order (the mixture component for downscaling, unless given, then the seed of its noise field),
run the model in overlapping tiles that cut that one noise field (so tiling does not change a sample),
crop, and apply the colour guard as if to the whole image (so it cannot seam at tile borders).

Memory stays bounded on big photos: the noise is made per tile (`infer/noise.py`), the tiled output leaves
in row bands, the colour guard works on bands, and the finished image can be kept in its output bit depth
(`depth`), so a 3840×2160 photo upscales without any whole-image float32 buffer.

Images: float32 1×3×h×w in [0, 1] on the CPU, unpadded. Noise: a `NoiseField` (or a standard-normal tensor)
of the shape `noise_shape` gives for the padded input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import torch
from torch import Tensor

from sdtool.config import (
    AUTO_TILE_PIXELS, AUTO_TILE_PIXELS_CUDA, DEFAULT_OVERLAP, DEFAULT_TILE, DOWNSCALE_ALIGN, MIN_TILE,
)
from sdtool.infer.noise import NoiseField, draw_seed
from sdtool.infer.tiling import run_tiled
from sdtool.padding import pad_to, padded_size
from sdtool.inputs import check_temperature

Op = Literal["upscale", "downscale"]


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
    return pad_to(x, *_PAD[op])


def noise_shape(model: Any, op: Op, height: int, width: int) -> tuple[int, ...]:
    """Shape of the noise field of one sample of a height × width input (unpadded size)."""
    ph, pw = (padded_size(n, *_PAD[op]) for n in (height, width))  # what pad_to gives
    shape_fn = model.upscale_noise_shape if op == "upscale" else model.downscale_noise_shape
    return tuple(shape_fn(1, ph, pw))


def draw(model: Any, op: Op, height: int, width: int, generator: torch.Generator,
         component: Optional[int] = None) -> tuple[Optional[int], NoiseField]:
    """The randomness of one sample, in a fixed order: the mixture component (downscaling, unless given),
    then the seed of its noise field. Drawn even for samples that are skipped, so sample k never depends on
    which other samples exist."""
    comp = None
    if op == "downscale":
        comp = component if component is not None else int(torch.randint(model.n_components, (1,), generator=generator))
    _, c, nh, nw = noise_shape(model, op, height, width)
    return comp, NoiseField(draw_seed(generator), c, nh, nw)


def run(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, noise: Any, op: Op, tiling: Tiling, device: Any,
        on_oom: Optional[Callable[[int], None]] = None, on_tile: Optional[Callable[[int, int], None]] = None,
        size: Optional[tuple[int, int]] = None, sink: Optional[Callable[[Tensor, int], None]] = None,
        ) -> tuple[Optional[Tensor], int]:
    """fn(tile, its noise cut) over the padded input `x` in tiles; returns (the whole output, or None when
    its rows went to `sink`, and the tile used). size: the unpadded input size that automatic tiling looks
    at (default: x's)."""
    device = torch.device(device)
    height, width = size or (x.shape[2], x.shape[3])
    tile, overlap = tiling.resolve(op, height, width, device)
    shape_fn = getattr(fn, "noise_size", None) or (lambda th, tw: (th, tw))
    stride = 1 if op == "upscale" else DOWNSCALE_ALIGN
    # fn gets a noise cut whenever there is noise (always here): its Optional in run_tiled's type does not apply
    res = run_tiled(fn, x, noise, scale=4.0 if op == "upscale" else 0.25, noise_stride=stride,  # type: ignore[arg-type]
                    noise_size=shape_fn,
                    tile=tile, overlap=overlap, align=stride, min_tile=MIN_TILE[op], device=device,
                    on_oom=on_oom, on_tile=on_tile, sink=sink)
    return res.image, res.tile


class _Output:
    """The finished image, filled row band by row band from the cropped (and guarded) output: float32
    1×3×H×W in [0, 1] (depth None) or an H×W×3 numpy array in the output's bit depth (8: uint8, 16: uint16,
    32: float32), rounded as `imageio.quantize` does."""

    def __init__(self, height: int, width: int, depth: Optional[int]):
        import numpy as np

        self.depth = depth
        if depth is None:
            self.image: Any = torch.empty(1, 3, height, width)
        else:
            dtype = {8: np.uint8, 16: np.uint16, 32: np.float32}[depth]
            self.image = np.empty((height, width, 3), dtype=dtype)

    def __call__(self, rows: Tensor, row0: int) -> None:
        from sdtool.imageio import quantize

        n = rows.shape[2]
        if self.depth is None:
            self.image[:, :, row0: row0 + n] = rows.clamp(0, 1)
            return
        for r in range(0, n, 64):  # a few rows at a time: no float copy of a whole band
            part = rows[0, :, r: r + 64].permute(1, 2, 0).numpy()
            self.image[row0 + r: row0 + r + part.shape[0]] = quantize(part, self.depth)


def _cropped(sink: Callable[[Tensor, int], None], height: int, width: int) -> Callable[[Tensor, int], None]:
    """A sink that drops the padding: rows at or below `height`, columns at or right of `width`."""
    def crop(rows: Tensor, row0: int) -> None:
        if row0 < height:
            sink(rows[:, :, : height - row0, :width], row0)
    return crop


def sample(model: Any, op: Op, x: Tensor, noise: Any, *, temperature: float, component: Optional[int] = None,
           latent: Optional[Tensor] = None, tiling: Tiling = Tiling(), color_fix: str = "none",
           detail: float = 1.0, delattice: bool = True, on_oom: Optional[Callable[[int], None]] = None,
           on_tile: Optional[Callable[[int, int], None]] = None, depth: Optional[int] = None) -> tuple[Any, int]:
    """One SR (op "upscale") or downscaled (op "downscale") sample of x (1×3×h×w, [0, 1], CPU, unpadded).

    noise: from `draw` (ignored when `latent`, a Gaussianised degradation latent z_d' of the noise's shape, is
    given for downscaling, e.g. a transferred one). color_fix, detail: the colour guard of SR outputs and its
    detail gain (sdtool.infer.colorfix). delattice: SR without the 4-px lattice of the decoder (sdtool.model.lattice).
    depth: None returns a float32 1×3×4h×4w (or 1×3×ceil(h/4)×ceil(w/4)) CPU tensor in [0, 1]; 8, 16 or 32
    returns an H×W×3 numpy array in that bit depth (what the writer stores), with no float32 copy of the image.
    Returns (the image, the tile used)."""
    from sdtool.infer.colorfix import RowGuard

    check_temperature(temperature)
    h, w = x.shape[2:]
    xp = pad_input(x, op)
    if op == "upscale":
        def fn(xt: Tensor, nt: Tensor) -> Tensor:
            return model.upscale(xt, temperature=temperature, noise=nt, delattice=delattice)
        fn.noise_size = lambda th, tw: tuple(model.upscale_noise_shape(1, th, tw)[2:])  # type: ignore[attr-defined]
    else:
        def fn(xt: Tensor, nt: Tensor) -> Tensor:
            if latent is not None:
                return model.downscale(xt, latent=nt)
            return model.downscale(xt, temperature=temperature, component=component, noise=nt)
        fn.noise_size = lambda th, tw: tuple(model.downscale_noise_shape(1, th, tw)[2:])  # type: ignore[attr-defined]
    oh, ow = (4 * h, 4 * w) if op == "upscale" else (math.ceil(h / 4), math.ceil(w / 4))
    out = _Output(oh, ow, depth)
    sink: Callable[[Tensor, int], None] = out
    if op == "upscale":
        sink = RowGuard(x, oh, ow, color_fix, out, detail=detail)
    _, tile = run(fn, xp, latent if latent is not None else noise, op, tiling, model.device, on_oom, on_tile, (h, w),
                  sink=_cropped(sink, oh, ow))
    return out.image, tile
