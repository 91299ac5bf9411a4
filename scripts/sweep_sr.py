"""Temperature × colour-guard sweep of an SDFlow checkpoint on x4 pairs (choose defaults on RealSR validation).

    python scripts/sweep_sr.py WEIGHTS --dataset realsr --data-root data/realsr-crops --split val \\
        -t 0 -t 0.4 -t 0.6 -t 0.8 -t 1.0 --fix none --fix wavelet --fix adain

A guard "wavelet:N:G" uses N wavelet levels and detail gain G ("wavelet" = upscale's default).
Prints, per (τ, guard): PSNR-RGB, LPIPS, colour error (crop border 4) and, per τ, diversity (mean per-pixel
std of two samples, 0–255), with the benchmark's seeds and metric code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def _guard(sr, lr, fix: str):
    """`apply_color_fix`; "wavelet[:LEVELS[:DETAIL]]" sets the wavelet guard's levels and detail gain (plain
    "wavelet" is upscale's default: WAVELET_LEVELS levels, detail DEFAULT_DETAIL)."""
    from sdtool.infer.colorfix import WAVELET_LEVELS, apply_color_fix
    from sdtool.config import DEFAULT_DETAIL

    if fix.startswith("wavelet"):
        parts = fix.split(":")[1:]
        levels = int(parts[0]) if parts else WAVELET_LEVELS
        detail = float(parts[1]) if len(parts) > 1 else DEFAULT_DETAIL
        return apply_color_fix(sr, lr, "wavelet", detail, levels)
    return apply_color_fix(sr, lr, fix)


def main() -> None:
    from sdtool.api import load_model
    from sdtool.benchmark import load_dataset, read_pair, to_grid, to_tensor
    from sdtool.benchmark.methods import model_upscale
    from sdtool.seeds import file_generator
    from sdtool.metrics import color_error, diversity, psnr
    from sdtool.metrics.lpips import lpips_distance

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("--dataset", default="realsr")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--split", default="val")
    ap.add_argument("-t", "--temperature", type=float, action="append")
    ap.add_argument("--fix", action="append")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    temps, fixes = a.temperature or [0.8], a.fix or ["none", "wavelet"]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model(a.weights, device="cpu")
    data = load_dataset(a.dataset, a.data_root, a.split)
    rows: dict = {}
    for t in temps:
        divs = []
        for pair in data.pairs:
            hr, lr, _ = read_pair(pair)
            gen = file_generator(a.seed, Path(pair.lr.name))  # the samples `upscale LR --seed S` draws
            raw = [model_upscale(model, lr, t, gen) for _ in range(2)]
            divs.append(diversity(np.stack(raw)))
            for fix in fixes:
                sr = to_grid(_guard(to_tensor(raw[0]), to_tensor(lr), fix))
                r = rows.setdefault((t, fix), [])
                r.append((psnr(sr, hr, crop_border=4), float(lpips_distance(to_tensor(sr), to_tensor(hr))[0]),
                          color_error(sr, hr, crop_border=4)))
        for fix in fixes:
            p, lp, ce = np.mean(rows[(t, fix)], axis=0)
            print(f"tau {t:<4g} guard {fix:<8s} PSNR {p:6.2f}  LPIPS {lp:.4f}  colour {ce:5.2f}  "
                  f"diversity {np.mean(divs):5.2f}", flush=True)


if __name__ == "__main__":
    main()
