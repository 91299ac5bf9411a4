"""A flow whose every step is conditioned on features extracted from a side input."""

from __future__ import annotations

from typing import Optional

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
