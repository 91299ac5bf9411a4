"""sdtool: real-world x4 super-resolution and realistic downscaling with SDFlow.

Importing the package is light: torch and the model load only when `load_model` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load_model", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from sdtool.model.sdflow import SDFlow


def load_model(path: Any = None, device: str = "auto") -> "SDFlow":
    """Load an SDFlow checkpoint (default: the shipped weights) onto `device` ("cpu", "cuda[:i]", "auto")."""
    from sdtool.api import load_model as _load

    return _load(path, device=device)
