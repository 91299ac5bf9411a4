"""Inference-time folding: weights derived from parameters (a fused 1×1 conv, a scaled conv) computed once per
weight state, and the switch that turns folding off for checks and timings. Used by flows/ and nets/ alike."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn


def inference_cached(module: nn.Module, name: str, build: Callable[[], Any]) -> Any:
    """build(), computed once per weight state: reused while no parameter or buffer of `module` has been
    changed in place (optimiser step, load_state_dict), moved or recast. For inference only (no autograd)."""
    key = tuple((id(t), t._version, t.device, t.dtype) for t in (*module.parameters(), *module.buffers()))
    cached = module.__dict__.get(name)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = build()
    module.__dict__[name] = (key, value)
    return value


_FOLD = [True]


@contextmanager
def folding(enabled: bool) -> Iterator[None]:
    """Turn the inference folding of affine runs (see flows.base.Sequential) on or off inside the block (for checks and
    timings of the plain path)."""
    before, _FOLD[0] = _FOLD[0], enabled
    try:
        yield
    finally:
        _FOLD[0] = before


def folds(module: nn.Module) -> bool:
    """Whether `module` runs its folded inference form now: folding on, eval mode, no autograd."""
    return _FOLD[0] and not module.training and not torch.is_grad_enabled()


def fuses(module: nn.Module) -> bool:
    """Whether a flow sequence runs its affine runs as one composed map in training (flows.base.Sequential):
    folding on (the same switch turns both off for checks of the plain path), training mode."""
    return _FOLD[0] and module.training
