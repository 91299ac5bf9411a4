"""`sdtool benchmark` (placeholder until implemented)."""

from __future__ import annotations

from sdtool.cli.common import not_yet_available


def benchmark() -> None:
    """Measure SR and downscaling quality on paired datasets (not yet available)."""
    not_yet_available("benchmark")
