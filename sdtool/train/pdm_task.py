"""Training a PDM against unpaired real LR crops (TrainTask for `sdtool train --model pdm`).

Losses (after Luo et al. 2022; weights [ours]):
- adversarial: a patch discriminator on LR crops tells real LR from PDM(HR) samples (non-saturating BCE);
- noise energy: noise_weight · mean(n²) keeps netN from explaining content changes that belong to the blur.
`fit_pdm` runs the same task in a plain loop (for tests, scripts and small uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.checkpoint import model_metadata
from sdtool.model.pdm import PDM, PDMConfig

from sdtool.train.config import DEFAULT_LR
from sdtool.train.task import NonFiniteLoss

DISC_RATE = 4  # TTUR: the discriminator learns 4× faster, which keeps the kernel from overshooting


@dataclass(frozen=True)
class PDMTrainConfig:
    """Optimisation settings. lr_g / lr_d: Adam learning rates of the PDM and the discriminator; d_width,
    d_layers: discriminator size; noise_weight: weight of the noise-energy penalty; grad_clip: max grad norm;
    highpass: feed the discriminator the image and its Laplacian (blur and noise live in high frequencies)."""

    lr_g: float = DEFAULT_LR
    lr_d: float = DISC_RATE * DEFAULT_LR
    betas: tuple[float, float] = (0.5, 0.999)
    d_width: int = 32
    d_layers: int = 4
    noise_weight: float = 1.0
    adv_weight: float = 1.0
    grad_clip: float = 10.0
    highpass: bool = True


class LRDiscriminator(nn.Module):
    """Patch discriminator on LR images: N×3×p×p in [0,1] → logits N×1×p'×p'. No downsampling in the first
    layers because the blur width is a property of 1–2 LR pixels."""

    def __init__(self, width: int = 64, layers: int = 4, highpass: bool = True) -> None:
        super().__init__()
        self.highpass = highpass
        cin = 6 if highpass else 3
        mods: list[nn.Module] = [nn.Conv2d(cin, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for i in range(layers - 2):
            stride = 2 if i == layers - 3 else 1
            mods += [nn.Conv2d(width, width, 3, stride=stride, padding=1), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv2d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("lap", lap.expand(3, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = x * 2 - 1
        if self.highpass:
            hp = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.lap, groups=3)
            x = torch.cat([x, hp * 4], 1)  # ×4: Laplacian of natural images is small, bring it to unit scale
        return self.net(x)


class PDMTask:
    """TrainTask for PDM (see the contract): model = PDM, modules = {pdm, disc}, optimizers = {g, d}."""

    kind = "pdm"

    def __init__(self, config: PDMConfig = PDMConfig(), train: PDMTrainConfig = PDMTrainConfig(),
                 device: "str | torch.device" = "cpu", generator: Optional[torch.Generator] = None) -> None:
        self.train_config = train
        self.device = torch.device(device)
        self.model = PDM(config).to(self.device)
        self.disc = LRDiscriminator(train.d_width, train.d_layers, train.highpass).to(self.device)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=train.lr_g, betas=train.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=train.lr_d, betas=train.betas)
        self.generator = generator  # CPU generator for latents; None = global RNG

    def modules(self) -> dict[str, nn.Module]:
        return {"pdm": self.model, "disc": self.disc}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.opt_g, "d": self.opt_d}

    def export_metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in model_metadata(self.model).items()}

    def _check(self, losses: dict[str, Tensor]) -> None:
        bad = [k for k, v in losses.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise NonFiniteLoss(f"non-finite PDM loss: {', '.join(bad)}")

    def train_step(self, lr: Tensor, hr: Tensor, it: int) -> dict[str, float]:
        """One D step and one G step. lr: N×3×p×p real LR crops, hr: M×3×4p×4p HR crops (unpaired), [0,1]."""
        tc = self.train_config
        lr = lr.to(self.device)
        hr = hr.to(self.device)
        n, _, h, w = hr.shape
        z_k, z_n = self.model.sample_latents(n, h, w, 1.0, self.generator)
        fake, kernel, noise = self.model(hr, z_k, z_n)

        # discriminator
        d_real = self.disc(lr)
        d_fake = self.disc(fake.detach())
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        self._check({"d": loss_d})
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        nn.utils.clip_grad_norm_(self.disc.parameters(), tc.grad_clip)
        self.opt_d.step()

        # generator (PDM)
        adv = F.softplus(-self.disc(fake)).mean()
        energy = noise.pow(2).mean()
        loss_g = tc.adv_weight * adv + tc.noise_weight * energy
        self._check({"g_adv": adv, "noise_energy": energy})
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.disc.zero_grad(set_to_none=True)  # D got gradients from the G loss; they are not used
        nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.opt_g.step()
        from sdtool.degrade.ops import kernel_sigma

        kk = kernel.detach() if kernel.dim() == 3 else kernel.detach().mean(dim=(-2, -1))
        return {
            "loss_d": float(loss_d.detach()),
            "loss_g_adv": float(adv.detach()),
            "noise_energy": float(energy.detach()),
            "noise_std": float(noise.detach().std()),
            "kernel_sigma": float(kernel_sigma(kk).mean()),
        }


def _as_list(images: "Tensor | Sequence[Tensor]") -> list[Tensor]:
    if isinstance(images, Tensor):
        return list(images) if images.dim() == 4 else [images]
    return [t[0] if t.dim() == 4 else t for t in images]


def _random_crops(images: list[Tensor], n: int, size: int, gen: torch.Generator) -> Tensor:
    out = []
    idx = torch.randint(len(images), (n,), generator=gen)
    for i in idx.tolist():
        img = images[i]
        h, w = img.shape[-2:]
        if h < size or w < size:
            raise ValueError(f"image {h}×{w} is smaller than the crop {size}")
        top = int(torch.randint(h - size + 1, (1,), generator=gen))
        left = int(torch.randint(w - size + 1, (1,), generator=gen))
        out.append(img[:, top : top + size, left : left + size])
    return torch.stack(out)


def fit_pdm(
    lr_images: "Tensor | Sequence[Tensor]",
    hr_images: "Tensor | Sequence[Tensor]",
    steps: int,
    config: PDMConfig = PDMConfig(),
    train: PDMTrainConfig = PDMTrainConfig(),
    batch: int = 16,
    lr_patch: int = 32,
    seed: int = 0,
    device: str = "cpu",
    log_every: int = 0,
) -> tuple[PDM, list[dict[str, Any]]]:
    """Train a PDM on unpaired images in a plain loop (no checkpoints); returns (model in eval mode, history).

    lr_images: real LR images, each 3×h×w in [0,1] (list or N×3×h×w tensor); hr_images: HR images 3×H×W.
    Every step draws `batch` random LR crops lr_patch² and HR crops (scale·lr_patch)². Deterministic for a
    seed on one device. history holds the step's losses every `log_every` steps (0 = only the last step).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    task = PDMTask(config, train, device, generator=gen)
    lrs, hrs = _as_list(lr_images), _as_list(hr_images)
    history: list[dict[str, Any]] = []
    stats: dict[str, float] = {}
    for it in range(steps):
        lr = _random_crops(lrs, batch, lr_patch, gen)
        hr = _random_crops(hrs, batch, lr_patch * config.scale, gen)
        stats = task.train_step(lr, hr, it)
        if log_every and (it % log_every == 0 or it == steps - 1):
            history.append({"step": it, **stats})
    if not log_every and steps:
        history.append({"step": steps - 1, **stats})
    return task.model.eval(), history


def learned_kernel_sigma(model: PDM, n: int = 64, seed: int = 0) -> tuple[float, float]:
    """Mean width (second moments, HR pixels) of kernels sampled at τ = 1, and the mean noise std at LR size
    32² on a mid-grey image (for checks and reports)."""
    from sdtool.degrade.ops import kernel_sigma

    gen = torch.Generator().manual_seed(seed)
    y = torch.full((n, 3, 32 * model.config.scale, 32 * model.config.scale), 0.5, device=model.device)
    with torch.no_grad():
        z_k, z_n = model.sample_latents(n, y.shape[-2], y.shape[-1], 1.0, gen)
        _, k, noise = model(y, z_k, z_n)
    kk = k if k.dim() == 3 else k.mean(dim=(-2, -1))
    return float(kernel_sigma(kk).mean()), float(noise.std(dim=(1, 2, 3)).mean())




def make_pdm_task(config: str, device: torch.device, settings: Any) -> PDMTask:
    """Build the PDMTask for the generic runner (`sdtool train --model pdm`).

    config names a PDM preset (default, variant, tiny; an SDFlow size name falls back to default); settings.lr
    is the PDM learning rate, the discriminator gets 4× (TTUR); betas / grad_clip / seed from settings.
    """
    from sdtool.errors import UsageError
    from sdtool.model.pdm import PDM_PRESETS

    name = config or "default"
    if name not in PDM_PRESETS:
        if name in ("paper", "lite"):
            name = "default"
        else:
            raise UsageError(f"unknown PDM size {name!r}; choose one of {sorted(PDM_PRESETS)}")
    lr = float(settings.lr)
    tc = PDMTrainConfig(lr_g=lr, lr_d=DISC_RATE * lr, betas=tuple(getattr(settings, "betas", (0.5, 0.999))),
                        grad_clip=float(getattr(settings, "grad_clip", 10.0)))
    torch.manual_seed(int(getattr(settings, "seed", 0)))
    gen = torch.Generator().manual_seed(int(getattr(settings, "seed", 0)))
    return PDMTask(PDM_PRESETS[name], tc, device, generator=gen)
