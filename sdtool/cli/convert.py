"""`sdtool convert-official` (placeholder until implemented)."""

from __future__ import annotations

from sdtool.cli.common import not_yet_available


def convert_official() -> None:
    """Convert the authors' SDFlow checkpoints to one safetensors file (not yet available)."""
    not_yet_available("convert-official")
