"""`sdtool train` (placeholder until implemented)."""

from __future__ import annotations

from sdtool.cli.common import not_yet_available


def train() -> None:
    """Train SDFlow on unpaired LR and HR folders (not yet available)."""
    not_yet_available("train")
