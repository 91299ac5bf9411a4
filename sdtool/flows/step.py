"""Glow flow step (ActNorm → 1×1 conv → [injector] → [coupling]) and transition steps."""

from __future__ import annotations

from sdtool.flows.actnorm import ActNorm
from sdtool.flows.base import Sequential
from sdtool.flows.conv1x1 import InvConv1x1
from sdtool.flows.coupling import AffineCoupling, AffineInjector


class FlowStep(Sequential):
    """One step on `channels` channels. With cond_channels > 0 an affine injector conditions every step;
    `coupling=False` drops the coupling (the authors' last conditional step has none)."""

    def __init__(self, channels: int, hidden: int, cond_channels: int = 0, coupling: bool = True):
        pieces = [ActNorm(channels), InvConv1x1(channels)]
        if cond_channels:
            pieces.append(AffineInjector(channels, hidden, cond_channels))
        if coupling:
            pieces.append(AffineCoupling(channels, hidden, cond_channels))
        super().__init__(pieces)


def transition(channels: int, n: int = 2) -> list:
    """ActNorm + 1×1 conv pairs placed after every (un)squeeze to mix the new channels."""
    pieces: list = []
    for _ in range(n):
        pieces += [ActNorm(channels), InvConv1x1(channels)]
    return pieces
