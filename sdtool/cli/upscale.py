"""`sdtool upscale` and `sdtool downscale` (placeholder until implemented)."""

from __future__ import annotations

from sdtool.cli.common import not_yet_available


def upscale() -> None:
    """Super-resolve images x4 (not yet available)."""
    not_yet_available("upscale")


def downscale() -> None:
    """Downscale images /4 with realistic degradations (not yet available)."""
    not_yet_available("downscale")
