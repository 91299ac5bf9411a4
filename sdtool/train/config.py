"""Training settings and loss weights as plain dataclasses (values from the paper where known)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LossWeights:
    """Weights of the SDFlow losses. [reading] = second-hand reading of the paper; [ours] = our choice."""

    nll: float = 1.0  # both NLLs, bits per dimension [ours: normalisation]
    content: float = 1.0  # low-pass L1 of LR⁻¹(z_c) against the bicubic / input image [ours: weight]
    content_perceptual: float = 0.05  # α, perceptual term inside the content loss [reading]
    latent_adv: float = 0.05  # latent domain adversarial loss on z_c [ours]
    zc_l2: float = 0.05  # β₁, L2 penalty on z_c [reading]
    deg_l2: float = 0.5  # β₂, ‖z_LR − stopgrad(z_c)‖² keeps degradation small [reading]
    image_l1: float = 0.5  # image-space losses after warm-up, SR direction [reading]
    image_perceptual: float = 0.5  # [reading]
    image_gan: float = 0.1  # [reading]
    ds_l1: float = 0.5  # the same three for generated LR images (downscaling direction) [reading]
    ds_perceptual: float = 0.5  # against the bicubic LR: high values pull samples towards bicubic sharpness
    ds_gan: float = 0.1  # against real LR images: the only term that asks for realism
    ds_target_blur: float = 0.0  # σ (LR px) of a Gaussian on the bicubic target of generated LR images [ours]
    ds_target_chroma_blur: float = 0.0  # further σ (LR px) on the target's chroma only [ours]
    ds_mode_l1: float = 0.0  # full-resolution L1 of the τ = 0 sample (component mean) against that target [ours]:
    #   the low-pass terms leave the generated LR free to be sharper and noisier in colour than any camera LR
    # Colour anchors [ours] (issue: SR samples drifted in colour, green most): the colour of whole regions has
    # to live in the content latent z_c, not in the sampled HF / degradation latents.
    sr_color: float = 2.0  # SR samples of real LR, downscaled, keep the LR input's low frequencies (σ 2 LR px)
    # SR sample from an HR image's own z_c with fresh HF noise keeps its low frequencies (σ 8 HR px)
    hr_color: float = 2.0
    ds_color: float = 2.0  # generated LR images keep the HR image's low frequencies (σ 2 LR px)
    image_sr: float = 1.0  # scale of all SR-direction image terms; 0 skips them (e.g. a downscaling-only phase)
    image_loss_start: int = 50_000  # iterations of losses 1-3 before the image-space losses [reading]
    sample_temperature: float = 0.8  # temperature of the samples used by the image-space losses [ours]
    sr_temperature_min: float = -1.0  # ≥ 0: each SR sample's temperature is drawn from U(this, sample_temperature),
    #   so the decodes used at inference (τ 0–0.4) are trained too; < 0: all at sample_temperature [ours]
    lattice: float = 0.0  # period-4 grid of SR samples above the HR crops' own (train/losses.lattice_power) [ours]:
    #   the HR flow decodes a weak HF latent as a 4-px lattice, which no other term sees
    # Cycle HR → generated LR → SR, compared with the HR it came from (image phase only) [ours]. The paper's
    # image-space SR target is unknown; this one needs no pairs: the LR is the model's own degradation
    # sample (detached, so the downscaler cannot hide detail in it for the upscaler).
    cycle_l1: float = 0.5  # L1 between the cycled SR sample and the HR crop
    cycle_perceptual: float = 1.0  # perceptual distance between them
    cycle_latent: float = 1.0  # L1 between extractor(generated LR) and the HR content latent
    cycle_input_blur: float = 0.0  # b: the cycle's LR input gets a Gaussian blur of σ ~ U(0, 2b) LR px, so the
    #   extractor also sees inputs as soft as real LR photographs while the degradation flow is still learning
    # Work per step [ours, issue 25]: each trades a fraction of a term's samples for time, at the same expected loss.
    # Defaults checked on RealSR validation: 200 iterations of the shipped recipe from the shipped weights with and
    # without them ended at 25.53 dB / LPIPS 0.2729 vs 25.54 / 0.2733 (guard), LR realism 0.0575 vs 0.0574
    # (README "Speed and memory"); 1 / 0 / 1.0 / 1 repeat the step as it was.
    nll_every: int = 2  # the two NLL terms (and the HF and degradation flows' forward passes) every k-th step, ×k
    d_hr_crop: int = 48  # HR discriminator on one random crop of this side (HR px, multiple of 4) per step; 0: whole
    cycle_fraction: float = 0.5  # the cycle terms on this fraction of the batch (at least one image)
    sr_fraction: float = 1.0  # the SR samples of real LR crops (GAN, consistency, colour) on this fraction of the batch
    d_every: int = 2  # the discriminators' own update every k-th step (the generator still meets them every step)
    cycle_crop: int = 0  # the cycle's SR samples decode one random window of this side (HR px, multiple of 4) of
    #   their content, in a pass of their own, scored against the same window of the HR crops; 0: the whole crop
    hr_color_crop: int = 48  # hr_color's SR samples decode one random window of this side (HR px, multiple of 4)
    #   of the HR crops' content, in a pass of their own; 0: the whole crop. 48 on 96-px crops: 25.55 / 0.2733 vs
    #   25.54 / 0.2731 on RealSR validation (200 iterations as above)


DEFAULT_LR = 1e-4  # Adam learning rate of every trainer: `sdtool train --lr` [reading]


@dataclass(frozen=True)
class RunSettings:
    """How a run goes: sizes, optimiser, schedule, bookkeeping."""

    out_dir: Path
    iters: int = 1000
    batch: int = 8
    patch: int = 96  # HR crop size; LR crops are patch // 4 [paper: 192, batch 32]
    lr: float = DEFAULT_LR
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: int = 100  # linear learning-rate warm-up iterations
    lr_min_ratio: float = 0.1  # cosine decay to this fraction of lr at the last iteration
    grad_clip: float = 10.0  # global gradient-norm clip
    ema_decay: float = 0.999
    ckpt_every: int = 250
    log_every: int = 10
    val_every: int = 0  # 0: validate only at checkpoints when a validation set is given
    seed: int = 0
    amp: bool = True  # bf16 autocast for sub-networks on CUDA; always fp32 on CPU
    extra: dict = field(default_factory=dict)  # free-form provenance (data, command line)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["out_dir"] = str(self.out_dir)
        return json.dumps(d, sort_keys=True)


def lr_at(it: int, s: RunSettings) -> float:
    """Learning rate at iteration `it` (1-based): linear warm-up, then cosine decay to lr·lr_min_ratio.
    A pure function of the iteration, so resume needs no scheduler state."""
    import math

    if it <= s.warmup:
        return s.lr * it / max(1, s.warmup)
    t = (it - s.warmup) / max(1, s.iters - s.warmup)
    t = min(1.0, t)
    return s.lr * (s.lr_min_ratio + (1 - s.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
