"""Image-quality metrics for benchmarks and training.

Light to import: PSNR/SSIM/NIQE/diversity need only numpy (scipy for NIQE); LPIPS (torch) lives in
`sdtool.metrics.lpips` and is imported on demand through `get_lpips` / `lpips_distance`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdtool.metrics.color import color_error
from sdtool.metrics.diversity import diversity
from sdtool.metrics.niqe import niqe
from sdtool.metrics.psnr_ssim import psnr, rgb_to_y, ssim

if TYPE_CHECKING:  # pragma: no cover
    from sdtool.metrics.lpips import LPIPS

__all__ = ["color_error", "psnr", "ssim", "rgb_to_y", "niqe", "diversity", "get_lpips", "lpips_distance", "LPIPS"]


def __getattr__(name: str) -> Any:
    # Import torch-based LPIPS lazily so that `import sdtool.metrics` stays cheap.
    if name in ("get_lpips", "lpips_distance", "LPIPS"):
        from sdtool.metrics import lpips as _lp

        return getattr(_lp, name)
    raise AttributeError(name)
