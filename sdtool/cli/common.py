"""Options shared by several commands, and the one place that turns errors into exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional, TypeVar

import typer

from sdtool.config import DEFAULT_DETAIL
from sdtool.errors import CheckpointError, SdtoolError, UsageError

T = TypeVar("T")

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2

Weights = Annotated[
    Optional[Path],
    typer.Option("--weights", "-w", help="SDFlow checkpoint (.safetensors). Default: the shipped weights."),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed; the same seed gives the same samples.")]
Temperature = Annotated[
    float,
    typer.Option("--temperature", "-t", help="Sampling temperature, 0 to 4: 0 gives the mean sample, 1 the learned "
                 "spread."),
]
Delattice = Annotated[
    bool,
    typer.Option("--delattice/--keep-lattice", help="Take the 4-px lattice that the flow's squeezes leave out of SR "
                 "samples (default); --keep-lattice writes the flow's own sample."),
]
Detail = Annotated[
    Optional[float],
    typer.Option("--detail", help="Strength of the model's detail above the wavelet guard's low band (0-2): below 1 "
                 f"trades texture for fidelity (PSNR), above 1 the reverse. Default: {DEFAULT_DETAIL:g} with "
                 "--color-fix wavelet."),
]
Samples = Annotated[int, typer.Option("--samples", "-n", help="Samples to draw per input image (1 to 1000).")]
Tile = Annotated[
    Optional[int],
    typer.Option("--tile", min=0, help="Tile size in input pixels (each tile's share; tiles reach half the overlap "
                                       "further "
                 "on each side); 0 turns tiling off. Default: automatic."),
]
SkipExisting = Annotated[
    bool, typer.Option("--skip-existing", hidden=True, help="Kept for old scripts: skipping existing outputs is the "
                                                            "default.")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that already exist (default: skip them, "
                                                             "so a rerun resumes).")]
MaxPixels = Annotated[
    Optional[int],
    typer.Option("--max-pixels", min=1, help="Refuse inputs with more pixels (read from the header before decoding). "
                 "Default: 16000000 for upscale, 100000000 for downscaling."),
]
OutputArg = Annotated[
    Optional[str],
    typer.Argument(
        help="Output file or folder (mirrors IN's tree; a trailing / always means a folder). Optional for a single "
        "file: then written beside it as NAME_x4_tT.EXT / NAME_x0.25_tT.EXT. Existing outputs are skipped.",
        show_default=False, metavar="OUT",
    ),
]

Suffix = Annotated[
    Optional[str],
    typer.Option("--suffix", metavar="TEXT", show_default=False,
                 help="Add _TEXT to output names made from input names (a folder OUT, or no OUT, where it replaces "
                 "_x4_tT), as Real-ESRGAN's --suffix."),
]
Ext = Annotated[
    Optional[str],
    typer.Option("--ext", metavar="EXT", show_default=False,
                 help="Format of outputs named after their inputs: png, jpg, webp, tif or bmp. Default: the input's."),
]
Quality = Annotated[
    Optional[int],
    typer.Option("--quality", min=1, max=100, help="JPEG / WebP quality (1-100). Default: 95.", metavar="Q",
                 show_default=False),
]


def error_line(message: str) -> None:
    """Print one error line to stderr (no traceback)."""
    typer.echo(f"error: {message}", err=True)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def failure_text(outcome) -> str:
    """Why a file failed, with any options the library named shown as flags."""
    exc = getattr(outcome, "exception", None)
    return exc.render(_flag) if exc is not None else str(outcome.error)


def run_guarded(fn: Callable[[], T]) -> T:
    """Call `fn`; turn library errors into one line and a non-zero exit code."""
    try:
        return fn()
    except (UsageError, CheckpointError) as exc:  # bad options or bad --weights: nothing was done
        error_line(exc.render(_flag))  # the library names parameters; the user typed flags
        raise typer.Exit(EXIT_USAGE) from None
    except SdtoolError as exc:
        error_line(exc.render(_flag))
        raise typer.Exit(EXIT_SOME_FAILED) from None
    except KeyboardInterrupt:
        error_line("interrupted")
        raise typer.Exit(130) from None


Component = Annotated[
    Optional[int],
    typer.Option("--component", "-k", min=0, help="Mixture component of the degradation prior. Default: random per "
                                                  "image."),
]
