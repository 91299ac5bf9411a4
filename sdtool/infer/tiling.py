"""Tiled inference for image-to-image maps with a fixed scale factor (x4 SR, /4 downscaling).

Only one tile at a time goes to the device, so device memory depends on the tile size, not on the image
size. Overlapping tiles are blended with a smooth (raised-cosine) window, so there are no seams. The output
leaves in finished row bands: a `sink(rows, row0)` gets each band as soon as no later tile touches it, so
only one band of tiles is held in float32 (the caller keeps the image in its output bit depth); without a
sink the bands are gathered into one float32 image.

Latent noise is one field for the whole image, given by the caller and *cut* per tile: the tile at input
pixels [y0, y1) gets noise rows [y0 // noise_stride, ...). The field is a tensor or anything with
`cut(y0, x0, h, w)` and `full()` (`sdtool.infer.noise.NoiseField` makes only the blocks a tile covers).
With tile origins on multiples of `align` (a multiple of `noise_stride`), the noise a pixel sees does not
depend on the tiling, so tiling does not change what a sample looks like, only (slightly) the tile
borders, which the blend hides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from sdtool.config import DEFAULT_OVERLAP
from sdtool.errors import SdtoolError

TileFn = Callable[[Tensor, Optional[Tensor]], Tensor]
"""fn(x_tile 1×C×th×tw on the device, noise_tile or None on the device) -> y_tile 1×C'×th'×tw'."""
RowSink = Callable[[Tensor, int], None]
"""sink(rows 1×C'×n×W' float32 CPU, first row): finished output rows, top to bottom (from row 0 again after an
out-of-memory restart)."""


class TileOOMError(SdtoolError):
    """The device ran out of memory even with the smallest tile."""


@dataclass(frozen=True)
class TiledOutput:
    """image: 1×C'×H'×W' float32 on the CPU (None when the rows went to a sink); tile: the tile size that
    finally worked (0 = untiled); oom_retries: how many times the tile was halved after an out-of-memory
    error; tiles: tiles run."""

    image: Optional[Tensor]
    tile: int
    oom_retries: int
    tiles: int


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """[start, end) of the tiles along one axis: ceil(length / tile) tiles of near-equal size, each reaching
    about overlap / 2 past its share on either side, so consecutive tiles overlap by at least `overlap`; every
    start and every inner end a multiple of `align`. A tile is at most tile + overlap + 2·align long, and the
    work over the untiled run is about (1 + overlap / tile) per axis, not the 2× that fixed-size tiles cost
    when the length is just over a multiple of the tile."""
    if tile <= 0 or length <= tile + overlap:
        return [(0, length)]
    n = -(-length // tile)
    half = -(-overlap // 2)
    spans = []
    for i in range(n):
        lo, hi = round(i * length / n), round((i + 1) * length / n)
        start = 0 if i == 0 else max(0, (lo - half) // align * align)
        end = length if i == n - 1 else min(length, -(-(hi + half) // align) * align)
        spans.append((start, end))
    return spans


def _ramp(n: int) -> Tensor:
    """Raised-cosine ramp of n strictly positive values rising towards 1 (float32)."""
    i = torch.arange(n, dtype=torch.float32)
    return torch.sin(0.5 * math.pi * (i + 0.5) / n) ** 2


def blend_window(length: int, ramp: int, at_start: bool, at_end: bool) -> Tensor:
    """1-D blending weights (length,) for a tile: ramps up over `ramp` pixels unless the tile touches
    the image start, down over `ramp` pixels unless it touches the image end; 1 in between. All
    weights are > 0, so every output pixel covered by a tile gets a defined value."""
    w = torch.ones(length, dtype=torch.float32)
    r = min(ramp, length // 2)
    if r > 0:
        if not at_start:
            w[:r] = torch.minimum(w[:r], _ramp(r))
        if not at_end:
            w[length - r:] = torch.minimum(w[length - r:], _ramp(r).flip(0))
    return w


def is_oom(exc: BaseException) -> bool:
    """True for a device out-of-memory error (CUDA's own type, or a RuntimeError saying so)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _scaled(n: int, scale: float) -> int:
    """Input length -> output length (ceil for downscaling, matching the model's output size)."""
    return math.ceil(n * scale - 1e-9)


def run_tiled(
    fn: TileFn,
    x: Tensor,
    noise: Any,
    *,
    scale: float,
    noise_stride: int = 1,
    noise_size: Optional[Callable[[int, int], tuple[int, int]]] = None,
    tile: int = 0,
    overlap: int = DEFAULT_OVERLAP["upscale"],
    align: int = 1,
    min_tile: int = 16,
    device: torch.device | str = "cpu",
    on_tile: Optional[Callable[[int, int], None]] = None,
    on_oom: Optional[Callable[[int], None]] = None,
    sink: Optional[RowSink] = None,
) -> TiledOutput:
    """Run `fn` over `x` tile by tile and blend the results.

    x: float32 1×C×h×w on the CPU, [0, 1]. noise: the global latent noise field for the whole image
    (1×Cn×hn×wn tensor on the CPU, or an object with cut()/full(), see the module docstring) or None; a tile
    at input [y0, y0+th) × [x0, x0+tw) gets noise[..., y0//noise_stride : +nh, x0//noise_stride : +nw] with
    (nh, nw) = noise_size(th, tw) (default: ceil(th/noise_stride), ceil(tw/noise_stride)). scale: output
    pixels per input pixel (4 or 0.25). tile: each tile's share of an axis in input pixels (0 = whole image
    at once), rounded down to a multiple of `align`; tiles reach about overlap / 2 further on each side (see
    `tile_spans`); overlap: in input pixels. align: tile origins are multiples of it (must be a multiple of
    noise_stride, and make `align * scale` an integer). On a device out-of-memory error the tile is halved
    (not below `min_tile`) and the image restarted; `on_oom(new_tile)` is told. on_tile(done, total) is called
    after each tile. sink: gets the finished rows (RowSink); else TiledOutput holds the 1×C'×ceil(h·scale)×
    ceil(w·scale) float32 CPU image."""
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"run_tiled expects a 1×C×h×w tensor, got {tuple(x.shape)}")
    if align % noise_stride != 0:
        raise ValueError("align must be a multiple of noise_stride so that noise cuts line up")
    device = torch.device(device)
    h, w = x.shape[2:]
    if tile > 0:
        tile = max(align, (tile // align) * align)
    retries = 0
    while True:
        gather = _Gather() if sink is None else None
        try:
            n_tiles = _run_once(fn, x, noise, scale, noise_stride, noise_size, tile, overlap, align, device,
                                on_tile, sink or gather)  # type: ignore[arg-type]  # one of the two is set
            return TiledOutput(image=gather.image if gather else None, tile=tile, oom_retries=retries, tiles=n_tiles)
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, everything else re-raised
            if not is_oom(exc):
                raise
            current = tile if tile > 0 else max(h, w)
            new_tile = max(align, ((current // 2) // align) * align)
            if current <= min_tile or new_tile >= current:
                raise TileOOMError(
                    f"out of device memory even with {current}-pixel tiles; try {{device}} cpu", ("device",)
                ) from None
            if device.type == "cuda":
                torch.cuda.empty_cache()
            tile, retries = new_tile, retries + 1
            if on_oom is not None:
                on_oom(tile)


def _run_once(
    fn: TileFn,
    x: Tensor,
    noise: Optional[Tensor],
    scale: float,
    noise_stride: int,
    noise_size: Optional[Callable[[int, int], tuple[int, int]]],
    tile: int,
    overlap: int,
    align: int,
    device: torch.device,
    on_tile: Optional[Callable[[int, int], None]],
    sink: RowSink,
) -> int:
    h, w = x.shape[2:]

    def call(xt: Tensor, nt: Optional[Tensor]) -> Tensor:
        xt = xt.to(device)
        nt = nt.to(device) if nt is not None else None
        with torch.no_grad():
            y = fn(xt, nt)
        return y.float().cpu()

    def cut_noise(y0: int, x0: int, th: int, tw: int) -> Optional[Tensor]:
        if noise is None:
            return None
        if noise_size is not None:
            nh, nw = noise_size(th, tw)
        else:
            nh, nw = math.ceil(th / noise_stride), math.ceil(tw / noise_stride)
        ny, nx = y0 // noise_stride, x0 // noise_stride
        if not isinstance(noise, Tensor):  # a field that makes its own cut
            return noise.cut(ny, nx, nh, nw)
        cut = noise[:, :, ny: ny + nh, nx: nx + nw]
        if cut.shape[2] != nh or cut.shape[3] != nw:
            raise ValueError(f"global noise {tuple(noise.shape)} too small for tile at ({y0}, {x0}) size {th}×{tw}")
        return cut

    overlap = min(overlap, tile // 2) if tile > 0 else 0
    ys, xs = tile_spans(h, tile, overlap, align), tile_spans(w, tile, overlap, align)
    if len(ys) == 1 and len(xs) == 1:
        whole = noise if noise is None or isinstance(noise, Tensor) else noise.full()
        sink(call(x, whole), 0)
        if on_tile is not None:
            on_tile(1, 1)
        return 1

    return _blend_tiles(call, cut_noise, x, scale, ys, xs, overlap, on_tile, sink)


class _Gather:
    """The sink of a run without one: the rows gathered into one float32 image."""

    def __init__(self) -> None:
        self.parts: list[Tensor] = []

    def __call__(self, rows: Tensor, row0: int) -> None:
        if row0 == 0:
            self.parts = []
        self.parts.append(rows.clone())  # the tiled runner reuses its band buffer

    @property
    def image(self) -> Tensor:
        return self.parts[0] if len(self.parts) == 1 else torch.cat(self.parts, dim=2)


def _blend_tiles(call: Callable, cut_noise: Callable, x: Tensor, scale: float, ys: list, xs: list, overlap: int,
                 on_tile: Optional[Callable[[int, int], None]], sink: RowSink) -> int:
    """Run the tiles row by row and blend the overlaps with raised-cosine ramps. One float32 band, allocated
    once, holds the output rows of the current row of tiles; rows above the next row of tiles are final:
    normalised by their summed weights in place and handed to the sink (a view: sinks copy what they keep),
    and the overlap rows move to the top of the band."""
    h, w = x.shape[2:]
    out_h, out_w = _scaled(h, scale), _scaled(w, scale)
    ramp = max(1, round(overlap * scale))
    row_ends = [_scaled(y1, scale) for _, y1 in ys]  # the last span ends at h, hence at out_h
    band_rows = max(end - round(y0 * scale) for (y0, _), end in zip(ys, row_ends))
    band: Optional[Tensor] = None  # output rows [band_r0, band_r0 + band_rows)
    weight = torch.zeros(1, 1, band_rows, out_w, dtype=torch.float32)
    band_r0 = 0
    total, done = len(ys) * len(xs), 0
    for iy, ((y0, y1), row_end) in enumerate(zip(ys, row_ends)):
        oy = round(y0 * scale)
        for x0, x1 in xs:
            yt = call(x[:, :, y0:y1, x0:x1], cut_noise(y0, x0, y1 - y0, x1 - x0))
            if band is None:
                band = torch.zeros(1, yt.shape[1], band_rows, out_w, dtype=torch.float32)
            ox = round(x0 * scale)
            th, tw = min(yt.shape[2], row_end - oy), min(yt.shape[3], out_w - ox)
            wy = blend_window(th, ramp, at_start=y0 == 0, at_end=y1 >= h)
            wx = blend_window(tw, ramp, at_start=x0 == 0, at_end=x1 >= w)
            wt = wy[:, None] * wx[None, :]
            r = oy - band_r0
            band[:, :, r: r + th, ox: ox + tw] += yt[:, :, :th, :tw] * wt
            weight[:, :, r: r + th, ox: ox + tw] += wt
            del yt
            done += 1
            if on_tile is not None:
                on_tile(done, total)
        assert band is not None
        final = (out_h if iy == len(ys) - 1 else round(ys[iy + 1][0] * scale)) - band_r0
        used = row_end - band_r0
        sink(band[:, :, :final].div_(weight[:, :, :final].clamp_min(1e-12)), band_r0)
        rest = used - final  # rows the next row of tiles blends into: to the top, the remainder cleared
        band[:, :, :rest] = band[:, :, final:used].clone()
        weight[:, :, :rest] = weight[:, :, final:used].clone()
        band[:, :, rest:].zero_()
        weight[:, :, rest:].zero_()
        band_r0 += final
    return total

