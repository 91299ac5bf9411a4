"""A flow whose every step is conditioned on features extracted from a side input."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from sdtool.flows.base import Sequential, Transform


class ConditionalFlow(Transform):
    """forward(x, c) = flow(x, cond_net(c)); the condition network runs once per call.

    Used for p(z_h | z_c) (HF flow) and p(z_d | z_c) (degradation flow).
    """

    def __init__(self, cond_net: nn.Module, flow: Sequential):
        super().__init__()
        self.cond_net = cond_net
        self.flow = flow

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if cond is None:
            raise ValueError("a conditional flow needs a condition")
        return self.flow(x, self.cond_net(cond))

    def inverse(self, z: Tensor, cond: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if cond is None:
            raise ValueError("a conditional flow needs a condition")
        return self.flow.inverse(z, self.cond_net(cond))

    def inverse_repeated(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """inverse(z, cond repeated along the batch): z stacks k batches that share the condition `cond`, whose
        network then runs once (training draws several latents per HR content)."""
        k, rem = divmod(z.shape[0], cond.shape[0])
        if rem or not k:
            raise ValueError(f"a batch of {z.shape[0]} latents does not stack batches of {cond.shape[0]}")
        feats = self.cond_net(cond)
        return self.flow.inverse(z, torch.cat([feats] * k) if k > 1 else feats)
