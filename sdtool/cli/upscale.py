"""`sdtool upscale` and `sdtool downscale`: x4 super-resolution / realistic /4 downscaling of files and folders.

The work is `sdtool.pipeline.process_images`; this module parses options, shows progress (only when stderr is
a terminal), prints one line per failed file and a summary, and sets the exit code
(0 all done or skipped, 1 some files failed, 2 bad usage or bad weights, 130 interrupted).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from sdtool.config import DEFAULT_DOWN_TEMPERATURE, DEFAULT_SR_TEMPERATURE

from sdtool.cli.common import (
    failure_text,
    EXIT_OK,
    EXIT_SOME_FAILED,
    Component,
    Delattice,
    Detail,
    Device,
    MaxPixels,
    OutputArg,
    Overwrite,
    Samples,
    Seed,
    SkipExisting,
    Temperature,
    Tile,
    Weights,
    run_guarded,
)

if TYPE_CHECKING:  # pragma: no cover
    from sdtool.infer.batch import ProcessResult, ProgressEvent

InputArg = Annotated[
    Path, typer.Argument(help="An image file, or a folder (searched recursively; non-images are skipped).", show_default=False, metavar="IN")
]
Fp32 = Annotated[bool, typer.Option("--fp32", help="On CUDA, run the whole model in float32 (no bf16/fp16 autocast).")]

_NAMING = (
    "Sample k of a/b.png is written as OUT/a/b.png for one sample, OUT/a/b_s00.png, OUT/a/b_s01.png, ... for "
    "--samples > 1. Multi-GPU: torchrun --nproc-per-node G -m sdtool ... splits the files between processes."
)


class _Reporter:
    """Turns pipeline progress events into a rich progress display (terminal only) and error lines."""

    def __init__(self, task: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.live = sys.stderr.isatty()
        self.progress: Any = None
        self.overall: Any = None
        self.current: Any = None
        self.task = task

    def __enter__(self) -> "_Reporter":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=self.console, transient=True,
            )
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def line(self, text: str) -> None:
        # Console.print goes above the live bars when they are shown; plain stderr otherwise.
        self.console.print(text, markup=False, soft_wrap=True)

    def __call__(self, event: "ProgressEvent") -> None:
        if event.kind == "notice":
            self.line(f"notice: {event.message}")
        elif event.kind == "start" and self.progress is not None:
            self.overall = self.progress.add_task(f"{self.task} (files)", total=max(event.total, 1))
        elif event.kind == "file_start" and self.progress is not None:
            if self.current is not None:
                self.progress.remove_task(self.current)
            name = event.path.name if event.path is not None else ""
            self.current = self.progress.add_task(f"  {name}", total=max(event.steps, 1))
        elif event.kind == "step" and self.progress is not None and self.current is not None:
            self.progress.update(self.current, completed=event.step)
        elif event.kind == "file_end":
            outcome = event.outcome
            if outcome is not None and outcome.status == "failed":
                self.line(f"error: {failure_text(outcome)}")
            if outcome is not None:
                for note in outcome.notes:
                    self.line(f"notice: {outcome.source}: {note}")
            if self.progress is not None and self.overall is not None:
                self.progress.advance(self.overall)


def _summary(task: str, result: "ProcessResult") -> str:
    rank = f"[rank {result.rank}/{result.world_size}] " if result.world_size > 1 else ""
    return (
        f"{rank}{task}: {len(result.done)} done, {len(result.skipped)} skipped, {len(result.failed)} failed "
        f"in {result.seconds:.1f} s (seed {result.seed}, device {result.device})"
    )


def _run(task: str, input_path: Path, output: Optional[str], **kwargs: Any) -> None:
    from sdtool.pipeline import process_images

    def go() -> "ProcessResult":
        with _Reporter(task) as reporter:
            return process_images(input_path, output, task=task, progress=reporter, **kwargs)  # type: ignore[arg-type]

    result = run_guarded(go)
    typer.echo(_summary(task, result))
    raise typer.Exit(EXIT_SOME_FAILED if result.failed else EXIT_OK)


def upscale(
    input_path: InputArg,
    output: OutputArg = None,
    samples: Samples = 1,
    temperature: Temperature = DEFAULT_SR_TEMPERATURE,
    seed: Seed = None,
    weights: Weights = None,
    device: Device = "auto",
    tile: Tile = None,
    tile_overlap: Annotated[int, typer.Option("--tile-overlap", min=0, help="Overlap between tiles, in input pixels.")] = 16,
    skip_existing: SkipExisting = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = None,
    color_fix: Annotated[
        str, typer.Option("--color-fix", help="Colour guard: wavelet (keep the input's low frequencies), adain "
                          "(match channel mean/std) or none (the raw sample).")
    ] = "wavelet",
    detail: Detail = None,
    delattice: Delattice = True,
    fp32: Fp32 = False,
) -> None:
    """Super-resolve images x4 (PNG, JPEG, WebP, TIFF, BMP; gray, 16-bit and alpha are kept).

    Large inputs (over 512x512 px on CPU, 1024x1024 on CUDA) are processed in overlapping tiles
    (default 192 px); --tile sets the tile size in input pixels, --tile 0 turns tiling off.
    Existing outputs are skipped (a rerun resumes; --overwrite replaces them); several processes
    can share one output folder.
    """
    _run(
        "upscale", input_path, output, samples=samples, temperature=temperature, seed=seed, weights=weights,
        device=device, tile=tile, tile_overlap=tile_overlap, overwrite=overwrite, max_pixels=max_pixels,
        color_fix=color_fix, detail=detail, delattice=delattice, mixed_precision=False if fp32 else None,
    )


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
    ] = 32,
    skip_existing: SkipExisting = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = None,
    fp32: Fp32 = False,
) -> None:
    """Downscale images /4 with realistic, sampled degradations (PNG, JPEG, WebP, TIFF, BMP).

    Large inputs (over 512x512 px on CPU, 1024x1024 on CUDA) are processed in overlapping tiles
    (default 512 px, origins on an 8-pixel grid); --tile 0 turns tiling off.
    """
    _run(
        "downscale", input_path, output, samples=samples, temperature=temperature, component=component, seed=seed,
        weights=weights, device=device, tile=tile, tile_overlap=tile_overlap, overwrite=overwrite,
        max_pixels=max_pixels, mixed_precision=False if fp32 else None,
    )


upscale.__doc__ = f"{upscale.__doc__}\n    {_NAMING}\n"
downscale.__doc__ = f"{downscale.__doc__}\n    {_NAMING}\n"
