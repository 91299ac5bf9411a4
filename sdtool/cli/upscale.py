"""`sdtool upscale` and `sdtool downscale`: x4 super-resolution / realistic /4 downscaling of files and folders.

The work is `sdtool.infer.pipeline.process_images`; this module parses options, shows progress (live bars when
stderr is a terminal, plain lines with an ETA otherwise), prints one line per failed file and a summary, and
sets the exit code (0 all done or skipped, 1 some files failed, 2 bad usage or bad weights, 130 interrupted).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

from sdtool.config import DEFAULT_DOWN_TEMPERATURE, DEFAULT_OVERLAP, DEFAULT_SR_TEMPERATURE, DEFAULT_TILE

from sdtool.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    Component,
    Delattice,
    Detail,
    Device,
    Ext,
    MaxPixels,
    OutputArg,
    Overwrite,
    Quality,
    Samples,
    Seed,
    SkipExisting,
    Suffix,
    Temperature,
    Tile,
    Weights,
    run_guarded,
)
from sdtool.cli.progress import BatchReporter

if TYPE_CHECKING:  # pragma: no cover
    from sdtool.infer.batch import ProcessResult, ProgressCallback

InputArg = Annotated[
    Path, typer.Argument(help="An image file, or a folder (searched recursively; non-images are skipped).",
                         show_default=False, metavar="IN")
]
UpscaleWeights = Annotated[
    Optional[Path],
    typer.Option("--weights", "-w", help="SDFlow checkpoint, an SR network from `sdtool train --model sr`, or any x4 "
                                         "model "
                 "spandrel reads (.pth / .safetensors: ESRGAN, Real-ESRGAN, SwinIR, ...). Default: --model's weights."),
]
ModelName = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="A shipped upscaler by name: sdflow (default; samples, temperature) or "
                                       "sr-compact "
                 "(a fast deterministic network trained on SDFlow's degradations)."),
]
UpscaleTemperature = Annotated[
    Optional[float],
    typer.Option("--temperature", "-t", help="Sampling temperature (a finite number >= 0; default "
                                             f"{DEFAULT_SR_TEMPERATURE:g}); "
                 "0 gives the mean sample. Refused for deterministic models."),
]
Fp32 = Annotated[bool, typer.Option("--fp32", help="On CUDA, run the whole model in float32 (no bf16/fp16 autocast).")]

_NAMING = (
    "Sample k of a/b.png is written as OUT/a/b.png for one sample, OUT/a/b_s00.png, OUT/a/b_s01.png, ... for "
    "--samples > 1. Multi-GPU: torchrun --nproc-per-node G -m sdtool ... splits the files between processes."
)


def _summary(task: str, result: "ProcessResult") -> str:
    rank = f"[rank {result.rank}/{result.world_size}] " if result.world_size > 1 else ""
    return (
        f"{rank}{task}: {len(result.done)} done, {len(result.skipped)} skipped, {len(result.failed)} failed "
        f"in {result.seconds:.1f} s (seed {result.seed}, device {result.device})"
    )


def _run(task: str, run: Callable[["ProgressCallback"], "ProcessResult"]) -> None:
    """Run `run(progress)` with live progress, print the summary and exit with the run's code."""

    def go() -> "ProcessResult":
        with BatchReporter(task) as reporter:
            return run(reporter)

    result = run_guarded(go)
    typer.echo(_summary(task, result))
    raise typer.Exit(EXIT_SOME_FAILED if result.failed else EXIT_OK)


def _named_weights(model: Optional[str], weights: Optional[Path]) -> Optional[Path]:
    """The weights file of --model NAME, or --weights (not both)."""
    from sdtool.api import shipped_upscaler
    from sdtool.errors import OptionError

    if model is None:
        return weights
    if weights is not None:
        raise OptionError("model", "and {weights} both name the weights; give one", ("weights",))
    return shipped_upscaler(model)


def upscale(
    input_path: InputArg,
    output: OutputArg = None,
    samples: Samples = 1,
    temperature: UpscaleTemperature = None,
    seed: Seed = None,
    model: ModelName = None,
    weights: UpscaleWeights = None,
    device: Device = "auto",
    tile: Tile = None,
    tile_overlap: Annotated[
        int, typer.Option("--tile-overlap", min=0, help="Overlap between tiles, in input pixels.")
    ] = DEFAULT_OVERLAP["upscale"],
    skip_existing: SkipExisting = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = None,
    color_fix: Annotated[
        Optional[str], typer.Option("--color-fix", help="Colour guard: wavelet (keep the input's low frequencies), "
                                                        "adain "
                          "(match channel mean/std) or none (the raw sample). Default: wavelet for SDFlow and SR "
                          "networks "
                          "(--detail 1 for these), none for spandrel models.")
    ] = None,
    detail: Detail = None,
    delattice: Delattice = True,
    outscale: Annotated[
        Optional[float],
        typer.Option("--outscale", metavar="S", show_default=False,
                     help="Output scale: the x4 result resized to S × the input (e.g. 2 or 3.5; area when shrinking, "
                     "Lanczos when enlarging), as Real-ESRGAN's --outscale. Default: 4."),
    ] = None,
    suffix: Suffix = None,
    ext: Ext = None,
    quality: Quality = None,
    fp32: Fp32 = False,
) -> None:
    """Super-resolve images x4 (PNG, JPEG, WebP, TIFF, BMP; gray, 16-bit and alpha are kept).

    Large inputs (over 512x512 px on CPU, 1024x1024 on CUDA) are processed in overlapping tiles
    (default {tile} px); --tile sets the tile size in input pixels, --tile 0 turns tiling off.
    Existing outputs are skipped (a rerun resumes; --overwrite replaces them); several processes
    can share one output folder. --model sr-compact, an SR network or a spandrel model (--weights) gives one
    output per input: --samples > 1 and --temperature are refused.
    """
    from sdtool.infer.pipeline import process_images

    path = run_guarded(lambda: _named_weights(model, weights))
    _run("upscale", lambda progress: process_images(
        input_path, output, task="upscale", samples=samples, temperature=temperature, seed=seed, weights=path,
        device=device, tile=tile, tile_overlap=tile_overlap, overwrite=overwrite, max_pixels=max_pixels,
        color_fix=color_fix, detail=detail, delattice=delattice, outscale=outscale, suffix=suffix, ext=ext,
        quality=quality, mixed_precision=False if fp32 else None, progress=progress,
    ))


def downscale(
    input_path: InputArg,
    output: OutputArg = None,
    samples: Samples = 1,
    temperature: Temperature = DEFAULT_DOWN_TEMPERATURE,
    component: Component = None,
    seed: Seed = None,
    weights: Weights = None,
    device: Device = "auto",
    tile: Tile = None,
    tile_overlap: Annotated[
        int, typer.Option("--tile-overlap", min=0, help="Overlap between tiles, in input pixels (rounded up to 8).")
    ] = DEFAULT_OVERLAP["downscale"],
    skip_existing: SkipExisting = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = None,
    suffix: Suffix = None,
    ext: Ext = None,
    quality: Quality = None,
    fp32: Fp32 = False,
) -> None:
    """Downscale images /4 with realistic, sampled degradations (PNG, JPEG, WebP, TIFF, BMP).

    Large inputs (over 512x512 px on CPU, 1024x1024 on CUDA) are processed in overlapping tiles
    (default {tile} px, origins on an 8-pixel grid); --tile 0 turns tiling off.
    """
    from sdtool.infer.pipeline import process_images

    _run("downscale", lambda progress: process_images(
        input_path, output, task="downscale", samples=samples, temperature=temperature, component=component,
        seed=seed, weights=weights, device=device, tile=tile, tile_overlap=tile_overlap, overwrite=overwrite,
        max_pixels=max_pixels, suffix=suffix, ext=ext, quality=quality, mixed_precision=False if fp32 else None,
        progress=progress,
    ))


upscale.__doc__ = f"{(upscale.__doc__ or '').format(tile=DEFAULT_TILE['upscale'])}\n    {_NAMING}\n"
downscale.__doc__ = f"{(downscale.__doc__ or '').format(tile=DEFAULT_TILE['downscale'])}\n    {_NAMING}\n"
