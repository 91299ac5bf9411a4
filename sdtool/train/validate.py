"""Validation on a paired folder during training: SR PSNR/LPIPS and downscaling LPIPS against real LR."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from sdtool.errors import DatasetError


def load_pairs(lr_dir: Path, hr_dir: Path, limit: int = 20,
               name_filter: Optional[str] = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Pairs by identical file name (never by position): (name, lr H×W×3 float, hr 4H×4W×3 float)."""
    from sdtool.imageio import read_image
    from sdtool.train.data import list_images

    hr_by_name = {p.name: p for p in list_images(hr_dir, name_filter)}
    pairs = []
    for lr_path in list_images(lr_dir, name_filter):
        if lr_path.name not in hr_by_name:
            continue
        lr = read_image(lr_path).rgb
        hr = read_image(hr_by_name[lr_path.name]).rgb
        if hr.shape[:2] != (lr.shape[0] * 4, lr.shape[1] * 4):
            raise DatasetError(f"{hr_by_name[lr_path.name]}: size {hr.shape[:2]} is not 4× its LR image {lr.shape[:2]}")
        pairs.append((lr_path.name, lr, hr))
        if len(pairs) >= limit:
            break
    if not pairs:
        raise DatasetError(f"{lr_dir} and {hr_dir}: no file name appears in both folders")
    return pairs


def make_validator(pairs, temperature: Optional[float] = None, seed: int = 0) -> Callable[[nn.Module], dict[str,
                                                                                                            float]]:
    """Validator for the runner: mean PSNR-RGB (border 4), LPIPS of SR images, and LPIPS of downscaled HR
    images against the real LR images (with the bicubic LR for comparison)."""
    from sdtool.imageio import image_tensor as to_t
    from sdtool.infer.colorfix import guard
    from sdtool.metrics import color_error, psnr
    from sdtool.metrics.lattice import lattice_score
    from sdtool.metrics.lpips import lpips_distance
    from sdtool.model.lattice import remove_lattice
    from sdtool.resize import imresize

    def to_u8(t: torch.Tensor) -> np.ndarray:
        return (t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round()

    def lr_lpips(a: torch.Tensor, b: torch.Tensor) -> float:
        # AlexNet's stem leaves nothing of images under 32 px: no LR LPIPS for such tiny pairs.
        return lpips_distance(a, b).item() if min(a.shape[-2:]) >= 32 else float("nan")

    bicubic_lpips = float(np.mean([lr_lpips(imresize(to_t(hr), 0.25).clamp(0, 1), to_t(lr)) for _, lr, hr in pairs]))

    from sdtool.config import DEFAULT_DOWN_TEMPERATURE, DEFAULT_SR_TEMPERATURE

    t_sr = DEFAULT_SR_TEMPERATURE if temperature is None else temperature
    t_down = DEFAULT_DOWN_TEMPERATURE if temperature is None else temperature

    def validate(model: nn.Module) -> dict[str, float]:
        psnrs, lp_sr, lp_ds, colour, psnr_fix, lp_fix, lattice, lattice_raw = [], [], [], [], [], [], [], []
        for i, (_, lr, hr) in enumerate(pairs):
            g = torch.Generator().manual_seed(seed + i)
            sr = model.upscale(to_t(lr), temperature=t_sr, generator=g, delattice=False).cpu()
            lattice_raw.append(lattice_score(to_u8(sr)) if min(sr.shape[-2:]) >= 16 else float("nan"))
            psnrs.append(psnr(to_u8(sr), hr * 255, crop_border=4))
            colour.append(color_error(to_u8(sr), hr * 255, crop_border=4))
            # what upscale writes by default: the lattice out (the model's, run here on the raw sample drawn
            # above), then the default colour guard of `sdtool.infer`
            fixed = guard(remove_lattice(sr).clamp(0, 1), to_t(lr))
            psnr_fix.append(psnr(to_u8(fixed), hr * 255, crop_border=4))
            lp_fix.append(lpips_distance(fixed, to_t(hr)).item())
            if min(fixed.shape[-2:]) >= 16:
                lattice.append(lattice_score(to_u8(fixed)))
            lp_sr.append(lpips_distance(sr, to_t(hr)).item())
            ds = model.downscale(to_t(hr), temperature=t_down, generator=g).cpu()
            lp_ds.append(lr_lpips(ds, to_t(lr)))
        return {"val_psnr_rgb": float(np.mean(psnrs)), "val_lpips": float(np.mean(lp_sr)),
                "val_color_err": float(np.mean(colour)), "val_psnr_guard": float(np.mean(psnr_fix)),
                "val_lpips_guard": float(np.mean(lp_fix)),
                "val_lattice": float(np.nanmean(lattice_raw)) if lattice_raw else float("nan"),
                "val_lattice_guard": float(np.mean(lattice)) if lattice else float("nan"),
                "val_ds_lpips": float(np.mean(lp_ds)), "val_bicubic_ds_lpips": bicubic_lpips}

    return validate


def make_sr_validator(pairs) -> Callable[[nn.Module], dict[str, float]]:
    """Validator for a deterministic x4 SR network: mean PSNR-RGB (border 4), LPIPS and colour error of its
    outputs on the validation pairs (the network as `upscale` runs it, no colour guard)."""
    from sdtool.imageio import image_tensor
    from sdtool.metrics import color_error, psnr
    from sdtool.metrics.lpips import lpips_distance

    def validate(model: nn.Module) -> dict[str, float]:
        psnrs, lp, colour = [], [], []
        for _, lr, hr in pairs:
            x, y = image_tensor(lr), image_tensor(hr)
            sr = model.upscale(x).cpu()
            sr8 = (sr[0].permute(1, 2, 0).numpy() * 255).round()
            psnrs.append(psnr(sr8, hr * 255, crop_border=4))
            colour.append(color_error(sr8, hr * 255, crop_border=4))
            lp.append(lpips_distance(sr, y).item())
        return {"val_psnr_rgb": float(np.mean(psnrs)), "val_lpips": float(np.mean(lp)),
                "val_color_err": float(np.mean(colour))}

    return validate
