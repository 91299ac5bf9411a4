"""Invertible transforms. Every piece maps image → latent in `forward(x, cond)` and back in `inverse(z, cond)`,
both returning the transformed tensor and a per-sample log|det J| of shape (B,)."""

from sdtool.flows.actnorm import ActNorm
from sdtool.flows.base import Sequential, Transform
from sdtool.flows.conditional import ConditionalFlow
from sdtool.flows.conv1x1 import InvConv1x1
from sdtool.flows.coupling import AffineCoupling, AffineInjector
from sdtool.flows.priors import MixtureOfGaussians, StandardNormal
from sdtool.flows.reshape import Squeeze, Unsqueeze
from sdtool.flows.step import FlowStep, transition

__all__ = [
    "ActNorm", "AffineCoupling", "AffineInjector", "ConditionalFlow", "FlowStep", "InvConv1x1",
    "MixtureOfGaussians", "Sequential", "Squeeze", "StandardNormal", "Transform", "Unsqueeze", "transition",
]
