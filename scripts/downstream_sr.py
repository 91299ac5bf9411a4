#!/usr/bin/env python
"""The downstream test of learned degradations (SDFlow paper, Sec. 5.3; PDM-SR): the same compact SR network,
trained on the same HR crops for the same iterations, once per degrader; each run scored with `sdtool benchmark`.

Stages (each resumes: existing pairs are skipped, training runs continue with --resume, benchmark reports are
cached beside them):
  pairs  `sdtool sample-degradation HR OUT/pairs-KIND --pairs -n SAMPLES` for every degrader (HR: the RealSR
         TRAIN split's HR crops, Canon/Nikon 001-040, linked into OUT/train-hr);
  train  `sdtool train --model sr --pairs OUT/pairs-KIND` (L1 phase, then L1 + LPIPS + GAN), validated on the
         RealSR validation split (041-050);
  bench  `sdtool benchmark` on RealSR validation and the DRealSR dev crops, and outputs for realsrset/;
  table  the README table (markdown) from the reports.

    python scripts/downstream_sr.py --data ../shared/data --out runs/downstream            # everything
    python scripts/downstream_sr.py --data ../shared/data --out runs/downstream --stages table
Pairs are made beforehand (8 samples per HR crop, the same count for every degrader) because sampling SDFlow
on the fly costs 0.4 s a batch on one CPU thread, twice the network's own step; `sdtool train --model sr
--hr-dir HR --degradation KIND` samples them on the fly instead. The mix's pairs are the SDFlow pairs with 40 % of
the LR images JPEG-compressed at a quality drawn from 30-95 (`sdtool.degrade.mix.apply_extras`, per file from a
seed): what `--model mix --mix sdflow=0.6,sdflow+jpeg=0.4 --jpeg-quality 30,95` makes, reusing the SDFlow draws
instead of sampling SDFlow again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DEGRADERS = {  # name: sample-degradation options
    "bicubic": ["-m", "bicubic"],
    "classic": ["-m", "classic"],
    "pdm": ["-m", "pdm"],
    "sdflow": ["-m", "sdflow"],
    "mix": [],  # made from the sdflow pairs: see mix_pairs
}
MIX_JPEG, MIX_QUALITY = 0.4, (30, 95)
VAL_FILTER = "_0(4[1-9]|50)_"  # RealSR validation: scenes 041-050
TRAIN_FILTER = "_0(0[1-9]|[1-3][0-9]|40)_"  # RealSR train: scenes 001-040


def sdtool(*args: str, log: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "sdtool", *args]
    print("+ sdtool " + " ".join(args), flush=True)
    with open(log, "a") if log else open(os.devnull, "w") as fh:
        subprocess.run(cmd, check=True, stdout=fh if log else None, stderr=subprocess.STDOUT if log else None)


def train_hr(data: Path, out: Path) -> Path:
    """OUT/train-hr: links to the RealSR TRAIN split's HR crops (never the validation scenes)."""
    import re

    folder = out / "train-hr"
    folder.mkdir(parents=True, exist_ok=True)
    for f in sorted((data / "realsr-crops" / "test_HR").iterdir()):
        if re.search(TRAIN_FILTER, f.name) and not (folder / f.name).exists():
            (folder / f.name).symlink_to(f.resolve())
    return folder


def mix_pairs(sdflow: Path, out: Path, prob: float = MIX_JPEG, quality: tuple[int, int] = MIX_QUALITY) -> None:
    """OUT/HR: links to the SDFlow pairs' HR files; OUT/LR: their LR files, a share `prob` of them JPEG-compressed
    at a quality drawn from `quality`."""
    import hashlib

    import numpy as np
    import torch

    from sdtool.degrade.classic import ClassicConfig
    from sdtool.degrade.mix import apply_extras
    from sdtool.imageio import read_image, write_rgb8_png

    classic = ClassicConfig(jpeg_quality=quality)
    for lr_path in sorted((sdflow / "LR").glob("*.png")):
        target = out / "LR" / lr_path.name
        (out / "HR").mkdir(parents=True, exist_ok=True)
        hr_link = out / "HR" / lr_path.name
        if not hr_link.exists():
            hr_link.symlink_to((sdflow / "HR" / lr_path.name).resolve())
        if target.exists():
            continue
        g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(lr_path.name.encode()).digest()[:7], "little"))
        lr = torch.from_numpy(read_image(lr_path).rgb).permute(2, 0, 1)[None]
        if float(torch.rand(1, generator=g)) < prob:
            lr = apply_extras(lr, ("jpeg",), classic, g)
        write_rgb8_png(target, (lr[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))


def stage_pairs(a: argparse.Namespace, kinds: list[str]) -> None:
    hr = train_hr(a.data, a.out)
    for kind in kinds:
        if kind == "mix":
            mix_pairs(a.out / "pairs-sdflow", a.out / "pairs-mix")
            continue
        sdtool("sample-degradation", str(hr), str(a.out / f"pairs-{kind}"), "--pairs", *DEGRADERS[kind],
               "-n", str(a.samples), "--seed", "0", "--device", "cpu")


def stage_train(a: argparse.Namespace, kinds: list[str]) -> None:
    lr_val, hr_val = a.data / "realsr-crops" / "test_LR", a.data / "realsr-crops" / "test_HR"
    for kind in kinds:
        run = a.out / f"sr-{kind}"
        args = ["train", "--model", "sr", "--arch", "compact", "--pairs", str(a.out / f"pairs-{kind}"), "--out", str(run),
                "--iters", str(a.iters), "--image-loss-start", str(a.gan_start), "--batch", str(a.batch), "--patch", "128",
                "--lr", "4e-4", "--ema-decay", "0.995", "--seed", "0", "--device", "cpu", "--val-lr", str(lr_val),
                "--val-hr", str(hr_val), "--val-filter", VAL_FILTER, "--val-every", str(a.val_every),
                "--ckpt-every", "200", "--log-every", "20", "--loss", "lattice=0"]  # as run: before the lattice term
        if (run / "model.safetensors").exists() and _iterations(run) >= a.iters:
            continue
        sdtool(*args, *(["--resume"] if (run / "state.pt").exists() else []), log=a.out / f"sr-{kind}.log")


def _iterations(run: Path) -> int:
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return max((r.get("it", 0) for r in recs), default=0)


GUARDS = {"raw": ["--color-fix", "none"], "guard": ["--color-fix", "wavelet", "--detail", "1"]}


def stage_bench(a: argparse.Namespace, kinds: list[str]) -> None:
    """Each network raw and with the wavelet colour guard at detail 1 (its low band replaced by bicubic's)."""
    named = [x for k in kinds for x in ("-w", _named(a.out, k, str(a.out / f"sr-{k}" / "model.safetensors")))]
    sets = {"realsr-val": ["--dataset", "realsr", "--data-root", str(a.data / "realsr-crops"), "--split", "val"],
            "drealsr-dev": ["--dataset", "drealsr", "--data-root", str(a.data / "drealsr-crops-dev")]}
    for guard, fix in GUARDS.items():
        for name, data in sets.items():
            sdtool("benchmark", *data, "--method", "bicubic", *named, *fix, "--no-downscale", "--device", "cpu",
                   "--out", str(a.out / f"bench-{name}-{guard}.json"))
    niqe: dict[str, float] = {}
    for kind in kinds:
        w = str(a.out / "weights" / f"sr-{kind}.safetensors")
        for guard, fix in GUARDS.items():
            folder = a.out / f"realsrset-{kind}-{guard}"
            sdtool("upscale", str(a.data / "realsrset"), str(folder) + "/", "-w", w, *fix, "--device", "cpu")
            niqe[f"sr-{kind}/{guard}"] = mean_niqe(folder)
    (a.out / "realsrset-niqe.json").write_text(json.dumps(niqe, indent=1))


def mean_niqe(folder: Path) -> float:
    """Mean NIQE (MATLAB parameters, on rgb2gray) of the images in a folder: realsrset has no ground truth."""
    import numpy as np

    from sdtool.imageio import read_image
    from sdtool.metrics import niqe

    return float(np.mean([niqe(read_image(p).rgb * 255.0) for p in sorted(folder.glob("*.png"))]))


def _named(out: Path, kind: str, weights: str) -> str:
    """A link sr-KIND.safetensors → the run's weights, so that the report names the method by its degrader."""
    link = out / "weights" / f"sr-{kind}.safetensors"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(Path(weights).resolve())
    return str(link)


def stage_table(a: argparse.Namespace, kinds: list[str]) -> None:
    print("| set | SR network trained on | PSNR | SSIM | LPIPS | NIQE | colour err | guarded: PSNR | LPIPS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, title in (("realsr-val", "RealSR val (20)"), ("drealsr-dev", "DRealSR dev (14)")):
        paths = [a.out / f"bench-{name}-{g}.json" for g in GUARDS]
        if not all(p.exists() for p in paths):
            continue
        raw, guard = (json.loads(p.read_text())["summary"] for p in paths)
        for i, (method, m) in enumerate(raw.items()):
            g = guard[method]
            print(f"| {title if i == 0 else ''} | {method} | {m['psnr_rgb']:.2f} | {m['ssim_rgb']:.4f} | {m['lpips']:.4f} | "
                  f"{m['niqe']:.2f} | {m['color_err']:.2f} | {g['psnr_rgb']:.2f} | {g['lpips']:.4f} |")
    niqe = a.out / "realsrset-niqe.json"
    if niqe.exists():
        print("\nrealsrset (25 images, no ground truth), mean NIQE raw / guarded: " + ", ".join(
            f"{k}: {v:.2f}" for k, v in json.loads(niqe.read_text()).items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the shared data folder (realsr-crops/, drealsr-crops-dev/, realsrset/)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kinds", nargs="+", default=list(DEGRADERS), choices=list(DEGRADERS))
    ap.add_argument("--stages", nargs="+", default=["pairs", "train", "bench", "table"], choices=["pairs", "train", "bench", "table"])
    ap.add_argument("--samples", type=int, default=8, help="LR samples per HR crop")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--gan-start", type=int, default=800, help="last iteration of the L1-only phase")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--val-every", type=int, default=200)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for stage in a.stages:
        {"pairs": stage_pairs, "train": stage_train, "bench": stage_bench, "table": stage_table}[stage](a, a.kinds)


if __name__ == "__main__":
    main()
