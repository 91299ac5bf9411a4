"""Sample diversity of a stochastic SR model."""

from __future__ import annotations

import numpy as np


def diversity(samples: np.ndarray) -> float:
    """Mean per-pixel standard deviation across samples.

    samples: S×H×W×C (or S×H×W) array, any scale; the result is on the same scale (sdtool reports it on
    the 0..255 scale). Population std (ddof 0) over the sample axis, then the mean over pixels and channels.
    0 for a deterministic method. Needs S >= 2.
    """
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim < 3 or arr.shape[0] < 2:
        raise ValueError(f"diversity needs at least 2 samples stacked on axis 0, got shape {arr.shape}")
    return float(np.mean(np.std(arr, axis=0)))
