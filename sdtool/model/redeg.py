"""A ReDegNet-style degradation model (after Li et al., "From Face to Natural Image: Learning Real Degradation
for Blind Image Super-Resolution", ECCV 2022), for x4 natural images.

    Ω = DegNet(x, y)         x: a real LR image N×3×h×w, y: its HR or pseudo-HR N×3×4h×4w → Ω N×D, ‖Ω‖ = 1
    x̂ = SynNet(y', Ω, n)     any HR image y' → LR N×3×h'×w' with the degradation Ω, n: noise maps

DegNet compares the LR image with the box-downsampled HR image at LR size (a CNN on their difference and
high frequencies, and the ratio of their power spectra), pooled over the whole image, so Ω is a global
description of blur, noise and compression and not of the scene; training makes it so (contrastive loss,
`sdtool.train.redeg_task`). SynNet works at LR
size on the space-to-depth HR image; its convolutions are modulated by Ω as in StyleGAN2 (weight
modulation and demodulation, Karras et al. 2020, eq. 1-3) and it adds per-layer noise maps (StyleGAN's
noise inputs), so one Ω gives many noise realisations. Its output is the box-downsampled HR plus a learned
residual. The model also keeps a pool of Ω of real training pairs (`pool`, a buffer saved with the
weights): ReDegNet's "degradation pool", sampled when no real LR image is given.
Images are float32 in [0, 1].
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.config import JsonConfig
from sdtool.degrade import DegradationSample
from sdtool.errors import CheckpointError, UsageError

FORMAT = "sdtool-redeg"


@dataclass(frozen=True)
class ReDegConfig(JsonConfig):
    """Sizes of a ReDeg model. omega_dim D: length of Ω; spectrum_bins: radial frequency bands of DegNet's
    spectral descriptor; deg_width / deg_down: DegNet width and number of stride-2 stages; style_dim: width of
    SynNet's mapping MLP; syn_width / syn_blocks: SynNet width and residual blocks (two modulated 3×3
    convolutions each); pool_size: Ω kept in the degradation pool."""

    name: str = "default"
    scale: int = 4
    omega_dim: int = 64
    spectrum_bins: int = 12
    deg_width: int = 48
    deg_down: int = 3
    style_dim: int = 96
    syn_width: int = 32
    syn_blocks: int = 3
    pool_size: int = 256


REDEG_PRESETS: dict[str, ReDegConfig] = {
    "default": ReDegConfig(),
    "tiny": ReDegConfig(name="tiny", omega_dim=16, deg_width=16, deg_down=2, style_dim=32, syn_width=16,
                        syn_blocks=1, pool_size=16),
}


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    # replicate padding works for any image size, reflection needs sides larger than the pad
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, padding_mode="replicate")


def box_down(y: Tensor, scale: int) -> Tensor:
    """Mean of every scale×scale block: N×C×H×W (H, W multiples of scale) → N×C×H/scale×W/scale."""
    return F.avg_pool2d(y, scale)


def high_pass(x: Tensor) -> Tensor:
    """x minus its 3×3 box mean (replicate padding): the detail that blur removes and noise adds."""
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


class DegNet(nn.Module):
    """(x N×3×h×w, y N×3×sh×sw in [0,1]) → Ω N×D of unit length.

    Two descriptions of how x differs from y, both pooled over the whole image so that Ω describes the
    degradation and not the scene: (1) a CNN on x − box_down(y) and on the high-pass of both (not on the
    images themselves), with the mean and std of its features; (2) the radially averaged log power spectrum
    of x minus that of box_down(y), a log transfer function (blur lowers the high bands, noise raises them to
    a floor), and the mean colour shift. (2) is nearly content-free from the start; with (1) alone an untrained
    DegNet's Ω was mostly content and the contrastive loss collapsed every Ω before it learnt anything."""

    def __init__(self, cfg: ReDegConfig) -> None:
        super().__init__()
        self.scale, self.bins, w = cfg.scale, cfg.spectrum_bins, cfg.deg_width
        layers: list[nn.Module] = [_conv(9, w), nn.LeakyReLU(0.2), _conv(w, w), nn.LeakyReLU(0.2)]
        for _ in range(cfg.deg_down):
            layers += [_conv(w, w, stride=2), nn.LeakyReLU(0.2), _conv(w, w), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * w + self.bins + 3, w), nn.LeakyReLU(0.2), nn.Linear(w, cfg.omega_dim))
        # He initialisation without biases: PyTorch's default shrinks the signal at every layer while the
        # biases stay, so after eight layers every image gets nearly the same Ω, a saddle point of the
        # contrastive loss (identical unit vectors get no gradient across the sphere).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.2)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        from sdtool.degrade.transfer import radial_log_spectrum

        base = box_down(y, self.scale)
        if base.shape != x.shape:
            raise ValueError(f"HR {tuple(y.shape)} is not {self.scale}× LR {tuple(x.shape)}")
        f = self.body(torch.cat([(x - base) * 4, high_pass(x) * 4, high_pass(base) * 4], 1))
        spectrum = (radial_log_spectrum(x, self.bins) - radial_log_spectrum(base, self.bins)) / 4  # to unit scale
        stats = torch.cat([f.mean(dim=(2, 3)), f.var(dim=(2, 3), unbiased=False).add(1e-6).sqrt(), spectrum,
                           (x - base).mean(dim=(2, 3)) * 10], 1)
        return F.normalize(self.head(stats), dim=1)


class ModulatedConv(nn.Module):
    """StyleGAN2 modulated convolution: w'_oik = s_i·w_oik, demodulated w'' = w' / sqrt(Σ_ik w'² + ε)
    (Karras et al. 2020, eq. 1-3), as one grouped convolution. x N×cin×h×w, style N×style_dim → N×cout×h×w."""

    def __init__(self, cin: int, cout: int, kernel: int, style_dim: int, demodulate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel) / math.sqrt(cin * kernel * kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.affine = nn.Linear(style_dim, cin)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # every style starts as the plain convolution
        self.demodulate = demodulate

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        n, cin, h, w = x.shape
        cout, _, k, _ = self.weight.shape
        wt = self.weight[None] * self.affine(style)[:, None, :, None, None]
        if self.demodulate:
            wt = wt * torch.rsqrt(wt.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        xp = F.pad(x.reshape(1, n * cin, h, w), [k // 2] * 4, mode="replicate") if k > 1 else x.reshape(1, n * cin, h,
                                                                                                        w)
        out = F.conv2d(xp, wt.reshape(n * cout, cin, k, k), groups=n)
        return out.reshape(n, cout, h, w) + self.bias.view(1, -1, 1, 1)


class SynBlock(nn.Module):
    """Residual block: two modulated 3×3 convolutions, each followed by a noise input (a noise map N×1×h×w
    times a learned per-channel strength, zero at the start) and a leaky ReLU."""

    def __init__(self, width: int, style_dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([ModulatedConv(width, width, 3, style_dim) for _ in range(2)])
        self.noise_strength = nn.Parameter(torch.zeros(2, width))

    def forward(self, x: Tensor, style: Tensor, noises: list[Tensor]) -> Tensor:
        h = x
        for conv, strength, noise in zip(self.convs, self.noise_strength, noises):
            h = F.leaky_relu(conv(h, style) + strength.view(1, -1, 1, 1) * noise, 0.2)
        return x + h


class SynNet(nn.Module):
    """(y N×3×H×W in [0,1], H, W multiples of scale; Ω N×D; noise maps) → LR N×3×H/s×W/s (unclamped):
    box_down(y) + a residual computed at LR size from the space-to-depth of y, modulated by Ω."""

    def __init__(self, cfg: ReDegConfig) -> None:
        super().__init__()
        self.scale, w = cfg.scale, cfg.syn_width
        self.mapping = nn.Sequential(nn.Linear(cfg.omega_dim, cfg.style_dim), nn.LeakyReLU(0.2),
                                     nn.Linear(cfg.style_dim, cfg.style_dim), nn.LeakyReLU(0.2))
        self.conv_in = _conv(3 * cfg.scale**2, w)
        self.blocks = nn.ModuleList([SynBlock(w, cfg.style_dim) for _ in range(cfg.syn_blocks)])
        self.to_rgb = ModulatedConv(w, 3, 1, cfg.style_dim, demodulate=False)
        with torch.no_grad():
            self.to_rgb.weight.mul_(0.1)  # start close to the box-downsampled image

    def noise_count(self) -> int:
        return 2 * len(self.blocks)

    def forward(self, y: Tensor, omega: Tensor, noises: list[Tensor]) -> Tensor:
        style = self.mapping(omega)
        h = F.leaky_relu(self.conv_in(F.pixel_unshuffle(y * 2 - 1, self.scale)), 0.2)
        for i, block in enumerate(self.blocks):
            h = block(h, style, noises[2 * i : 2 * i + 2])
        return box_down(y, self.scale) + self.to_rgb(h, style)


class ReDeg(nn.Module):
    """DegNet + SynNet + the degradation pool (see the module docstring)."""

    kind = "redeg"

    def __init__(self, config: ReDegConfig = ReDegConfig()) -> None:
        super().__init__()
        self.config = config
        self.deg = DegNet(config)
        self.syn = SynNet(config)
        self.register_buffer("pool", torch.zeros(config.pool_size, config.omega_dim))
        self.register_buffer("pool_count", torch.zeros((), dtype=torch.long))

    @property
    def device(self) -> torch.device:
        return self.pool.device

    def omega(self, x: Tensor, y: Tensor) -> Tensor:
        """Ω N×D of real LR x N×3×h×w and its HR (or pseudo-HR) y N×3×sh×sw, both in [0,1]."""
        return self.deg(x.to(self.device), y.to(self.device))

    def noises(self, n: int, h: int, w: int, scale: float = 1.0,
               generator: Optional[torch.Generator] = None) -> list[Tensor]:
        """SynNet's noise maps for n LR images h×w: standard normal × scale, drawn on the CPU `generator`."""
        return [(torch.randn(n, 1, h, w, generator=generator) * scale).to(self.device)
                for _ in range(self.syn.noise_count())]

    def render(self, y: Tensor, omega: Tensor, noise_scale: float = 1.0,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """Re-render HR images y N×3×H×W (any size) with degradations Ω (N×D, or 1×D for all) → LR
        N×3×ceil(H/s)×ceil(W/s), unclamped, differentiable. Sides are replicate-padded to multiples of s."""
        s = self.config.scale
        n, _, h, w = y.shape
        yp = F.pad(y.to(self.device), (0, (-w) % s, 0, (-h) % s), mode="replicate")
        lh, lw = yp.shape[-2] // s, yp.shape[-1] // s
        omega = omega.to(self.device).expand(n, -1)
        return self.syn(yp, omega, self.noises(n, lh, lw, noise_scale, generator))[..., : math.ceil(h / s),
                                                                                   : math.ceil(w / s)]

    @torch.no_grad()
    def remember(self, omega: Tensor) -> None:
        """Write Ω (N×D) into the pool, a ring buffer of the most recent ones."""
        size = self.pool.shape[0]
        idx = (self.pool_count + torch.arange(omega.shape[0], device=self.device)) % size
        self.pool[idx] = omega.detach().to(self.pool.dtype)
        self.pool_count += omega.shape[0]

    def pool_omegas(self) -> Tensor:
        """The Ω held in the pool, P×D (P = 0 for an untrained model)."""
        return self.pool[: int(min(int(self.pool_count), self.pool.shape[0]))]

    def sample_omega(self, n: int, generator: Optional[torch.Generator] = None,
                     pool: Optional[Tensor] = None) -> Tensor:
        """n rows drawn uniformly from `pool` (default: the model's own) → n×D."""
        pool = self.pool_omegas() if pool is None else pool
        if pool.shape[0] == 0:
            raise UsageError("this ReDeg model has an empty degradation pool; give a real LR image ({like}) or a "
                             "folder of them ({like_dir})", ("like", "like_dir"))
        idx = torch.randint(pool.shape[0], (n,), generator=generator)
        return pool[idx.to(pool.device)]

    @torch.no_grad()
    def degrade(self, y: Tensor, omega: Optional[Tensor] = None, temperature: float = 1.0,
                generator: Optional[torch.Generator] = None) -> DegradationSample:
        """Degraded LR images of y (N×3×H×W in [0,1]) with Ω (N×D or 1×D; default: drawn from the pool with
        `generator`); temperature scales SynNet's noise maps (1 = as trained). lr clamped to [0,1]; latent = Ω."""
        n = y.shape[0]
        omega = self.sample_omega(n, generator) if omega is None else omega.to(self.device).expand(n, -1)
        lr = self.render(y, omega, temperature, generator).clamp(0, 1)
        return DegradationSample(lr=lr, latent=omega, params=[{"temperature": temperature} for _ in range(n)])


class ReDegDegrader:
    """HR → LR with a trained ReDeg and Ω drawn from a pool (the model's own, or Ω of chosen real LR images):
    a degrader for SR training (`train --model sr`). __call__(hr N×3×H×W in [0,1], generator) → N×3×H/4×W/4
    in [0,1], one Ω per image, without gradients."""

    def __init__(self, model: ReDeg, pool: Optional[Tensor] = None, noise_scale: float = 1.0) -> None:
        self.model, self.pool, self.noise_scale = model.eval(), pool, noise_scale

    def __call__(self, hr: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        with torch.no_grad():
            omega = self.model.sample_omega(hr.shape[0], generator, self.pool)
            return self.model.render(hr, omega, self.noise_scale, generator).clamp(0, 1).to(hr.device)


# ------------------------------------------------------------------------------------------- checkpoints
def redeg_export_metadata(model: ReDeg) -> dict[str, str]:
    """Metadata of a ReDeg checkpoint: format, kind, config JSON."""
    return {"format": FORMAT, "kind": "redeg", "config": model.config.to_json()}


def save_redeg(model: ReDeg, path: Union[str, Path], provenance: Optional[dict[str, Any]] = None) -> None:
    """Write the weights and the pool as safetensors, config and provenance in the metadata (atomic)."""
    from sdtool.checkpoint import FORMAT_VERSION, atomic_save_tensors

    meta = {**redeg_export_metadata(model), "format_version": FORMAT_VERSION,
            "provenance": json.dumps(provenance or {}, sort_keys=True)}
    atomic_save_tensors(dict(model.state_dict()), path, meta)


def load_redeg(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> ReDeg:
    """Rebuild a ReDeg from its checkpoint alone (strict); CheckpointError names what is wrong."""
    from sdtool.checkpoint import load_state_strict, read_safetensors

    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected a ReDeg checkpoint (metadata format '{FORMAT}'), found "
                              + (f"format '{meta['format']}'" if meta.get("format") else "no sdtool metadata"))
    try:
        config = ReDegConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: the ReDeg config in the metadata is unusable ({exc})") from None
    model = ReDeg(config)
    load_state_strict(model, tensors, path)
    return model.to(device).eval()
