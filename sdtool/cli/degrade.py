"""`sdtool sample-degradation` (placeholder until implemented)."""

from __future__ import annotations

from sdtool.cli.common import not_yet_available


def sample_degradation() -> None:
    """Sample realistic degradations of HR images (not yet available)."""
    not_yet_available("sample-degradation")
