"""Training a feed-forward x4 SR network on (LR, HR) pairs (TrainTask for `sdtool train --model sr`).

Two phases, as ESRGAN (Wang et al. 2018, Sec. 3.4) and Real-ESRGAN (Wang et al. 2021, Sec. 4.1) train:
  1. up to `gan_start`: L1 only, a PSNR-oriented network;
  2. after it: l1·L1 + perceptual·LPIPS-alex + gan·(non-saturating GAN loss against a spectral-normalised
     patch discriminator on HR crops). Real-ESRGAN's weights 1 / 1 / 0.1; LPIPS-alex stands in for its VGG
     perceptual loss (shipped offline in weights/).
In both phases, `lattice` > 0 adds the lattice term of SDFlow training (`losses.lattice_loss`): the output's
period-4 pattern above the HR crops' own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from sdtool.nets.discriminator import PatchDiscriminator
from sdtool.train import losses as L
from sdtool.train.dist import average_gradients
from sdtool.train.task import NonFiniteLoss

# A light discriminator: SDFlow's (width 64, up to 256 channels) costs 5 s a step for 16 HR crops of 128² on one
# CPU thread; width 16 up to 64 channels, 0.24 s.
DISC_WIDTH, DISC_MAX_WIDTH = 16, 64


@dataclass(frozen=True)
class SRLossWeights:
    """Loss weights of SR training [Real-ESRGAN]; gan_start: the last iteration of the L1-only phase."""

    l1: float = 1.0
    perceptual: float = 1.0
    gan: float = 0.1
    lattice: float = 10.0  # period-4 grid of the output above the HR crops' own (train/losses.lattice_loss) [ours]:
    #   a pixel shuffle over a nearest-neighbour skip leaves one (0.6-1.3 grey levels after 2500 iterations without
    #   this term; 0.1 after 300 more with it at 10, README "SR networks")
    gan_start: int = 0


class SRTask:
    """TrainTask (see `sdtool.train.task`): model = the SR net, modules {model, disc}, optimizers {g, d}."""

    kind = "sr"

    def __init__(self, model: nn.Module, weights: SRLossWeights = SRLossWeights(), lr: float = 2e-4,
                 betas: tuple[float, float] = (0.9, 0.99), grad_clip: float = 10.0, seed: int = 0,
                 perceptual: Optional[nn.Module] = None, provenance: Optional[dict] = None):
        self.model, self.w, self.grad_clip = model, weights, grad_clip
        self.perceptual = perceptual
        self.provenance = provenance or {}
        with torch.random.fork_rng(devices=[]):  # its start must not depend on what drew from the RNG before
            torch.manual_seed(seed + 7919)
            self.disc = PatchDiscriminator(3, DISC_WIDTH, n_down=3, max_width=DISC_MAX_WIDTH).to(model.device)
        self.opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=betas)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "disc": self.disc}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.opt_g, "d": self.opt_d}

    def export_metadata(self) -> dict[str, str]:
        from sdtool.model.sr import sr_metadata

        return {**sr_metadata(self.model), "loss_weights": json.dumps(asdict(self.w), sort_keys=True),
                "training": json.dumps(self.provenance, sort_keys=True)}

    def gan_phase(self, it: int) -> bool:
        return it > self.w.gan_start

    def train_step(self, lr: Tensor, hr: Tensor, it: int) -> dict[str, float]:
        """One step on LR N×3×p×p and HR N×3×4p×4p in [0, 1]; NonFiniteLoss before any weight changes."""
        device = self.model.device
        lr, hr = lr.to(device), hr.to(device)
        self.model.train()
        sr = self.model(lr)
        l1 = (sr - hr).abs().mean()
        losses = {"l1": l1}
        total = self.w.l1 * l1
        if self.w.lattice:
            losses["lattice"] = L.lattice_loss(sr, hr)
            total = total + self.w.lattice * losses["lattice"]
        loss_d = None
        if self.gan_phase(it):
            if self.perceptual is not None and self.w.perceptual > 0:
                losses["perceptual"] = self.perceptual(sr.clamp(0, 1), hr).mean()
                total = total + self.w.perceptual * losses["perceptual"]
            losses["gan"] = L.g_loss(self.disc(sr))
            total = total + self.w.gan * losses["gan"]
            loss_d = L.d_loss(self.disc(hr), self.disc(sr.detach()))
            losses["d"] = loss_d
        losses["total"] = total
        logs = {k: float(v.detach()) for k, v in losses.items()}
        bad = [k for k, v in logs.items() if not torch.isfinite(torch.tensor(v))]
        if bad:
            raise NonFiniteLoss(f"non-finite SR loss at iteration {it}: " + ", ".join(f"{k}={logs[k]}" for k in bad))
        self._step(self.opt_g, total, list(self.model.parameters()))
        if loss_d is not None:
            self._step(self.opt_d, loss_d, list(self.disc.parameters()))
        return logs

    def _step(self, opt: torch.optim.Optimizer, loss: Tensor, params: list) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params)
        nn.utils.clip_grad_norm_(params, self.grad_clip)
        opt.step()
