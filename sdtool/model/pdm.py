"""Probabilistic degradation model (PDM, after Luo et al., CVPR 2022).

    x = blur_downsample(y, k) + n,   k = netK(z_k),   n = netN(z_n, x_clean),   z_k, z_n ~ N(0, τ²I)

netK maps a latent to a softmax-normalised K×K kernel: one kernel per image from a vector z_k (an MLP), or
one kernel per LR pixel from a latent map (a small CNN, `spatial=True`). netN maps a noise latent map (3
channels at LR size) and, when `signal_dependent`, the clean blurred LR image to a noise map. Its output is
gain·(z_n + f(z_n, x_clean)) with f's last layer zero-initialised, so an untrained netN is white Gaussian
noise of std `init_noise` and training only has to learn departures from it [ours].
Images are in [0,1]; the blur is applied at HR resolution exactly like sdtool.degrade.ops.blur_downsample.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor, nn

from sdtool.config import PDM_PRESETS, PDMConfig  # noqa: F401 - PDM_PRESETS: part of this module's API
from sdtool.degrade import DegradationSample

if TYPE_CHECKING:  # pragma: no cover
    from torch import Generator



def _gaussian_logits(size: int, sigma: float) -> Tensor:
    """Log of an isotropic Gaussian kernel, flattened (K²,), as the softmax bias of netK."""
    half = size // 2
    ax = torch.arange(-half, half + 1, dtype=torch.float32)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    logits = -(xx * xx + yy * yy) / (2 * sigma * sigma)
    # floor the far tails so that softmax gradients there are not vanishingly small
    return logits.clamp_min(-12.0).reshape(-1)


class KernelNet(nn.Module):
    """netK. Per image: z_k N×zk_dim → kernels N×K×K. Spatial: z_k N×zk_dim×h×w → kernels N×K×K×h×w.
    Kernels are softmax-normalised (non-negative, sum 1)."""

    def __init__(self, cfg: PDMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k2 = cfg.kernel_size**2
        layers: list[nn.Module] = []
        width = cfg.zk_dim
        for _ in range(cfg.k_layers - 1):
            if cfg.spatial:
                layers.append(nn.Conv2d(width, cfg.k_hidden, 3, padding=1, padding_mode="reflect"))
            else:
                layers.append(nn.Linear(width, cfg.k_hidden))
            layers.append(nn.LeakyReLU(0.2))
            width = cfg.k_hidden
        last = nn.Conv2d(width, k2, 1) if cfg.spatial else nn.Linear(width, k2)
        # zero weight + Gaussian bias: training starts from one plausible kernel for every latent
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(_gaussian_logits(cfg.kernel_size, cfg.init_sigma))
        layers.append(last)
        self.net = nn.Sequential(*layers)
        # Why the logit blur [ours]: after stride-s sampling, kernel mass moved by multiples of s HR pixels
        # is almost invisible in LR images, so free per-pixel logits drift into comb-shaped kernels that the
        # discriminator cannot reject. Blurring the logits damps such combs (period 4: ×0.06 at σ 1.5) and
        # keeps Gaussian kernels exactly representable (the blur of a quadratic is the same quadratic + c).
        sm = cfg.logit_smooth
        if sm > 0:
            half = max(1, math.ceil(3 * sm))
            ax = torch.arange(-half, half + 1, dtype=torch.float32)
            g = torch.exp(-ax * ax / (2 * sm * sm))
            g = g / g.sum()
            self.register_buffer("smooth", g, persistent=False)
        else:
            self.smooth = None

    def _smooth(self, logits: Tensor) -> Tensor:
        """Separable Gaussian blur of logits (M×K×K), replicate-padded so the border is not pulled down."""
        import torch.nn.functional as F

        if self.smooth is None:
            return logits
        half = self.smooth.numel() // 2
        x = logits.unsqueeze(1)
        x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="replicate"), self.smooth.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, half, half), mode="replicate"), self.smooth.view(1, 1, -1, 1))
        return x.squeeze(1)

    def forward(self, z_k: Tensor) -> Tensor:
        k = self.cfg.kernel_size
        logits = self.net(z_k)
        if self.cfg.spatial:
            n, _, h, w = logits.shape
            flat = logits.permute(0, 2, 3, 1).reshape(n * h * w, k, k)
            kern = torch.softmax(self._smooth(flat).reshape(n * h * w, k * k), dim=1)
            return kern.reshape(n, h, w, k, k).permute(0, 3, 4, 1, 2).contiguous()
        flat = self._smooth(logits.reshape(-1, k, k))
        return torch.softmax(flat.reshape(-1, k * k), dim=1).reshape(-1, k, k)


class NoiseNet(nn.Module):
    """netN: (z_n N×3×h×w, x_clean N×3×h×w in [0,1]) → noise N×3×h×w, [0,1] units."""

    def __init__(self, cfg: PDMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cin = 3 + (3 if cfg.signal_dependent else 0)
        layers: list[nn.Module] = []
        width = cin
        for _ in range(cfg.n_layers - 1):
            layers += [nn.Conv2d(width, cfg.n_hidden, 3, padding=1, padding_mode="reflect"), nn.LeakyReLU(0.2)]
            width = cfg.n_hidden
        last = nn.Conv2d(width, 3, 3, padding=1, padding_mode="reflect")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)
        self.log_gain = nn.Parameter(torch.tensor(math.log(cfg.init_noise)))

    def forward(self, z_n: Tensor, x_clean: Tensor) -> Tensor:
        inp = torch.cat([z_n, x_clean * 2 - 1], 1) if self.cfg.signal_dependent else z_n
        return self.log_gain.exp() * (z_n + self.net(inp))


class PDM(nn.Module):
    """The probabilistic degradation model (see module docstring)."""

    kind = "pdm"

    def __init__(self, config: PDMConfig = PDMConfig()) -> None:
        super().__init__()
        if config.kernel_size % 2 != 1:
            raise ValueError("PDM kernel_size must be odd")
        self.config = config
        self.net_k = KernelNet(config)
        self.net_n = NoiseNet(config)

    @property
    def device(self) -> torch.device:
        return self.net_n.log_gain.device

    def lr_size(self, h: int, w: int) -> tuple[int, int]:
        s = self.config.scale
        return math.ceil(h / s), math.ceil(w / s)

    def latent_shapes(self, n: int, h: int, w: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of (z_k, z_n) for n HR images of size h×w."""
        lh, lw = self.lr_size(h, w)
        zk = (n, self.config.zk_dim, lh, lw) if self.config.spatial else (n, self.config.zk_dim)
        return zk, (n, 3, lh, lw)

    def sample_latents(
        self, n: int, h: int, w: int, temperature: float = 1.0, generator: "Optional[Generator]" = None
    ) -> tuple[Tensor, Tensor]:
        """z_k, z_n ~ N(0, τ²) for n HR images h×w; drawn on the CPU generator, moved to the model device."""
        zk_shape, zn_shape = self.latent_shapes(n, h, w)
        z_k = torch.randn(zk_shape, generator=generator) * temperature
        z_n = torch.randn(zn_shape, generator=generator) * temperature
        return z_k.to(self.device), z_n.to(self.device)

    def kernels(self, z_k: Tensor) -> Tensor:
        return self.net_k(z_k)

    def forward(self, y: Tensor, z_k: Tensor, z_n: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """y: N×3×H×W in [0,1]; returns (lr N×3×h×w unclamped, kernel, noise N×3×h×w). Differentiable."""
        from sdtool.degrade.ops import blur_downsample

        k = self.net_k(z_k)
        clean = blur_downsample(y, k, self.config.scale)
        noise = self.net_n(z_n, clean)
        return clean + noise, k, noise

    @torch.no_grad()
    def degrade(
        self,
        y: Tensor,
        temperature: float = 1.0,
        generator: "Optional[Generator]" = None,
        z_k: Optional[Tensor] = None,
        z_n: Optional[Tensor] = None,
    ) -> DegradationSample:
        """Sample degraded LR images of y (N×3×H×W in [0,1]). Latents not given are drawn from N(0, τ²)
        with `generator`. Returns lr clamped to [0,1], kernel (N×K×K or N×K×K×h×w), noise map. Raises
        InputError / OptionError for another y or a bad temperature (`sdtool.inputs`)."""
        from sdtool.degrade.ops import kernel_sigma
        from sdtool.inputs import check_image, check_temperature

        check_image(y, "y")
        check_temperature(temperature)

        n, _, h, w = y.shape
        zk_s, zn_s = self.sample_latents(n, h, w, temperature, generator)
        z_k = zk_s if z_k is None else z_k.to(self.device)
        z_n = zn_s if z_n is None else z_n.to(self.device)
        lr, k, noise = self(y.to(self.device), z_k, z_n)
        kk = k if k.dim() == 3 else k.mean(dim=(-2, -1))
        widths = kernel_sigma(kk)
        params = [{"kernel_sigma": float(widths[i]), "noise_std": float(noise[i].std())} for i in range(n)]
        return DegradationSample(lr=lr.clamp(0, 1), kernel=k, noise=noise, params=params)
