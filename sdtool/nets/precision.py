"""Precision policy of the model: which sub-networks may run in bf16/fp16.

The plain CNNs (RRDB condition networks, the LR content extractor) lose nothing that matters in low precision
and are most of the compute on a GPU; the invertible flow layers (couplings, 1×1 convolutions, actnorm) stay
float32, where a low-precision inverse would drift. A CNN with `compute_dtype` set runs under autocast and
returns float32.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn


class LowPrecisionOK(nn.Module):
    """Base of the CNNs that may run in low precision; `compute_dtype` None means float32."""

    compute_dtype: Optional[torch.dtype] = None

    def in_precision(self, fn: Callable[..., Tensor], *args: Any) -> Tensor:
        if self.compute_dtype is None:
            return fn(*args)
        device_type = args[0].device.type
        with torch.autocast(device_type=device_type, dtype=self.compute_dtype):
            out = fn(*args)
        return out.float()


def set_compute_dtype(model: nn.Module, dtype: Optional[torch.dtype]) -> int:
    """Let every low-precision-safe CNN of `model` run in `dtype` (None: float32 again); returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, LowPrecisionOK):
            module.compute_dtype = dtype
            count += 1
    return count
