"""Base densities: a standard Gaussian and a mixture of scalar Gaussians evaluated per element."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: Tensor, mean: Union[Tensor, float] = 0.0, log_std: Union[Tensor, float] = 0.0) -> Tensor:
    """Elementwise log N(z; mean, exp(log_std)^2)."""
    log_std = torch.as_tensor(log_std, dtype=z.dtype, device=z.device)
    return -0.5 * (LOG_2PI + 2 * log_std + (z - mean) ** 2 * torch.exp(-2 * log_std))


def randn(shape: tuple[int, ...], generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved: a seed gives the same noise on any device."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


class StandardNormal(nn.Module):
    """N(0, I); log_prob sums over all but the batch dimension."""

    def log_prob(self, z: Tensor) -> Tensor:
        return gaussian_log_prob(z).flatten(1).sum(1)

    def sample(self, noise: Tensor, temperature: float) -> Tensor:
        """noise ~ N(0, I) → sample at temperature τ: τ·noise."""
        return noise * temperature


class MixtureOfGaussians(nn.Module):
    """Equal-weight mixture of K scalar Gaussians, density per element:
    log p(z) = Σ_elements [logsumexp_k log N(z_e; μ_k, σ_k²) − log K]  (SDFlow degradation prior)."""

    def __init__(self, n_components: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.means = nn.Parameter(torch.randn(n_components, generator=generator))
        self.log_stds = nn.Parameter(torch.zeros(n_components))

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def log_prob(self, z: Tensor) -> Tensor:
        flat = z.flatten(1).unsqueeze(1)  # B×1×D
        per_k = gaussian_log_prob(flat, self.means[None, :, None], self.log_stds[None, :, None])
        return (torch.logsumexp(per_k, dim=1) - math.log(self.n_components)).sum(1)

    def sample(self, noise: Tensor, temperature: float, component: Tensor) -> Tensor:
        """One component per image (as the authors sample): μ_k + σ_k·τ·noise; component: LongTensor (B,)."""
        shape = (-1,) + (1,) * (noise.dim() - 1)
        mean = self.means[component].view(shape)
        std = torch.exp(self.log_stds[component]).view(shape)
        return mean + std * temperature * noise

    def responsibilities(self, z: Tensor) -> Tensor:
        """Per-image posterior over components from all elements, B×K (used to find a real image's component)."""
        flat = z.flatten(1).unsqueeze(1)
        per_k = gaussian_log_prob(flat, self.means[None, :, None], self.log_stds[None, :, None]).sum(2)
        return torch.softmax(per_k, dim=1)
