"""SDFlow (Sun & Chen, TPAMI 2024): one normalizing-flow model for unpaired x4 SR and realistic downscaling.

Latents (images in [-1, 1] inside the model; h×w is the LR size, H = 4h):
  HR flow      y (3×H×W)  → [z_c (3×h×w), z_h (45×h×w)]       content | high-frequency detail
  HF flow      z_h | z_c  → z_h' ~ N(0, I)
  LR flow      x (3×h×w)  → z_LR (3×h×w)
  extractor    x          → z_c (3×h×w)                        LR content
  deg flow     z_d = z_LR − z_c | z_c → z_d' ~ mixture of K scalar Gaussians (12×h/2×w/2)
SR samples z_h' and inverts HR ∘ HF from the LR content; downscaling samples z_d' and inverts LR ∘ deg
from the HR content.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from sdtool.config import DEFAULT_DOWN_TEMPERATURE, DEFAULT_SR_TEMPERATURE, SDFlowConfig
from sdtool.errors import NonFiniteOutputError
from sdtool.flows import (
    ConditionalFlow, FlowStep, MixtureOfGaussians, Sequential, Squeeze, StandardNormal, Unsqueeze, transition,
)
from sdtool.flows.priors import randn
from sdtool.inputs import check_image, check_temperature
from sdtool.model.lattice import remove_lattice
from sdtool.nets.extractor import ContentExtractor
from sdtool.nets.precision import set_compute_dtype
from sdtool.nets.rrdb import ConditionNet, SqueezedConditionNet
from sdtool.padding import pad_to

CONTENT_CHANNELS = 3
HF_CHANNELS = 45  # 48 channels after two squeezes minus the 3 content channels
DEG_CHANNELS = 12  # degradation latent after one squeeze

Component = Union[None, int, Tensor]
CHANNELS_LAST = torch.channels_last


def _nhwc(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=CHANNELS_LAST)


def _steps(n: int, channels: int, hidden: int, cond: int = 0, last_coupling: bool = True) -> list:
    return [FlowStep(channels, hidden, cond, coupling=last_coupling or i < n - 1) for i in range(n)]


def _finite(t: Tensor) -> Tensor:
    """t, or NonFiniteOutputError: a NaN image would otherwise be written as a flat grey picture."""
    if not bool(torch.isfinite(t).all()):
        raise NonFiniteOutputError("the model produced NaN or infinite values (are the weights corrupt?)")
    return t


class SDFlow(nn.Module):
    """The four flows, the content extractor and the two priors of SDFlow, built from a config."""

    def __init__(self, config: SDFlowConfig):
        super().__init__()
        self.config = c = config
        nf, gc, cc, hid = c.rrdb_nf, c.rrdb_gc, c.cond_channels, c.hidden
        self.hr_flow = Sequential(
            [Squeeze(), *transition(12), *_steps(c.hr_steps[0], 12, hid),
             Squeeze(), *transition(48), *_steps(c.hr_steps[1], 48, hid)]
        )
        self.hf_flow = ConditionalFlow(
            ConditionNet(CONTENT_CHANNELS, cc, c.hf_rrdb, nf, gc),
            Sequential(_steps(c.hf_steps, HF_CHANNELS, hid, cc, last_coupling=False)),
        )
        self.hf_prior = StandardNormal()
        self.lr_flow = Sequential(
            [Squeeze(), *transition(12), *_steps(c.lr_steps, 12, hid), *transition(12), Unsqueeze()]
        )
        self.extractor = ContentExtractor(c.enc_nc, c.enc_blocks, c.enc_mf_convs)
        self.deg_flow = ConditionalFlow(
            SqueezedConditionNet(CONTENT_CHANNELS, cc, c.deg_rrdb, nf, gc),
            Sequential([Squeeze(), *transition(DEG_CHANNELS),
                        *_steps(c.deg_steps, DEG_CHANNELS, hid, cc, last_coupling=False)]),
        )
        self.deg_prior = MixtureOfGaussians(c.n_gaussian)
        # Channels-last (NHWC) weights and activations: oneDNN's native layout on CPUs, measured 1.2× faster
        # for `paper` SR and 1.15× for a training step than NCHW (scripts/bench_speed.py); same results.
        self.to(memory_format=CHANNELS_LAST)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def n_components(self) -> int:
        return self.deg_prior.n_components

    @staticmethod
    def upscale_noise_shape(n: int, h: int, w: int) -> tuple[int, int, int, int]:
        """Shape of the standard-normal noise for SR of an N×3×h×w LR image."""
        return (n, HF_CHANNELS, max(h, 2), max(w, 2))

    @staticmethod
    def downscale_noise_shape(n: int, h: int, w: int) -> tuple[int, int, int, int]:
        """Shape of the standard-normal noise for downscaling an N×3×H×W HR image (padded to multiples of 8, at
        least 16)."""
        return (n, DEG_CHANNELS, max(2, math.ceil(h / 8)), max(2, math.ceil(w / 8)))

    def set_compute_dtype(self, dtype: Optional[torch.dtype]) -> int:
        """Run the plain CNN parts (condition networks, content extractor) in `dtype` (bf16/fp16 on CUDA;
        None: float32); the flows stay float32 (see `sdtool.nets.precision`). Returns how many CNNs."""
        return set_compute_dtype(self, dtype)

    # ------------------------------------------------------------ latent-level maps ([-1, 1])
    def hr_latents(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """y: B×3×H×W (H, W multiples of 4) → z_c B×3×H/4×W/4, z_h B×45×H/4×W/4, logdet (B,)."""
        z, logdet = self.hr_flow(y)
        return z[:, :CONTENT_CHANNELS], z[:, CONTENT_CHANNELS:], logdet

    def hr_log_prob(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """log p(y) in nats per image (B,) through HR + HF flows, and z_c. No prior on z_c (it is
        matched to LR content instead); the HF condition is detached as in the authors' code."""
        z_c, z_h, logdet = self.hr_latents(y)
        z_hp, logdet_hf = self.hf_flow(z_h, z_c.detach())
        return logdet + logdet_hf + self.hf_prior.log_prob(z_hp), z_c

    def lr_log_prob(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """log p(x) (B,) through LR + degradation flows; x: B×3×h×w with h, w even.

        Returns the log-density and the latents z_lr, z_c, z_d, z_dp (Gaussianised degradation),
        and the parts logdet_lr and logp_deg (deg-flow log-det plus mixture density)."""
        z_lr, logdet_lr = self.lr_flow(x)
        z_c = self.extractor(x)
        z_d = z_lr - z_c
        z_dp, logdet_deg = self.deg_flow(z_d, z_c)
        logp_deg = logdet_deg + self.deg_prior.log_prob(z_dp)
        parts = {"z_lr": z_lr, "z_c": z_c, "z_d": z_d, "z_dp": z_dp, "logdet_lr": logdet_lr, "logp_deg": logp_deg}
        return logdet_lr + logp_deg, parts

    def sr_from_content(self, z_c: Tensor, z_hp: Tensor) -> Tensor:
        """z_c B×3×h×w, z_h' B×45×h×w → SR image B×3×4h×4w in [-1, 1] (unclamped)."""
        # Channels-last latents: a flow keeps its input's layout, and noise drawn by randn is NCHW, which ran every
        # convolution of the HF and HR flows 1.5–3× slower (oneDNN reorders; measured in scripts/bench_speed.py).
        z_c, z_hp = _nhwc(z_c), _nhwc(z_hp)
        z_h, _ = self.hf_flow.inverse(z_hp, z_c)
        y, _ = self.hr_flow.inverse(torch.cat([z_c, z_h], dim=1))
        return y

    def lr_from_content(self, z_c: Tensor, z_dp: Optional[Tensor] = None) -> Tensor:
        """z_c B×3×h×w (h, w even) and Gaussianised degradation z_d' (None = no degradation) → LR image."""
        z = z_c = _nhwc(z_c)  # channels-last, as in sr_from_content
        if z_dp is not None:
            z_d, _ = self.deg_flow.inverse(_nhwc(z_dp), z_c)
            z = z_c + z_d
        x, _ = self.lr_flow.inverse(z)
        return x

    def draw_components(self, n: int, component: Component, generator: Optional[torch.Generator]) -> Tensor:
        """Mixture component per image: given (int or (N,) tensor) or drawn uniformly from the generator."""
        if component is None:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            comp = torch.randint(self.n_components, (n,), generator=generator, device=gen_device)
        else:
            comp = torch.as_tensor(component, dtype=torch.long).reshape(-1).expand(n)
        if int(comp.min()) < 0 or int(comp.max()) >= self.n_components:
            raise ValueError(f"mixture component must be in 0..{self.n_components - 1}, got {comp.tolist()}")
        return comp.to(self.device)

    # ------------------------------------------------------------------ public API ([0, 1])
    @torch.no_grad()
    def upscale(
        self, x: Tensor, temperature: float = DEFAULT_SR_TEMPERATURE, generator: Optional[torch.Generator] = None,
        noise: Optional[Tensor] = None, delattice: bool = True,
    ) -> Tensor:
        """x4 super-resolution. x: float N×3×h×w in [0, 1] → N×3×4h×4w in [0, 1], on x's device.

        noise: standard normal of shape `upscale_noise_shape(N, h, w)`; drawn from `generator` if None.
        The HF latent is temperature·noise (τ = 0 gives the mean sample). The sample comes back as the model
        makes it: the colour guard is post-processing, applied once by `sdtool.infer` (`sdtool.api.upscale` is
        the one call that gives what `sdtool upscale` writes). delattice: take out the 4-px lattice the HR
        flow's squeezes leave (`sdtool.model.lattice`, a property of this decoder, local enough to run per
        tile); False returns the flow's own sample.
        Raises InputError for any other x (`sdtool.inputs.check_image`), OptionError for a bad temperature."""
        check_image(x)
        check_temperature(temperature)
        out_device = x.device
        n, _, h, w = x.shape
        xp = pad_to(x.to(self.device, torch.float32) * 2 - 1, 1, 2)
        xp = _nhwc(xp)
        if noise is None:
            noise = randn(self.upscale_noise_shape(n, h, w), generator, self.device)
        z_c = self.extractor(xp)
        y = self.sr_from_content(z_c, self.hf_prior.sample(noise.to(self.device, torch.float32), temperature))
        y = ((_finite(y[:, :, : 4 * h, : 4 * w]) + 1) / 2).clamp(0, 1)
        if delattice:
            y = remove_lattice(y).clamp(0, 1)
        return y.to(out_device)

    @torch.no_grad()
    def downscale(
        self, y: Tensor, temperature: float = DEFAULT_DOWN_TEMPERATURE, component: Component = None,
        generator: Optional[torch.Generator] = None, noise: Optional[Tensor] = None, latent: Optional[Tensor] = None,
    ) -> Tensor:
        """Realistic /4 downscaling. y: float N×3×H×W in [0, 1] → N×3×ceil(H/4)×ceil(W/4) in [0, 1].

        The degradation latent is μ_k + σ_k·τ·noise with one mixture component k per image
        (`component`, or drawn from `generator`); noise has shape `downscale_noise_shape(N, H, W)`.
        latent: the Gaussianised degradation latent z_d' itself (same shape; e.g. one transferred from a real
        LR image), used as it is: temperature, component and noise are then ignored.
        Raises InputError for any other y (`sdtool.inputs.check_image`), OptionError for a bad temperature."""
        check_image(y, "y")
        check_temperature(temperature)
        out_device = y.device
        n, _, h, w = y.shape
        # At least 16 px so that the degradation latent (HR/8) is 2×2: reflection padding needs 2 px.
        yp = pad_to(y.to(self.device, torch.float32) * 2 - 1, 8, 16)
        z_c, _, _ = self.hr_latents(_nhwc(yp))
        if latent is not None:
            z_dp = latent.to(self.device, torch.float32)
        else:
            comp = self.draw_components(n, component, generator)
            if noise is None:
                noise = randn(self.downscale_noise_shape(n, h, w), generator, self.device)
            z_dp = self.deg_prior.sample(noise.to(self.device, torch.float32), temperature, comp)
        x = self.lr_from_content(z_c, z_dp)
        x = x[:, :, : math.ceil(h / 4), : math.ceil(w / 4)]
        return ((_finite(x) + 1) / 2).clamp(0, 1).to(out_device)

    @torch.no_grad()
    def encode_lr_degradation(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Gaussianised degradation latent of real LR images. x: N×3×h×w in [0, 1] (padded to even size)
        → z_d' N×12×ceil(h/2)×ceil(w/2), and info: `component` (most likely mixture component, (N,)),
        `z_c` (content latent), `responsibilities` (N×K)."""
        check_image(x)
        xp = pad_to(x.to(self.device, torch.float32) * 2 - 1, 2, 2)
        _, parts = self.lr_log_prob(_nhwc(xp))
        resp = self.deg_prior.responsibilities(parts["z_dp"])
        return parts["z_dp"], {"component": resp.argmax(1), "z_c": parts["z_c"], "responsibilities": resp}
