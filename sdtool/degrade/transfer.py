"""Degradation transfer: take the degradation of one real LR image and apply it to other HR content.

SDFlow: the real LR image x is encoded to its Gaussianised degradation latent z_d' (12 channels at
half LR size) with `encode_lr_degradation`; its most likely mixture component k and per-channel mean/std
of z_d' are kept. New content gets z_d' = mean_c + std_c·τ·ε (ε standard normal at the new size), passed
to `downscale` as the noise that gives exactly this latent for component k:
noise = (z_d' − μ_k) / (σ_k·τ). What transfers: the global noise level/colour and blur/sharpness statistics
that the latent encodes, per channel. What does not: spatial layout (a vignette, a blur that changes
across the frame), anything tied to the real image's content, and degradations the model never saw.

PDM: there is no HR for the real LR image, so z_k and z_n cannot be fitted pixel-wise. We fit z_k (the
kernel latent) and one scale for z_n so that the PDM applied to the new HR content matches the real LR
image in image statistics that the content hardly changes: the radially averaged log power spectrum and
the per-channel std of the Laplacian (high frequencies = blur + noise). One kernel and one noise level
transfer; spatially varying effects and JPEG do not (the PDM has no JPEG stage).

ReDeg (`sdtool.model.redeg`): DegNet reads the real LR image beside a pseudo-HR made by an SR model (a
ReDegNet face gets its pseudo-HQ from face restoration) and returns Ω; SynNet renders the new content with
it. What transfers: what Ω learnt to encode from real pairs and classic degradations (blur, noise level and
colour, compression), as a global description; not spatial layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from sdtool.degrade import DegradationSample

if TYPE_CHECKING:  # pragma: no cover
    from torch import Generator, Tensor


# ---------------------------------------------------------------------------------------------- SDFlow
def sdflow_degradation_stats(model: Any, real_lr: "Tensor") -> dict[str, "Tensor"]:
    """Encode a real LR image (1×3×h×w in [0,1]) → component (LongTensor (1,)), mean and std (1×12×1×1)."""
    z, info = model.encode_lr_degradation(real_lr)
    mean = z.mean(dim=(2, 3), keepdim=True)
    std = z.std(dim=(2, 3), keepdim=True).clamp_min(1e-4)
    return {"component": info["component"].reshape(-1)[:1], "mean": mean, "std": std}


def _prior_params(model: Any, component: int) -> tuple[float, float]:
    """μ_k, σ_k of the SDFlow degradation prior (scalar per component)."""
    import torch

    prior = model.deg_prior
    return float(prior.means[component].detach()), float(torch.exp(prior.log_stds[component].detach()))


# ---------------------------------------------------------------------------------------------- PDM
def radial_log_spectrum(x: "Tensor", bins: int = 16) -> "Tensor":
    """Radially averaged log power spectrum of the grey version of x (N×3×h×w) → N×bins."""
    import torch

    g = x.mean(1)
    g = g - g.mean(dim=(-2, -1), keepdim=True)
    p = torch.fft.rfft2(g, norm="ortho").abs().pow(2)
    h, w = g.shape[-2:]
    fy = torch.fft.fftfreq(h, device=x.device).abs()[:, None]
    fx = torch.fft.rfftfreq(w, device=x.device)[None, :]
    r = torch.sqrt(fy * fy + fx * fx).clamp(max=0.5)
    idx = (r / 0.5 * (bins - 1)).round().long().reshape(-1)
    flat = p.reshape(p.shape[0], -1)
    sums = torch.zeros(p.shape[0], bins, device=x.device).index_add_(1, idx, flat)
    counts = torch.zeros(bins, device=x.device).index_add_(0, idx, torch.ones_like(idx, dtype=torch.float32))
    return torch.log(sums / counts.clamp_min(1) + 1e-8)


def _laplacian_std(x: "Tensor") -> "Tensor":
    import torch
    import torch.nn.functional as F

    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device)
    hp = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), lap.expand(3, 1, 3, 3), groups=3)
    return hp.std(dim=(2, 3))


def fit_pdm_latents(
    model: Any, real_lr: "Tensor", y: "Tensor", steps: int = 150, seed: int = 0,
) -> dict[str, "Tensor"]:
    """Fit z_k (and a z_n scale) of a per-image PDM so that PDM(y) resembles real_lr in its spectrum and
    Laplacian std. real_lr: 1×3×h×w, y: 1×3×H×W HR content (the new content or any sharp image), [0,1].
    Returns {"z_k": 1×zk_dim, "noise_scale": scalar tensor}. Spatially varying PDMs get a constant z_k map."""
    import torch

    from sdtool.degrade.ops import blur_downsample

    gen = torch.Generator().manual_seed(seed)
    dev = model.device
    real = real_lr.to(dev)
    target_spec = radial_log_spectrum(real)
    target_lap = _laplacian_std(real)
    zk_shape, zn_shape = model.latent_shapes(1, y.shape[-2], y.shape[-1])
    z_k = torch.zeros(1, model.config.zk_dim, device=dev, requires_grad=True)
    log_s = torch.zeros((), device=dev, requires_grad=True)
    z_n = torch.randn(zn_shape, generator=gen).to(dev)
    yy = y.to(dev)
    opt = torch.optim.Adam([z_k, log_s], lr=0.05)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            zk = z_k if not model.config.spatial else z_k[:, :, None, None].expand(zk_shape)
            k = model.net_k(zk)
            clean = blur_downsample(yy, k, model.config.scale)
            fake = clean + model.net_n(z_n * log_s.exp(), clean)
            loss = (radial_log_spectrum(fake) - target_spec).pow(2).mean() \
                + 10 * (torch.log(_laplacian_std(fake) + 1e-6) - torch.log(target_lap + 1e-6)).pow(2).mean() \
                + 1e-3 * z_k.pow(2).mean()  # stay near the prior
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return {"z_k": z_k.detach(), "noise_scale": log_s.detach().exp()}


def pdm_transfer(
    model: Any, y: "Tensor", fitted: dict[str, "Tensor"], temperature: float = 1.0,
    generator: "Optional[Generator]" = None,
) -> DegradationSample:
    """Degrade HR y (N×3×H×W) with fitted PDM latents: the fitted kernel and the fitted noise scale
    (z_n ~ N(0, (τ·scale)²) freshly drawn)."""
    n, _, h, w = y.shape
    zk_shape, _ = model.latent_shapes(n, h, w)
    z_k = fitted["z_k"].expand(n, -1)
    if model.config.spatial:
        z_k = z_k[:, :, None, None].expand(zk_shape)
    _, z_n = model.sample_latents(n, h, w, temperature, generator)
    s = model.degrade(y, z_k=z_k, z_n=z_n * fitted["noise_scale"].to(z_n.device))
    for p in s.params:
        p["transfer"] = True
        p["noise_scale"] = float(fitted["noise_scale"])
    return s


# ---------------------------------------------------------------------------------------------- ReDeg
def pseudo_hr(real_lr: "Tensor", upscale: "Optional[Callable[[Tensor], Tensor]]" = None) -> "Tensor":
    """The pseudo-HR of a real LR image 1×3×h×w in [0,1]: `upscale` (an x4 SR, e.g. SDFlow's) or, when None,
    bicubic ×4 (PyTorch, clamped). Returns 1×3×4h×4w in [0,1]."""
    import torch.nn.functional as F

    if upscale is not None:
        return upscale(real_lr).clamp(0, 1)
    return F.interpolate(real_lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)


def centre_crop(x: "Tensor", side: int) -> "Tensor":
    """The central crop of x (N×C×h×w) at most side×side."""
    h, w = x.shape[-2:]
    ch, cw = min(h, side), min(w, side)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def redeg_omega(model: Any, real_lr: "Tensor", upscale: "Optional[Callable[[Tensor], Tensor]]" = None,
                max_side: int = 192) -> "Tensor":
    """ReDeg's Ω (1×D) of a real LR image 1×3×h×w in [0,1] that has no HR: DegNet reads the image's central
    crop (≤ max_side², Ω is a global statistic and SR is the costly part) beside its pseudo-HR, as ReDegNet
    reads a real face beside its restored one."""
    import torch

    crop = centre_crop(real_lr, max_side)
    with torch.no_grad():
        return model.omega(crop, pseudo_hr(crop, upscale))


def redeg_pool(model: Any, real_lrs: "list[Tensor]", upscale: "Optional[Callable[[Tensor], Tensor]]" = None,
               max_side: int = 192) -> "Tensor":
    """Ω of several real LR images (each 1×3×h×w) → P×D: a degradation pool to sample from."""
    import torch

    return torch.cat([redeg_omega(model, x, upscale, max_side) for x in real_lrs])
