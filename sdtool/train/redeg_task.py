"""Training ReDeg on real LR/HR pairs (TrainTask for `sdtool train --model redeg`), with its data and validation.

Losses (after ReDegNet, Li et al. ECCV 2022, §3; weights [ours]), on a batch of aligned real crops (x, y):
Ω = DegNet(x, y or its pseudo-HR), x̂ = SynNet(y, Ω):
- pixel L1(x̂, x) and perceptual LPIPS-alex(x̂, x) (the paper: VGG);
- style: L1 between Gram matrices of AlexNet's first feature maps of x̂ and x (noise and texture statistics);
- a conditional GAN: a patch discriminator sees an LR image with the box-downsampled HR beside it;
- disentanglement, contrastive (supervised contrastive loss, Khosla et al. 2020): the classic degrader puts
  each of M parameter sets on K contents of the batch; Ω of one parameter set are positives of each other,
  all others negatives, so Ω follows the degradation and not the content. SynNet also re-renders these
  synthetic pairs (L1 + LPIPS), which shows it degradations the real pairs do not have.
`fit_redeg` runs the task in a plain loop (tests, scripts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.model.redeg import ReDeg, ReDegConfig, box_down, redeg_export_metadata
from sdtool.nets.discriminator import PatchDiscriminator
from sdtool.train.losses import d_loss, g_loss, gram_loss, perceptual_distance
from sdtool.train.task import NonFiniteLoss, stable_seed


@dataclass(frozen=True)
class ReDegLossWeights:
    """Loss weights and the contrastive set-up (`sdtool train --model redeg --loss NAME=VALUE`) [ours]."""

    l1: float = 1.0
    perceptual: float = 1.0
    gram: float = 30.0  # Gram values are ~0.004 at the start: ×30 brings the term near the pixel L1
    gan: float = 0.02
    contrast: float = 1.0
    classic_recon: float = 0.5  # L1 + LPIPS of SynNet's re-rendering of the classic pairs
    contrast_temperature: float = 0.1
    contents: int = 2  # K contents per classic parameter set
    degradations: int = 4  # M parameter sets per step
    pseudo_prob: float = 0.5  # chance that DegNet reads the pseudo-HR instead of the HR (when one is given)
    perceptual_size: int = 32  # LR crops are enlarged to this side for LPIPS and Gram (32: as they are, cheapest)


def supcon_loss(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, eq. 2) of unit vectors z N×D with class labels (N,):
    for each anchor, −mean over its positives p of log softmax_{a≠i}(z_i·z_a/τ)[p]."""
    sim = z @ z.t() / temperature
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    return -(log_prob.masked_fill(~pos, 0).sum(1) / pos.sum(1).clamp_min(1)).mean()


def stratified_params(classic: Any, m: int, gen: torch.Generator) -> list[dict[str, Any]]:
    """m classic parameter sets whose blur widths fall in m different strata of the σ range and whose noise
    levels fall in m different strata of the noise range (two random permutations); anisotropy, angle,
    Poisson and JPEG as `sample_params` draws them. Why: two free draws are often nearly the same
    degradation, and a contrastive loss that must tell such negatives apart learns to collapse all Ω."""
    params = classic.sample_params(m, gen)
    (s_lo, s_hi), (n_lo, n_hi) = classic.config.sigma, classic.config.noise
    blur, noise = torch.randperm(m, generator=gen), torch.randperm(m, generator=gen)
    u = torch.rand(m, 3, generator=gen)
    for i, p in enumerate(params):
        aniso = p["sigma_x"] != p["sigma_y"]
        p["sigma_x"] = s_lo + (s_hi - s_lo) * float(blur[i] + u[i, 0]) / m
        p["sigma_y"] = s_lo + (s_hi - s_lo) * float(blur[i] + u[i, 1]) / m if aniso else p["sigma_x"]
        p["noise_sigma_255"] = n_lo + (n_hi - n_lo) * float(noise[i] + u[i, 2]) / m
    return params


def classic_batch(classic: Any, hr: Tensor, contents: int, degradations: int,
                  gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """The contrastive pairs: the first K = `contents` HR images N×3×H×W of `hr`, each degraded with the same
    M = `degradations` stratified classic parameter sets → (HR K·M×3×H×W, LR K·M×3×H/4×W/4, labels (K·M,),
    the parameter set of each row), on hr's device."""
    k = min(contents, hr.shape[0])
    params = stratified_params(classic, degradations, gen)
    y = hr[:k].repeat(degradations, 1, 1, 1)
    rows = [params[j] for j in range(degradations) for _ in range(k)]
    labels = torch.arange(degradations).repeat_interleave(k).to(hr.device)
    return y, classic.apply(y, rows, gen).to(hr.device), labels


class CondDiscriminator(nn.Module):
    """Conditional patch discriminator on LR images: (x N×3×h×w, y_lr N×3×h×w box-downsampled HR) → logits.
    It also gets x's Laplacian: blur and noise live in the high frequencies."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = PatchDiscriminator(in_channels=9, width=width, n_down=2)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("lap", lap.expand(3, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        hp = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.lap, groups=3)
        return self.net(torch.cat([x * 2 - 1, hp * 4, cond * 2 - 1], 1))


class ReDegTask:
    """TrainTask (see sdtool.train.task): model = ReDeg, modules = {redeg, disc}, optimizers = {g, d}.
    train_step gets real LR crops N×3×p×p and HR crops N×3×4p×4p, or N×6×4p×4p with the pseudo-HR crops
    stacked after the HR ones (`PairedCropSampler` with a pseudo-HR folder)."""

    kind = "redeg"

    def __init__(self, config: ReDegConfig = ReDegConfig(), weights: ReDegLossWeights = ReDegLossWeights(),
                 lr: float = 2e-4, betas: tuple[float, float] = (0.9, 0.99), grad_clip: float = 10.0,
                 device: "str | torch.device" = "cpu", seed: int = 0, perceptual: Optional[nn.Module] = None) -> None:
        from sdtool.degrade.classic import ClassicDegradation

        self.device = torch.device(device)
        self.w, self.grad_clip, self.seed = weights, grad_clip, seed
        torch.manual_seed(seed)
        self.model = ReDeg(config).to(self.device)
        self.disc = CondDiscriminator().to(self.device)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=betas)
        self.classic = ClassicDegradation()
        if perceptual is None:
            from sdtool.metrics.lpips import get_lpips

            perceptual = get_lpips(self.device)
        self.perceptual = perceptual

    def modules(self) -> dict[str, nn.Module]:
        return {"redeg": self.model, "disc": self.disc}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.opt_g, "d": self.opt_d}

    def export_metadata(self) -> dict[str, str]:
        return redeg_export_metadata(self.model)

    def _render_loss(self, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        lpips = perceptual_distance(self.perceptual, fake * 2 - 1, real * 2 - 1, min_size=self.w.perceptual_size)
        return (fake - real).abs().mean(), lpips

    def _check(self, losses: dict[str, Tensor]) -> None:
        bad = [k for k, v in losses.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise NonFiniteLoss(f"non-finite ReDeg loss: {', '.join(bad)}")

    def train_step(self, lr: Tensor, hr: Tensor, it: int) -> dict[str, float]:
        """One D step and one G step on aligned crops (see the class docstring), [0,1]."""
        w, s = self.w, self.model.config.scale
        gen = torch.Generator().manual_seed(stable_seed("redeg", self.seed, it))
        lr, hr = lr.to(self.device), hr.to(self.device)
        hr, pseudo = (hr[:, :3], hr[:, 3:]) if hr.shape[1] == 6 else (hr, None)
        deg_hr = hr
        if pseudo is not None:
            use = (torch.rand(hr.shape[0], generator=gen) < w.pseudo_prob).to(self.device).view(-1, 1, 1, 1)
            deg_hr = torch.where(use, pseudo, hr)
        omega = self.model.deg(lr, deg_hr)
        noises = self.model.noises(lr.shape[0], lr.shape[-2], lr.shape[-1], generator=gen)
        fake = self.model.syn(hr, omega, noises)
        cond = box_down(hr, s)

        loss_d = d_loss(self.disc(lr, cond), self.disc(fake.detach(), cond))
        self._check({"d": loss_d})
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        nn.utils.clip_grad_norm_(self.disc.parameters(), self.grad_clip)
        self.opt_d.step()

        c_hr, c_lr, labels = classic_batch(self.classic, hr, w.contents, w.degradations, gen)
        c_omega = self.model.deg(c_lr, c_hr)
        c_fake = self.model.syn(c_hr, c_omega, self.model.noises(*c_lr.shape[:1], *c_lr.shape[-2:], generator=gen))
        l1, lp = self._render_loss(fake, lr)
        c_l1, c_lp = self._render_loss(c_fake, c_lr)
        terms = {"l1": l1, "lpips": lp, "gram": gram_loss(self.perceptual, fake, lr, min_size=w.perceptual_size),
                 "gan": g_loss(self.disc(fake, cond)), "contrast": supcon_loss(c_omega, labels, w.contrast_temperature),
                 "classic_recon": c_l1 + c_lp}
        total = (w.l1 * l1 + w.perceptual * lp + w.gram * terms["gram"] + w.gan * terms["gan"]
                 + w.contrast * terms["contrast"] + w.classic_recon * terms["classic_recon"])
        self._check({**terms, "total": total})
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.disc.zero_grad(set_to_none=True)  # D got gradients from the G loss; they are not used
        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt_g.step()
        self.model.remember(omega.detach())
        return {"total": float(total.detach()), "loss_d": float(loss_d.detach()),
                **{k: float(v.detach()) for k, v in terms.items()}}


# ------------------------------------------------------------------------------------------------ data
class PairedCropSampler:
    """Aligned crops of real pairs matched by file name: LR p×p and HR 4p×4p (with the pseudo-HR crop stacked
    after the HR channels when a pseudo-HR bank is given: N×6×4p×4p), with one of the 8 square symmetries.
    Batch `it` depends only on (seed, it): resume is exact."""

    def __init__(self, lr: Any, hr: Any, batch: int, lr_patch: int, seed: int = 0, pseudo: Any = None) -> None:
        from sdtool.errors import DatasetError

        banks = [lr, hr] + ([pseudo] if pseudo is not None else [])
        common = sorted(set.intersection(*(set(b.names) for b in banks)))
        if not common:
            raise DatasetError("ReDeg training: no file name appears in both the LR and the HR folder"
                               + (" and the pseudo-HR folder" if pseudo is not None else ""))
        self.banks, self.batch, self.p, self.seed = banks, batch, lr_patch, seed
        self.pairs = [[b.names.index(n) for b in banks] for n in common]
        for idx in self.pairs:
            big = [banks[k].images[i].shape[:2] for k, i in enumerate(idx)]
            if any(shape != (big[0][0] * 4, big[0][1] * 4) for shape in big[1:]):
                raise DatasetError(f"ReDeg training: {banks[0].names[idx[0]]} is not 4× smaller than its HR image")

    def __call__(self, it: int) -> tuple[Tensor, Tensor]:
        from sdtool.train.data import _augment, _crop, _to_tensor

        g = torch.Generator().manual_seed(stable_seed("redeg-crops", self.seed, it))
        out: list[list[np.ndarray]] = [[] for _ in self.banks]
        for _ in range(self.batch):
            idx = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=g))]
            lr_crop, top, left = _crop(self.banks[0].images[idx[0]], self.p, g)
            code = int(torch.randint(8, (1,), generator=g))
            out[0].append(_augment(lr_crop, code))
            for k in range(1, len(self.banks)):
                big = self.banks[k].images[idx[k]][top * 4 : (top + self.p) * 4, left * 4 : (left + self.p) * 4]
                out[k].append(_augment(big, code))
        return _to_tensor(out[0]), torch.cat([_to_tensor(o) for o in out[1:]], 1)


# ------------------------------------------------------------------------------------------ validation
def omega_distances(model: ReDeg, contents: list[Tensor], degradations: int = 6, seed: int = 0,
                    crop: int = 128) -> tuple[float, float]:
    """The disentanglement check: mean ‖Ω − Ω'‖ between two contents under the same classic degradation,
    and between two degradations of the same content (`stratified_params`, `degradations` of them; HR
    contents 1×3×H×W in [0,1], centre crops crop² so that all stack). Disentangled: the first is smaller."""
    from sdtool.degrade.classic import ClassicDegradation
    from sdtool.degrade.transfer import centre_crop

    g = torch.Generator().manual_seed(seed)
    classic = ClassicDegradation()
    ys = torch.cat([centre_crop(c, crop) for c in contents])
    k = ys.shape[0]
    params = stratified_params(classic, degradations, g)
    y = ys.repeat(degradations, 1, 1, 1)
    x = classic.apply(y, [p for p in params for _ in range(k)], g)
    with torch.no_grad():
        om = model.omega(x, y).reshape(degradations, k, -1).cpu()
    same_deg = torch.cdist(om, om)  # per degradation: content × content
    same_content = torch.cdist(om.transpose(0, 1), om.transpose(0, 1))  # per content: degradation × degradation
    off = lambda d: d.sum() / (d.shape[0] * d.shape[1] * (d.shape[2] - 1))  # noqa: E731 - mean off the diagonal
    return float(off(same_deg)), float(off(same_content))


def make_redeg_validator(pairs: list[tuple[str, np.ndarray, np.ndarray]], seed: int = 0) -> Callable[[nn.Module],
                                                                                                     dict[str, float]]:
    """Validator for the runner on paired images (name, LR h×w×3, HR 4h×4w×3 in [0,1]): mean LPIPS-alex of
    SynNet(HR, Ω) against the real LR with Ω from the pair itself (real HR: no SR in the loop) and from the
    next pair of the list (another image), beside the bicubic /4 image's."""
    from sdtool.metrics.lpips import lpips_distance

    def to_t(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()

    data = [(to_t(lr), to_t(hr)) for _, lr, hr in pairs]
    bicubic = float(np.mean([lpips_distance(F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True)
                                            .clamp(0, 1), lr).item() for lr, hr in data]))

    def validate(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            omegas = [model.omega(lr, hr) for lr, hr in data]
            own, other = [], []
            for i, (lr, hr) in enumerate(data):
                g = torch.Generator().manual_seed(seed + i)
                own.append(lpips_distance(model.render(hr, omegas[i], 1.0, g).clamp(0, 1).cpu(), lr).item())
                g = torch.Generator().manual_seed(seed + i)
                nxt = omegas[(i + 1) % len(data)]
                other.append(lpips_distance(model.render(hr, nxt, 1.0, g).clamp(0, 1).cpu(), lr).item())
            same, diff = omega_distances(model, [hr for _, hr in data[:4]], seed=seed)
        return {"val_lpips_own": float(np.mean(own)), "val_lpips_other": float(np.mean(other)),
                "val_bicubic_lpips": bicubic, "val_omega_same_deg": same, "val_omega_same_content": diff}

    return validate


# ------------------------------------------------------------------------------------- runner and loops
def make_redeg_task(config: str, device: torch.device, settings: Any, overrides: Optional[dict] = None) -> ReDegTask:
    """The ReDegTask for the generic runner: `config` a ReDeg preset (default, tiny; an SDFlow size name
    means default), learning rate / betas / grad_clip / seed from `settings`, loss weights overridden."""
    import dataclasses

    from sdtool.errors import UsageError
    from sdtool.model.redeg import REDEG_PRESETS

    name = "default" if config in ("", "paper", "lite") else config
    if name not in REDEG_PRESETS:
        raise UsageError(f"unknown ReDeg size {name!r}; choose one of {sorted(REDEG_PRESETS)}")
    weights = dataclasses.replace(ReDegLossWeights(), **(overrides or {}))
    return ReDegTask(REDEG_PRESETS[name], weights, lr=float(settings.lr), betas=tuple(settings.betas),
                     grad_clip=float(settings.grad_clip), device=device, seed=int(settings.seed))


def fit_redeg(lr_images: list[Tensor], hr_images: list[Tensor], steps: int, config: ReDegConfig = ReDegConfig(),
              weights: ReDegLossWeights = ReDegLossWeights(), batch: int = 4, lr_patch: int = 16, seed: int = 0,
              lr: float = 2e-4, perceptual: Optional[nn.Module] = None) -> tuple[ReDeg, list[dict[str, float]]]:
    """Train ReDeg on aligned pairs (LR 3×h×w, HR 3×4h×4w in [0,1]) in a plain loop, no checkpoints; returns
    (model in eval mode, the losses of every step). Deterministic for a seed on one device."""
    task = ReDegTask(config, weights, lr=lr, seed=seed, perceptual=perceptual)
    g = torch.Generator().manual_seed(seed)
    history = []
    for it in range(1, steps + 1):
        xs, ys = [], []
        for i in torch.randint(len(lr_images), (batch,), generator=g).tolist():
            x, y = lr_images[i], hr_images[i]
            top = int(torch.randint(x.shape[-2] - lr_patch + 1, (1,), generator=g))
            left = int(torch.randint(x.shape[-1] - lr_patch + 1, (1,), generator=g))
            xs.append(x[:, top : top + lr_patch, left : left + lr_patch])
            ys.append(y[:, 4 * top : 4 * (top + lr_patch), 4 * left : 4 * (left + lr_patch)])
        history.append(task.train_step(torch.stack(xs), torch.stack(ys), it))
    return task.model.eval(), history


def load_pseudo_bank(folder: Path, min_size: int) -> Any:
    """The pseudo-HR images (an SR model's x4 outputs of the LR training images, same file names)."""
    from sdtool.train.data import ImageBank, list_images

    return ImageBank(list_images(folder), min_size)
