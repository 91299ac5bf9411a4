"""Training SDFlow on unpaired LR and HR crops: the losses of the method doc, two optimisers."""

from __future__ import annotations

import contextlib
import json
from typing import Optional

import torch
from torch import Tensor, nn

from sdtool.degrade.ops import gaussian_blur
from sdtool.model.sdflow import SDFlow
from sdtool.nets.discriminator import PatchDiscriminator
from sdtool.resize import imresize
from sdtool.train import losses as L
from sdtool.train.config import DEFAULT_LR, LossWeights
from sdtool.train.domain_blur import domain_target
from sdtool.train.dist import average_gradients
from sdtool.train.task import NonFiniteLoss, stable_seed


def load_perceptual(device: torch.device) -> Optional[nn.Module]:
    """LPIPS-alex (offline weights in weights/) as the perceptual loss; None when unavailable."""
    try:
        from sdtool.metrics.lpips import get_lpips

        return get_lpips(device)
    except Exception:  # missing weights: train without the perceptual terms, said in the log
        return None


@contextlib.contextmanager
def _frozen(*nets: nn.Module):
    """No parameter gradients for `nets` inside (their input gradients still flow). The generator's step
    backpropagates through the discriminators; their weight gradients there were computed and then thrown away by
    the discriminator step's zero_grad, a third of the step's discriminator work. Same numbers."""
    params = [p for net in nets for p in net.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class SDFlowTask:
    """Losses (1) NLL of both domains, (2) content, (3) latent domain adversarial + β₁, β₂ penalties,
    (4) after `image_loss_start`, image-space L1 + perceptual + GAN on generated SR and LR images."""

    kind = "sdflow"

    def __init__(
        self, model: SDFlow, weights: LossWeights = LossWeights(), lr: float = DEFAULT_LR,
        betas: tuple[float, float] = (0.9, 0.999), grad_clip: float = 10.0, seed: int = 0,
        paired: bool = False, amp: bool = True, perceptual: Optional[nn.Module] = None, channels_last: bool = True,
    ):
        self.model = model
        self.w = weights
        self.grad_clip = grad_clip
        self.seed = seed
        self.paired = paired
        device = model.device
        self.amp = amp and device.type == "cuda"
        self.perceptual = perceptual
        self.last_lattice = float("nan")
        self._window: tuple[slice, slice] = (slice(None), slice(None))
        self._sr_windows: dict[str, tuple[slice, slice]] = {}  # HR-pixel windows of this step's cropped SR samples
        self._all_initialised = False
        # Seeded on their own: their start must not depend on what else drew from the global RNG before
        # (loading LPIPS the first time does), or a resumed run would not repeat a straight one.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 7919)
            self.d_latent = PatchDiscriminator(3, 64, n_down=1).to(device)
            self.d_hr = PatchDiscriminator(3, 64, n_down=3).to(device)
            self.d_lr = PatchDiscriminator(3, 64, n_down=2).to(device)
        # Channels-last activations run the many small convolutions of a step about 15 % faster on a CPU
        # (oneDNN's native layout; measured in scripts/check_train_losses.py) with the same losses.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for net in (model, self.d_latent, self.d_hr, self.d_lr, perceptual):
            if net is not None:
                net.to(memory_format=self.memory_format)
        d_params = [p for d in (self.d_latent, self.d_hr, self.d_lr) for p in d.parameters()]
        # foreach: one multi-tensor update instead of a Python loop over ~350 tensors (the same numbers; PyTorch
        # turns it on by default on CUDA only)
        self.opt_g = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, foreach=True)
        self.opt_d = torch.optim.Adam(d_params, lr=lr, betas=(0.5, 0.999), foreach=True)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "d_latent": self.d_latent, "d_hr": self.d_hr, "d_lr": self.d_lr}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.opt_g, "d": self.opt_d}

    def export_metadata(self) -> dict[str, str]:
        return {"config": self.model.config.to_json(), "loss_weights": json.dumps(self.w.__dict__, sort_keys=True)}

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def image_phase(self, it: int) -> bool:
        return it > self.w.image_loss_start

    def train_step(self, lr: Tensor, hr: Tensor, it: int) -> dict[str, float]:
        m, w = self.model, self.w
        device = m.device
        g = torch.Generator().manual_seed(stable_seed("sdflow", self.seed, it))
        x = L.dequantize(lr.to(device), g).contiguous(memory_format=self.memory_format)
        y = L.dequantize(hr.to(device), g).contiguous(memory_format=self.memory_format)
        m.train()
        logs: dict[str, float] = {}
        nll_now = it % w.nll_every == 0 or not self._initialised()
        with self._autocast(), _frozen(self.d_latent, self.d_hr, self.d_lr):
            if nll_now:
                logp_hr, zc_hr = m.hr_log_prob(y)
                logp_lr, parts = m.lr_log_prob(x)
                nll_hr, nll_lr = L.bits_per_dim(logp_hr, y), L.bits_per_dim(logp_lr, x)
            else:  # only the latents the other terms use: no HF or degradation flow
                zc_hr = m.hr_latents(y)[0]
                parts = {"z_lr": m.lr_flow(x)[0], "z_c": m.extractor(x)}
                nll_hr = nll_lr = y.new_zeros(())
            zc_lr = parts["z_c"]
            self._window = self._draw_window(y.shape[-1], self.w.d_hr_crop, g)
            y_bic = imresize(y, 0.25)
            image = self.image_phase(it)
            decoded = self._decode_lr(zc_hr, zc_lr, self._draw_degradation(zc_hr, g) if image else None)
            content = L.content_loss(decoded["hr"], y_bic, self.perceptual, w.content_perceptual)
            content = content + L.content_loss(decoded["lr"], x, self.perceptual, w.content_perceptual)
            if self.paired:  # pairs let the two content latents be matched directly
                content = content + (zc_lr - zc_hr).abs().mean()
            # Both domains try to make their content indistinguishable (flipped labels).
            adv = L.g_loss(-self.d_latent(zc_hr)) + L.g_loss(self.d_latent(zc_lr))
            zc_l2 = zc_hr.pow(2).mean() + zc_lr.pow(2).mean()
            deg_l2 = (parts["z_lr"] - zc_lr.detach()).pow(2).mean()
            total = (w.nll * w.nll_every * (nll_hr + nll_lr) + w.content * content + w.latent_adv * adv
                     + w.zc_l2 * zc_l2 + w.deg_l2 * deg_l2)
            fakes = {}
            if image:
                img_loss, fakes = self._image_losses(x, y, y_bic, zc_lr, zc_hr, decoded, g)
                total = total + img_loss
                logs["image"] = float(img_loss.detach())
                if self.w.lattice:
                    logs["lattice"] = self.last_lattice
        if nll_now:
            logs.update(nll_hr=float(nll_hr.detach()), nll_lr=float(nll_lr.detach()))
        logs.update(content=float(content.detach()),
                    latent_adv=float(adv.detach()), zc_l2=float(zc_l2.detach()), deg_l2=float(deg_l2.detach()),
                    total=float(total.detach()))
        if not torch.isfinite(total):
            raise NonFiniteLoss(f"non-finite loss at iteration {it}: " + ", ".join(f"{k}={v:.4g}" for k,
                                                                                   v in logs.items()))
        self._step(self.opt_g, total, list(m.parameters()))
        if it % self.w.d_every == 0:
            logs["d"] = self._discriminator_step(zc_hr.detach(), zc_lr.detach(), x, y, fakes)
        return logs

    def _initialised(self) -> bool:
        """Whether every ActNorm of the model has had its data-dependent start. Until then each step is an NLL step,
        so that the HF and degradation flows start on the first batch, as the other flows do (a later, unlucky
        batch would otherwise set them, inside a step the NaN guard may throw away)."""
        if not self._all_initialised:
            flags = [b for name, b in self.model.named_buffers() if name.endswith("initialized")]
            self._all_initialised = all(bool(b) for b in flags)
        return self._all_initialised

    @staticmethod
    def _draw_window(side: int, crop: int, g: torch.Generator) -> tuple[slice, slice]:
        """A crop² window of a side² HR crop at a random offset that is a multiple of 4 (so the 4-px phase the
        lattice term cares about stays aligned, and a window is whole content-latent pixels); the whole crop (open
        slices) when crop is 0 or not smaller than side. The HR discriminator's view of a step and the SR windows
        (cycle_crop, hr_color_crop) are drawn here."""
        if not crop or crop >= side:
            return slice(None), slice(None)
        top, left = (4 * torch.randint((side - crop) // 4 + 1, (2,), generator=g)).tolist()
        return slice(top, top + crop), slice(left, left + crop)

    def _d_hr(self, img: Tensor) -> Tensor:
        rows, cols = self._window
        return self.d_hr(img[:, :, rows, cols])

    def _draw_degradation(self, zc_hr: Tensor, g: torch.Generator) -> dict[str, Tensor]:
        """Gaussianised degradation latents for the HR crops: a sample at the training temperature and, with
        ds_mode_l1, the mode of the same mixture component (no noise)."""
        m, tau = self.model, self.w.sample_temperature
        n, _, h, wd = zc_hr.shape
        comp = torch.randint(m.n_components, (n,), generator=g).to(zc_hr.device)
        noise = torch.randn(m.downscale_noise_shape(n, 4 * h, 4 * wd), generator=g).to(zc_hr.device)
        out = {"ds": m.deg_prior.sample(noise, tau, comp)}
        if self.w.ds_mode_l1:
            out["mode"] = m.deg_prior.sample(torch.zeros_like(noise), 0.0, comp)
        return out

    def _decode_lr(self, zc_hr: Tensor, zc_lr: Tensor, degradations: Optional[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Every LR image of a step in one pass of the LR flow (one batch runs faster on a CPU than four):
        "hr" and "lr" decode the two content latents without degradation (content loss); "ds" and "mode"
        (when given) add the degradation flow's inverse of those latents to the HR content, whose condition
        features are computed once for both. Same maths as `SDFlow.lr_from_content` per image."""
        m = self.model
        names, latents = ["hr", "lr"], [zc_hr, zc_lr]
        if degradations:
            k = len(degradations)
            # Channels-last like the activations (the latents are drawn NCHW): see SDFlow.sr_from_content.
            z_dp = torch.cat(list(degradations.values())).contiguous(memory_format=self.memory_format)
            z_d, _ = m.deg_flow.inverse_repeated(z_dp, zc_hr)
            names += list(degradations)
            latents += list((zc_hr.repeat(k, 1, 1, 1) + z_d).split(zc_hr.shape[0]))
        images, _ = m.lr_flow.inverse(torch.cat(latents).contiguous(memory_format=self.memory_format))
        return dict(zip(names, images.split([z.shape[0] for z in latents])))

    def _image_losses(self, x, y, y_bic, zc_lr, zc_hr, decoded, g) -> tuple[Tensor, dict[str, Tensor]]:
        w = self.w
        ds = decoded["ds"]
        # Downscaled images keep the HR content, softened by the LR domain's blur (estimated without pairs,
        # see train/domain_blur.py); the GAN asks them to look like real LR images.
        target = domain_target(y_bic, w.ds_target_blur, w.ds_target_chroma_blur)
        loss = w.ds_l1 * (L.low_pass(ds) - L.low_pass(target)).abs().mean() + w.ds_gan * L.g_loss(self.d_lr(ds))
        if w.ds_color:
            loss = loss + w.ds_color * L.color_low_freq(ds, y_bic, 2.0)
        if w.ds_mode_l1:  # the mode of the degradation distribution: the softened image, no noise
            loss = loss + w.ds_mode_l1 * (decoded["mode"] - target).abs().mean()
        if self.perceptual is not None and w.ds_perceptual:
            loss = loss + w.ds_perceptual * L.perceptual_distance(self.perceptual, ds, target)
        fakes = {"ds": ds.detach()}
        if w.image_sr:
            sr = self._sr_samples(zc_lr, zc_hr, ds, g)
            sr_loss, fakes["sr"] = self._sr_image_loss(x[: sr["lr"].shape[0]], sr["lr"])
            loss = loss + w.image_sr * (sr_loss + self._cycle_loss(y, zc_hr, sr) + self._hr_color_loss(y, sr)
                                        + self._lattice_loss(y, sr))
        return loss, fakes

    def _cycle_count(self, n: int) -> int:
        return self._fraction(n, self.w.cycle_fraction)

    @staticmethod
    def _fraction(n: int, f: float) -> int:
        return max(1, round(n * f))

    def _cycle_enabled(self) -> bool:
        return bool(self.w.cycle_l1 or self.w.cycle_perceptual or self.w.cycle_latent)

    def _sr_samples(self, zc_lr: Tensor, zc_hr: Tensor, ds: Tensor, g: torch.Generator) -> dict[str, Tensor]:
        """SR samples at the training temperature, in one pass of the HF and HR flows where their sizes agree:
        "lr" from the real LR crops' content, "cycle" (with the content "cycle_zc") from the extractor on the
        generated LR images, "hr" from the HR crops' own content for half the batch (colour anchor). With
        cycle_crop / hr_color_crop, those two decode a random window of their content instead, in one more pass
        per window size (their HR windows in self._sr_windows). The noise is drawn in that order from g."""
        m, w = self.model, self.w
        contents: dict[str, Tensor] = {"lr": zc_lr[: self._fraction(zc_lr.shape[0], w.sr_fraction)]}
        noises = [self._noise(contents["lr"], g)]
        out: dict[str, Tensor] = {}
        alone: dict[str, Tensor] = {}
        self._sr_windows = {}

        def add(name: str, z_c: Tensor, crop: int) -> None:
            rows, cols = self._draw_window(4 * z_c.shape[-1], crop - crop % 4, g)  # whole content pixels
            if rows.start is None:  # the whole crop: in the shared pass
                contents[name] = z_c
                noises.append(self._noise(z_c, g))
                return
            self._sr_windows[name] = rows, cols
            alone[name] = z_c[:, :, rows.start // 4: rows.stop // 4, cols.start // 4: cols.stop // 4]

        if self._cycle_enabled():
            lr_in = ds.detach()[: self._cycle_count(ds.shape[0])].clamp(-1, 1)  # detached: the downscaler cannot
            #   hide detail for the upscaler
            if w.cycle_input_blur > 0:
                u = float(torch.rand((), generator=g))
                lr_in = gaussian_blur(lr_in, 2 * w.cycle_input_blur * u)
            out["cycle_zc"] = m.extractor(lr_in)
            add("cycle", out["cycle_zc"], w.cycle_crop)
        if w.hr_color:  # half the batch is enough for a low-frequency statistic
            add("hr", zc_hr[: max(1, zc_hr.shape[0] // 2)], w.hr_color_crop)
        z_c = torch.cat(list(contents.values()))
        sr = m.sr_from_content(z_c, self._temperatures(z_c.shape[0], g).to(z_c.device) * torch.cat(noises))
        out.update(zip(contents, sr.split([z.shape[0] for z in contents.values()])))
        for size in dict.fromkeys(z.shape[-2:] for z in alone.values()):  # one more pass per window size
            names = [k for k, z in alone.items() if z.shape[-2:] == size]
            z_c = torch.cat([alone[k] for k in names])
            noise = torch.cat([self._noise(alone[k], g) for k in names])
            sr = m.sr_from_content(z_c, self._temperatures(z_c.shape[0], g).to(z_c.device) * noise)
            out.update(zip(names, sr.split([alone[k].shape[0] for k in names])))
        return out

    def _hr_target(self, y: Tensor, name: str, n: int) -> Tensor:
        """The first n HR crops, cut to the window that the SR samples `name` decode."""
        rows, cols = self._sr_windows.get(name, (slice(None), slice(None)))
        return y[:n, :, rows, cols]

    def _temperatures(self, n: int, g: torch.Generator) -> Tensor:
        """Per-sample SR temperature (n×1×1×1): sample_temperature, or U(sr_temperature_min, it)."""
        hi, lo = self.w.sample_temperature, self.w.sr_temperature_min
        if lo < 0:
            return torch.full((n, 1, 1, 1), hi)
        return lo + (hi - lo) * torch.rand((n, 1, 1, 1), generator=g)

    def _noise(self, z_c: Tensor, g: torch.Generator) -> Tensor:
        n, _, h, wd = z_c.shape
        return torch.randn(self.model.upscale_noise_shape(n, h, wd), generator=g).to(z_c.device)

    def _sr_image_loss(self, x: Tensor, sr: Tensor) -> tuple[Tensor, Tensor]:
        """SR samples of real LR crops: consistent with their LR input, realistic for the HR discriminator."""
        w = self.w
        sr_lr = imresize(sr, 0.25)
        loss = w.image_l1 * (L.low_pass(sr_lr) - L.low_pass(x)).abs().mean()
        if w.sr_color:
            loss = loss + w.sr_color * L.color_low_freq(sr_lr, x, 2.0)
        if self.perceptual is not None and w.image_perceptual:
            loss = loss + w.image_perceptual * L.perceptual_distance(self.perceptual, sr_lr, x)
        return loss + w.image_gan * L.g_loss(self._d_hr(sr)), sr.detach()

    def _hr_color_loss(self, y: Tensor, sr: dict[str, Tensor]) -> Tensor:
        """An HR image's own content with fresh HF noise must decode to the same colours: measured, the HF
        latent carried whole-region colour (22 grey levels of green), so sampling it changed colours."""
        if "hr" not in sr:
            return y.new_zeros(())
        return self.w.hr_color * L.color_low_freq(sr["hr"], self._hr_target(y, "hr", sr["hr"].shape[0]), 8.0)

    def _lattice_loss(self, y: Tensor, sr: dict[str, Tensor]) -> Tensor:
        """Every SR sample of the step, held to the HR crops' own level of 4-px periodic pattern."""
        if not self.w.lattice:
            return y.new_zeros(())
        # Samples of the whole crop in one call; windows each against HR crops of their own size (a photo's chance
        # lattice power grows as the area shrinks); the mean over all samples.
        whole = [k for k in ("lr", "cycle", "hr") if k in sr and k not in self._sr_windows]
        groups = [(torch.cat([sr[k] for k in whole]), y)]
        groups += [(sr[k], self._hr_target(y, k, y.shape[0])) for k in self._sr_windows]
        n = sum(s.shape[0] for s, _ in groups)
        loss = sum(L.lattice_loss(s, t) * (s.shape[0] / n) for s, t in groups)
        self.last_lattice = float(loss.detach())  # logged by train_step
        return self.w.lattice * loss

    def _cycle_loss(self, y: Tensor, zc_hr: Tensor, sr: dict[str, Tensor]) -> Tensor:
        """HR → own degradation sample → extractor → SR sample, scored against the HR crop."""
        w = self.w
        if "cycle" not in sr:
            return y.new_zeros(())
        k = sr["cycle"].shape[0]
        loss = w.cycle_latent * (sr["cycle_zc"] - zc_hr[:k].detach()).abs().mean()
        target = self._hr_target(y, "cycle", k)
        loss = loss + w.cycle_l1 * (sr["cycle"] - target).abs().mean()
        if self.perceptual is not None and w.cycle_perceptual:
            loss = loss + w.cycle_perceptual * L.perceptual_distance(self.perceptual, sr["cycle"], target)
        return loss

    def _discriminator_step(self, zc_hr, zc_lr, x, y, fakes) -> float:
        with self._autocast():
            loss = L.d_loss(self.d_latent(zc_hr), self.d_latent(zc_lr))
            if "sr" in fakes:
                loss = loss + L.d_loss(self._d_hr(y), self._d_hr(fakes["sr"]))
            if "ds" in fakes:
                loss = loss + L.d_loss(self.d_lr(x), self.d_lr(fakes["ds"]))
        if not torch.isfinite(loss):
            return float("nan")  # a bad discriminator batch is skipped on its own
        params = [p for d in (self.d_latent, self.d_hr, self.d_lr) for p in d.parameters()]
        self._step(self.opt_d, loss, params)
        return float(loss.detach())

    def _step(self, opt: torch.optim.Optimizer, loss: Tensor, params: list[nn.Parameter]) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params)
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            raise NonFiniteLoss("non-finite gradient norm")
        opt.step()
