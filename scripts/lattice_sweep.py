"""Where the 4-px lattice comes from, and what taking it out costs, on RealSR validation.

    python scripts/lattice_sweep.py WEIGHTS --data-root data/realsr-crops [--sigma 3 6] [--detail 0.75 0.8]
    python scripts/lattice_sweep.py WEIGHTS --data-root data/realsr-crops --diagnose

The sweep prints PSNR-RGB (border 4) / LPIPS / lattice score of `upscale`'s output (τ 0.4, wavelet guard at each
detail gain) without the lattice removal (σ 0) and with it at each window σ (blocks). --diagnose decodes each HR
crop's own content latent through the HR flow with its own HF latent, the HF flow's τ = 0 latent, and zeros.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sdtool import load_model
from sdtool.infer.colorfix import apply_color_fix
from sdtool.imageio import read_image
from sdtool.metrics import psnr
from sdtool.metrics.lattice import lattice_score
from sdtool.metrics.lpips import lpips_distance
from sdtool.model.lattice import remove_lattice


def _pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    names = sorted(p.name for p in (root / "test_HR").iterdir() if 41 <= int(p.name.split("_")[1]) <= 50)
    return [(n, read_image(root / "test_LR" / n).rgb, read_image(root / "test_HR" / n).rgb) for n in names]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()


def _u8(t: torch.Tensor) -> np.ndarray:
    return (t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round()


def sweep(model, pairs, sigmas: list[float], details: list[float]) -> None:
    rows: dict[tuple[float, float], list[list[float]]] = {}
    for i, (_, lr, hr) in enumerate(pairs):
        x = _t(lr)
        raw = model.upscale(x, 0.4, generator=torch.Generator().manual_seed(i), delattice=False)
        for sigma in [0.0, *sigmas]:
            y = raw if sigma == 0 else remove_lattice(raw, sigma).clamp(0, 1)
            for g in details:
                out = _u8(apply_color_fix(y, x, "wavelet", g))
                r = rows.setdefault((sigma, g), [[], [], []])
                r[0].append(psnr(out, hr * 255, crop_border=4))
                r[1].append(float(lpips_distance(_t(out / 255), _t(hr))[0]))
                r[2].append(lattice_score(out))
    for (sigma, g), (p, lp, lat) in rows.items():
        print(f"window σ {sigma:g} (0 = kept), detail {g:g}: {np.mean(p):.3f} / {np.mean(lp):.4f} / {np.mean(lat):.1f}")


def diagnose(model, pairs) -> None:
    scores: dict[str, list[float]] = {}
    for _, _, hr in pairs:
        y = (_t(hr) * 2 - 1).contiguous(memory_format=torch.channels_last)
        z_c, z_h, _ = model.hr_latents(y)
        mean, _ = model.hf_flow.inverse(torch.zeros_like(z_h), z_c)
        for name, h in (("own HF latent", z_h), ("HF flow at τ 0", mean), ("zero HF latent", torch.zeros_like(z_h))):
            img, _ = model.hr_flow.inverse(torch.cat([z_c, h], 1))
            scores.setdefault(name, []).append(lattice_score(_u8((img + 1) / 2)))
    for name, v in scores.items():
        print(f"HR content latent + {name}: lattice {np.mean(v):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("weights", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--sigma", type=float, nargs="*", default=[3.0])
    ap.add_argument("--detail", type=float, nargs="*", default=[0.75])
    ap.add_argument("--diagnose", action="store_true")
    a = ap.parse_args()
    model = load_model(a.weights, device="cpu")
    pairs = _pairs(a.data_root)
    with torch.no_grad():
        diagnose(model, pairs) if a.diagnose else sweep(model, pairs, a.sigma, a.detail)


if __name__ == "__main__":
    main()
