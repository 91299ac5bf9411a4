"""`sdtool export-sr`: an SR network's weights as a plain state dict for spandrel-based tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdtool.cli.common import run_guarded


def export_sr(
    weights: Annotated[
        Path, typer.Argument(help="An SR network checkpoint (`sdtool train --model sr`, or "
                                  "weights/sr-compact.safetensors).", show_default=False)
    ],
    output: Annotated[
        Path, typer.Argument(metavar="OUT", help="The file to write: .pth or .safetensors.", show_default=False)
    ],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it exists.")] = False,
) -> None:
    """Write an SR network as a plain state dict (.pth or .safetensors) that spandrel, and so chaiNNer, ComfyUI and
    other spandrel-based tools, load as "RealESRGAN Compact" (--arch compact) or "ESRGAN" (--arch rrdb)."""
    from sdtool.model.sr import export_sr as export

    arch = run_guarded(lambda: export(weights, output, overwrite=overwrite))
    typer.echo(f"wrote {output} ({arch})")
