"""Loss functions of SDFlow training (see the method doc, "Losses")."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdtool.degrade.ops import gaussian_blur

LN2 = math.log(2.0)


def bits_per_dim(log_prob: Tensor, x: Tensor) -> Tensor:
    """Mean negative log-likelihood in bits per dimension of images x in [-1, 1] quantised to 8 bits.

    The density is over [-1, 1]; the 8-bit bins are 2/255 wide, hence the log(255/2) offset per dim."""
    dims = x[0].numel()
    return (-log_prob / dims + math.log(255.0 / 2.0)).mean() / LN2


def dequantize(x01: Tensor, g: torch.Generator) -> Tensor:
    """[0, 1] 8-bit images → [-1, 1] with uniform noise inside each quantisation bin."""
    noise = torch.rand(x01.shape, generator=g).to(x01.device)
    return (x01 * 255.0 + noise) / 256.0 * 2 - 1


def low_pass(x: Tensor, sigma: float = 1.0) -> Tensor:
    """Gaussian blur (5×5, σ = 1) per channel with reflection padding: compares content, not noise."""
    return gaussian_blur(x, sigma, radius=2)


def perceptual_distance(perceptual: nn.Module, a: Tensor, b: Tensor, min_size: int = 64) -> Tensor:
    """Mean perceptual distance of images in [-1, 1]. Crops smaller than `min_size` are enlarged
    (bilinear) first: AlexNet's stride-4 stem and pooling leave nothing of a 24-pixel LR crop."""
    side = min(a.shape[-2:])
    if side < min_size:
        f = -(-min_size // side)
        a = F.interpolate(a, scale_factor=f, mode="bilinear", align_corners=False)
        b = F.interpolate(b, scale_factor=f, mode="bilinear", align_corners=False)
    return perceptual((a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2).mean()


def content_loss(pred: Tensor, target: Tensor, perceptual: nn.Module | None, alpha: float) -> Tensor:
    """L1 after low-pass + α·perceptual; images in [-1, 1]."""
    loss = (low_pass(pred) - low_pass(target)).abs().mean()
    if perceptual is not None and alpha > 0:
        loss = loss + alpha * perceptual_distance(perceptual, pred, target)
    return loss


def color_low_freq(a: Tensor, b: Tensor, sigma: float) -> Tensor:
    """L1 of the Gaussian-σ low frequencies of a and b plus L1 of their per-channel means: the colour and
    brightness of whole regions, which LPIPS and the GAN barely see and a fine low-pass (σ 1) under-weights."""
    low = (gaussian_blur(a, sigma) - gaussian_blur(b, sigma)).abs().mean()
    return low + (a.mean(dim=(2, 3)) - b.mean(dim=(2, 3))).abs().mean()


def d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating discriminator loss (real → 1, fake → 0)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: make the discriminator call fakes real."""
    return F.softplus(-fake_logits).mean()


def lattice_power(x: Tensor) -> Tensor:
    """Per-image power (B,) of the part of x's high frequencies that repeats every 4 pixels (PERIOD).

    The high-pass (x minus a Gaussian σ 2) is split into its 16 pixel phases (`sdtool.model.lattice.phases`);
    each phase's mean over the image, less the mean over phases, is the periodic pattern: what puts power at the
    multiples of N/4 in the spectrum (`sdtool.metrics.lattice`). A photo's phases average out (its value is
    ~1/(H·W/16) of its high-pass power); x: B×C×H×W, H and W multiples of 4."""
    from sdtool.model.lattice import HIGH_PASS_SIGMA, PERIOD, phases

    b, c = x.shape[:2]
    means = phases(x - gaussian_blur(x, HIGH_PASS_SIGMA)).mean(dim=(2, 3)).reshape(b, c, PERIOD * PERIOD)
    return (means - means.mean(dim=2, keepdim=True)).pow(2).mean(dim=(1, 2))


def lattice_loss(sr: Tensor, hr: Tensor) -> Tensor:
    """Root of the SR samples' periodic power above the real HR crops' (unpaired: the batch's mean). A
    photo's value is the chance alignment of its detail with the phases; that adds in power, so it is
    subtracted in power: a lattice-free sample scores ~0."""
    excess = F.relu(lattice_power(sr) - lattice_power(hr.detach()).mean())
    return excess.add(1e-8).sqrt().mean()


def _enlarge(x: Tensor, min_size: int) -> Tensor:
    side = min(x.shape[-2:])
    if side >= min_size:
        return x
    return F.interpolate(x, scale_factor=-(-min_size // side), mode="bilinear", align_corners=False)


def gram_loss(perceptual: nn.Module, a: Tensor, b: Tensor, taps: int = 2, min_size: int = 64) -> Tensor:
    """Style loss (Gatys et al. 2016): mean L1 between the Gram matrices G = F·Fᵀ / (C·H·W) of the first
    `taps` ReLU feature maps of LPIPS's AlexNet trunk, for images a, b N×3×H×W in [0,1]. Crops smaller than
    `min_size` are enlarged (bilinear) first, as in `perceptual_distance`. The Gram matrix keeps the
    statistics of noise and texture and drops where things are."""
    trunk = perceptual.net.features
    stops = [i for i, layer in enumerate(trunk) if isinstance(layer, nn.ReLU)][:taps]
    xs = [((_enlarge(t, min_size) * 2 - 1) - perceptual.shift) / perceptual.scale for t in (a, b)]
    loss = a.new_zeros(())
    for i, layer in enumerate(trunk[: stops[-1] + 1]):
        xs = [layer(x) for x in xs]
        if i in stops:
            grams = []
            for f in xs:
                n, c, h, w = f.shape
                flat = f.reshape(n, c, h * w)
                grams.append(flat @ flat.transpose(1, 2) / (c * h * w))
            loss = loss + (grams[0] - grams[1]).abs().mean()
    return loss
