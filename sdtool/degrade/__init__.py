"""Degradations below the models: blur/downsample/noise/JPEG operators, the parametric (classic) sampler,
degradation transfer and contact sheets. Nothing here imports `sdtool.model` (the models import this);
`sdtool.infer.sample_degradation` puts the three samplers behind `sdtool sample-degradation`. Submodules import torch
lazily."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

MODELS = ("sdflow", "pdm", "classic", "redeg", "bicubic", "mix")

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclass
class DegradationSample:
    """One batch of sampled degradations of N HR images (all tensors on the sampler's device, float32).

    lr: N×3×h×w in [0,1], h = ceil(H/4). kernel: N×K×K (per image, sums to 1) or N×K×K×h×w (spatially
    varying) or None (SDFlow). noise: N×3×h×w noise map added at LR, [0,1] units (zero-mean), or None.
    latent: SDFlow degradation latent z_d' N×12×ceil(H/8)×ceil(W/8), ReDeg's Ω N×D, or None. component: LongTensor (N,)
    mixture component (SDFlow) or None. params: per-image dict of sampled parameters (classic; PDM fills
    the kernel width).
    """

    lr: "Tensor"
    kernel: "Optional[Tensor]" = None
    noise: "Optional[Tensor]" = None
    latent: "Optional[Tensor]" = None
    component: "Optional[Tensor]" = None
    params: "list[dict[str, Any]]" = field(default_factory=list)
