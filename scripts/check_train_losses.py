#!/usr/bin/env python
"""Record, or compare against a record, the logged losses of the first N SDFlow training steps.

Guards speed work on the training step: a refactor that batches or reorders the step must leave the losses
where they were (fp32, same seed, same batches). The batches are smooth synthetic images drawn from a fixed
seed, so the script needs no data set; the model starts from `--init` (e.g. the shipped weights) or a seeded
random init, and the loss weights are the shipped recipe's (image phase from iteration 1, cycle on).

    python scripts/check_train_losses.py --out before.json          # on the old code
    python scripts/check_train_losses.py --against before.json      # on the new code: max relative difference
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

# The shipped weights' last stage (weights/sdflow-lite.md, stage 7), image phase from iteration 1.
RECIPE = dict(image_loss_start=0, image_perceptual=0.1, cycle_input_blur=0.4, cycle_perceptual=32.0, ds_mode_l1=16.0,
              ds_target_blur=0.55, ds_target_chroma_blur=0.85, lattice=100.0, sr_temperature_min=0.0)


def batch(it: int, n: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random LR n×3×p/4×p/4 and HR n×3×p×p images in [0, 1] for iteration `it`."""
    g = torch.Generator().manual_seed(1000 + it)

    def smooth(size: int) -> torch.Tensor:
        coarse = torch.rand(n, 3, size // 8 + 1, size // 8 + 1, generator=g)
        fine = 0.15 * torch.rand(n, 3, size, size, generator=g)
        return (0.85 * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False) + fine).clamp(0, 1)

    return smooth(patch // 4), smooth(patch)


def run(config: str, init: str | None, steps: int, n: int, patch: int, threads: int,
        overrides: dict | None = None) -> tuple[list[dict], list[float]]:
    from sdtool.config import get_config
    from sdtool.model.sdflow import SDFlow
    from sdtool.train.config import LossWeights
    from sdtool.train.sdflow_task import SDFlowTask, load_perceptual

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if init:
        from sdtool.api import load_model

        model = load_model(init, device="cpu")
    else:
        model = SDFlow(get_config(config))
    task = SDFlowTask(model, LossWeights(**{**RECIPE, **(overrides or {})}), lr=5e-5, seed=0, perceptual=load_perceptual(torch.device("cpu")))
    logs, seconds = [], []
    for it in range(1, steps + 1):
        lr, hr = batch(it, n, patch)
        t0 = time.perf_counter()
        logs.append(task.train_step(lr, hr, it))
        seconds.append(time.perf_counter() - t0)
    return logs, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="lite")
    ap.add_argument("--init", default=None, help="weights to start from ('' = random; default: the shipped weights)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loss", action="append", default=[], help="NAME=VALUE over the recipe (repeatable)")
    ap.add_argument("--out", help="write the record here")
    ap.add_argument("--against", help="compare with this record")
    a = ap.parse_args()
    if a.init is None:
        from sdtool.resources import SDFLOW_WEIGHTS, weights_path

        a.init = str(weights_path(SDFLOW_WEIGHTS))
    from sdtool.train.launch import parse_loss_overrides

    logs, seconds = run(a.config, a.init or None, a.steps, a.batch, a.patch, a.threads, parse_loss_overrides(a.loss))
    print(f"{a.steps} steps, median {sorted(seconds)[len(seconds) // 2]:.3f} s a step (first {seconds[0]:.2f} s)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"logs": logs, "seconds": seconds}, f)
    if a.against:
        with open(a.against) as f:
            ref = json.load(f)["logs"]
        worst, where = 0.0, ""
        for it, (new, old) in enumerate(zip(logs, ref), start=1):
            for key in old:
                rel = abs(new[key] - old[key]) / max(abs(old[key]), 1e-8)
                if rel > worst:
                    worst, where = rel, f"iteration {it} {key}: {old[key]:.6g} → {new[key]:.6g}"
        print(f"max relative difference over {len(ref)} steps: {worst:.2e} ({where})")
        return 0 if worst <= 1e-4 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
