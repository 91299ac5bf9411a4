"""The one interface of every invertible piece, and their composition (in the spirit of nflows)."""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.nets.folding import folds, fuses, inference_cached

Affine = tuple[Tensor, Tensor, Tensor]
"""(A C×C, b (C,), log|det| per pixel): the map z = A x + b at every pixel."""


class Transform(nn.Module):
    """An invertible map with a tractable Jacobian.

    forward(x, cond) -> (z, logdet) maps data to latent; inverse(z, cond) -> (x, logdet) maps back.
    logdet has shape (B,) and is log|det dz/dx| for forward, log|det dx/dz| for inverse, so the two add
    up to zero. Pieces that ignore the condition still accept it, so a sequence can pass it on.
    """

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def affine(self, inverse: bool, dtype: torch.dtype = torch.float64) -> Optional[Affine]:
        """For a piece that is the same per-pixel affine channel map everywhere (ActNorm, 1×1 conv): that map
        in the direction asked for, in `dtype`, differentiable in the parameters when autograd is on; None for
        every other piece. Lets inference and training run a run of them as one map."""
        return None


def zero_logdet(x: Tensor) -> Tensor:
    return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)


def _compose(first: Affine, then: Affine) -> Affine:
    a1, b1, l1 = first
    a2, b2, l2 = then
    return a2 @ a1, a2 @ b1 + b2, l1 + l2


def _chain(maps: list[Affine]) -> Affine:
    out = maps[0]
    for m in maps[1:]:
        out = _compose(out, m)
    return out


class Sequential(Transform):
    """Composition: forward runs the pieces in order, inverse in reverse order; log-dets add.

    At inference (eval mode, no autograd) nested sequences are flattened and every run of adjacent affine
    pieces (ActNorm, 1×1 conv, and the transitions built of them) becomes one 1×1 convolution, its weight
    and inverse computed once per weight state: the same map (to float rounding) in a fraction of the passes."""

    def __init__(self, transforms: Iterable[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if folds(self):
            return self._run_plan(x, cond, inverse=False)
        if fuses(self) and self._ready():
            return self._run_fused(x, cond, inverse=False)
        total = zero_logdet(x)
        for t in self.transforms:
            x, ld = t(x, cond)
            total = total + ld
        return x, total

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if folds(self):
            return self._run_plan(z, cond, inverse=True)
        if fuses(self) and self._ready():
            return self._run_fused(z, cond, inverse=True)
        total = zero_logdet(z)
        for t in reversed(self.transforms):
            z, ld = t.inverse(z, cond)
            total = total + ld
        return z, total

    def _leaves(self) -> list[Transform]:
        out: list[Transform] = []
        for t in self.transforms:
            out += t._leaves() if isinstance(t, Sequential) else [t]
        return out

    def plan(self, inverse: bool) -> list:
        """The pieces in the order they run, with runs of affine pieces folded into (A, b, logdet/px) triples."""
        def build() -> list:  # float64: composing and inverting loses nothing visible
            out: list = []
            for step in self._ordered_runs(inverse):
                if isinstance(step, list):
                    a, b, ld = _chain([t.affine(inverse) for t in step])
                    out.append((a[:, :, None, None].float().contiguous(), b.float(), ld))
                else:
                    out.append(step)
            return out
        return inference_cached(self, f"_plan_{int(inverse)}", build)

    def _ready(self) -> bool:
        """Whether every ActNorm inside has had its data-dependent start (the plain path does that first),
        read once per state of those flags."""
        flags = [b for name, b in self.named_buffers() if name.endswith("initialized")]
        key = tuple((id(b), b._version) for b in flags)
        cached = self.__dict__.get("_ready_cache")
        if cached is None or cached[0] != key:
            cached = (key, all(bool(b) for b in flags))
            self.__dict__["_ready_cache"] = cached
        return cached[1]

    def _ordered_runs(self, inverse: bool) -> list:
        """`_runs` in the order they run in the direction asked for, each run's pieces in that order too."""
        runs = self._runs()
        if not inverse:
            return runs
        return [r[::-1] if isinstance(r, list) else r for r in reversed(runs)]

    def _runs(self) -> list:
        """The leaves in forward order, each run of adjacent affine pieces as one list (fixed structure:
        computed once)."""
        runs = self.__dict__.get("_runs_cache")
        if runs is None:
            runs = []
            for t in self._leaves():
                affine = type(t).affine is not Transform.affine
                if affine and runs and isinstance(runs[-1], list):
                    runs[-1].append(t)
                else:
                    runs.append([t] if affine else t)
            self.__dict__["_runs_cache"] = runs
        return runs

    def _run_fused(self, x: Tensor, cond: Optional[Tensor], inverse: bool) -> tuple[Tensor, Tensor]:
        """The plain path with each run of affine pieces composed (differentiably, in the parameters' dtype) and
        applied as one per-pixel matrix product: one pass over the activations, and its backward one, instead
        of two to three per piece. Same map to float rounding; used in training (see `fuses`)."""
        total = zero_logdet(x)
        for step in self._ordered_runs(inverse):
            if not isinstance(step, list):
                x, ld = step.inverse(x, cond) if inverse else step(x, cond)
                total = total + ld
                continue
            a, b, ld = _chain([t.affine(inverse, x.dtype) for t in step])
            total = total + ld * (x.shape[2] * x.shape[3])
            # x as B×H×W×C (a view of a channels-last tensor) times Aᵀ: one GEMM, no layout change.
            x = F.linear(x.permute(0, 2, 3, 1), a, b).permute(0, 3, 1, 2)
        return x, total

    def _run_plan(self, x: Tensor, cond: Optional[Tensor], inverse: bool) -> tuple[Tensor, Tensor]:
        total = zero_logdet(x)
        for step in self.plan(inverse):
            if isinstance(step, tuple):
                weight, bias, ld = step
                total = total + ld * (x.shape[2] * x.shape[3])
                x = F.conv2d(x, weight, bias)
            else:
                x, ld = step.inverse(x, cond) if inverse else step(x, cond)
                total = total + ld
        return x, total
