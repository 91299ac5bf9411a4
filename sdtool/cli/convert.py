"""`sdtool convert-official`: the authors' four .pth checkpoints → one sdtool safetensors file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sdtool.cli.common import run_guarded


def convert_official(
    source: Annotated[Path, typer.Argument(help="Folder with lrencoder.pth, hrnet.pth, contentnet.pth, degnet.pth.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .safetensors file to write.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Convert the authors' SDFlow checkpoints to one safetensors file (loaded safely, every key checked)."""
    from sdtool.convert import convert_official as convert

    cfg = run_guarded(lambda: convert(source, output, overwrite=overwrite))
    typer.echo(f"wrote {output} (SDFlow, {cfg.hr_steps[0]}+{cfg.hr_steps[1]} HR steps, {cfg.n_gaussian} components)")
