"""Parametric ("classic") degradation sampler: random Gaussian/anisotropic blur at HR, stride-4
downsampling, Gaussian and Poisson noise, JPEG. Needs no training; ranges are options.

Order (why): blur happens in the optics at HR resolution, the sensor samples (stride s), noise is added
at LR and is partly signal dependent (Poisson), compression comes last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from sdtool.degrade import DegradationSample
from sdtool.errors import OptionError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Generator, Tensor


@dataclass(frozen=True)
class ClassicConfig:
    """Ranges (inclusive, sampled uniformly unless said) of the parametric degradation.

    sigma: blur std along each kernel axis, HR pixels. aniso_prob: chance of an anisotropic kernel
    (independent sigma_x, sigma_y and a random angle) instead of an isotropic one. noise: Gaussian std in
    8-bit units (/255). poisson_prob / poisson_peak: chance of shot noise and its photon count at white
    (log-uniform; smaller = noisier). jpeg_prob / jpeg_quality: chance of JPEG and its quality range.
    """

    kernel_size: int = 21
    scale: int = 4
    sigma: tuple[float, float] = (0.4, 3.0)
    aniso_prob: float = 0.5
    noise: tuple[float, float] = (1.0, 15.0)
    poisson_prob: float = 0.5
    poisson_peak: tuple[float, float] = (100.0, 1000.0)
    jpeg_prob: float = 0.7
    jpeg_quality: tuple[int, int] = (40, 95)

    def validate(self) -> None:
        """Raise UsageError when a range is empty or out of its domain."""
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise UsageError(f"kernel size must be odd and positive, got {self.kernel_size}")
        checks = {
            "sigma": (self.sigma, 0.0, math.inf),
            "noise": (self.noise, 0.0, 255.0),
            "poisson-peak": (self.poisson_peak, 1e-3, math.inf),
            "jpeg-quality": (self.jpeg_quality, 1, 100),
        }
        for name, ((lo, hi), low, high) in checks.items():
            if not (low <= lo <= hi <= high):
                raise OptionError(name.replace("-", "_"), f"range {lo}..{hi} is invalid (need {low} <= min <= max <= "
                                                          f"{high})")
        for name, p in (("aniso", self.aniso_prob), ("poisson", self.poisson_prob), ("jpeg", self.jpeg_prob)):
            if not 0.0 <= p <= 1.0:
                raise OptionError(f"{name}_prob", f"must be in [0, 1], got {p}")


def _uniform(lo: float, hi: float, n: int, gen: "Generator") -> "Tensor":
    import torch

    return lo + (hi - lo) * torch.rand(n, generator=gen)


class ClassicDegradation:
    """Sampler of parametric degradations. All randomness comes from the CPU generator passed to `sample`
    (so a seed gives the same result on CPU and GPU)."""

    def __init__(self, config: ClassicConfig = ClassicConfig()) -> None:
        config.validate()
        self.config = config

    def sample_kernels(self, n: int, gen: "Generator") -> "tuple[Tensor, list[dict[str, float]]]":
        """n kernels N×K×K (sum 1) and their parameters."""
        import torch

        from sdtool.degrade.ops import gaussian_kernel

        c = self.config
        sx = _uniform(*c.sigma, n, gen)
        aniso = torch.rand(n, generator=gen) < c.aniso_prob
        sy = torch.where(aniso, _uniform(*c.sigma, n, gen), sx)
        theta = torch.where(aniso, _uniform(0.0, math.pi, n, gen), torch.zeros(n))
        k = gaussian_kernel(c.kernel_size, sx, sy, theta)
        params = [
            {"sigma_x": float(sx[i]), "sigma_y": float(sy[i]), "theta": float(theta[i])} for i in range(n)
        ]
        return k, params

    def sample(self, y: "Tensor", generator: "Optional[Generator]" = None) -> DegradationSample:
        """Degrade HR images y (N×3×H×W in [0,1], any device) → DegradationSample with lr N×3×h×w,
        kernel N×K×K, noise N×3×h×w (the Gaussian + Poisson noise added, before JPEG) and params."""
        import torch

        from sdtool.degrade.ops import blur_downsample, jpeg, poisson_noise

        c = self.config
        gen = generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
        n = y.shape[0]
        kernels, params = self.sample_kernels(n, gen)
        clean = blur_downsample(y, kernels.to(y.device), c.scale).clamp(0, 1)
        sig = _uniform(*c.noise, n, gen) / 255.0
        noise = torch.randn(clean.shape, generator=gen) * sig.reshape(-1, 1, 1, 1)
        use_poisson = torch.rand(n, generator=gen) < c.poisson_prob
        log_lo, log_hi = math.log(c.poisson_peak[0]), math.log(c.poisson_peak[1])
        peak = torch.exp(_uniform(log_lo, log_hi, n, gen))
        shot = poisson_noise(clean.detach().cpu(), peak, generator=gen) * use_poisson.reshape(-1, 1, 1, 1)
        noise = (noise + shot).to(y.device)
        lr = (clean + noise).clamp(0, 1)
        use_jpeg = torch.rand(n, generator=gen) < c.jpeg_prob
        q = torch.randint(c.jpeg_quality[0], c.jpeg_quality[1] + 1, (n,), generator=gen)
        if bool(use_jpeg.any()):
            compressed = jpeg(lr, [int(v) for v in q])
            lr = torch.where(use_jpeg.to(y.device).reshape(-1, 1, 1, 1), compressed, lr)
        for i, p in enumerate(params):
            p["noise_sigma_255"] = float(sig[i] * 255)
            p["poisson_peak"] = float(peak[i]) if bool(use_poisson[i]) else None
            p["jpeg_quality"] = int(q[i]) if bool(use_jpeg[i]) else None
        return DegradationSample(lr=lr, kernel=kernels.to(y.device), noise=noise, params=params)

    def sample_params(self, n: int, gen: "Generator") -> list[dict[str, "Optional[float]"]]:
        """n parameter sets (the keys of `sample`'s params) without applying them, so that `apply` can put one
        degradation on several contents (ReDegNet's contrastive pairs, `sdtool.train.redeg_task`)."""
        import torch

        c = self.config
        _, params = self.sample_kernels(n, gen)
        sig = _uniform(*c.noise, n, gen)
        use_poisson = torch.rand(n, generator=gen) < c.poisson_prob
        peak = torch.exp(_uniform(math.log(c.poisson_peak[0]), math.log(c.poisson_peak[1]), n, gen))
        use_jpeg = torch.rand(n, generator=gen) < c.jpeg_prob
        q = torch.randint(c.jpeg_quality[0], c.jpeg_quality[1] + 1, (n,), generator=gen)
        for i, p in enumerate(params):
            p["noise_sigma_255"] = float(sig[i])
            p["poisson_peak"] = float(peak[i]) if bool(use_poisson[i]) else None
            p["jpeg_quality"] = int(q[i]) if bool(use_jpeg[i]) else None
        return params

    def apply(self, y: "Tensor", params: "list[dict[str, Optional[float]]]",
              generator: "Optional[Generator]" = None) -> "Tensor":
        """Degrade HR images y (N×3×H×W in [0,1]) with given parameters, one set per image (as `sample_params`
        or `sample` return them) → LR N×3×h×w in [0,1]. Only the noise realisation comes from `generator`."""
        import torch

        from sdtool.degrade.ops import blur_downsample, gaussian_kernel, jpeg, poisson_noise

        if len(params) != y.shape[0]:
            raise ValueError(f"{len(params)} parameter sets for {y.shape[0]} images")
        gen = generator if generator is not None else torch.Generator().manual_seed(torch.seed() % 2**63)
        col = lambda key: torch.tensor([float(p[key]) for p in params])  # noqa: E731
        k = gaussian_kernel(self.config.kernel_size, col("sigma_x"), col("sigma_y"), col("theta"))
        clean = blur_downsample(y, k.to(y.device), self.config.scale).clamp(0, 1)
        noise = torch.randn(clean.shape, generator=gen) * (col("noise_sigma_255") / 255.0).reshape(-1, 1, 1, 1)
        for i, p in enumerate(params):
            if p.get("poisson_peak") is not None:
                noise[i] += poisson_noise(clean[i : i + 1].detach().cpu(), float(p["poisson_peak"]), gen)[0]
        lr = (clean + noise.to(y.device)).clamp(0, 1)
        for i, p in enumerate(params):
            if p.get("jpeg_quality") is not None:
                lr[i] = jpeg(lr[i : i + 1], int(p["jpeg_quality"]))[0]
        return lr
