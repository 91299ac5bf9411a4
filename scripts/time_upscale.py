"""CPU time of one 128×128 → 512×512 upscale for each model size, measured side by side in one run.

Usage: python scripts/time_upscale.py [--threads N] [--repeats R]
Random weights (speed does not depend on their values); prints parameters, GFLOP and median seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sdtool.config import PRESETS
from sdtool.model.sdflow import SDFlow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, args.size, args.size)
    print(f"threads={args.threads} input={args.size}x{args.size} output={4 * args.size}x{4 * args.size}")
    for name in ("paper", "lite"):
        torch.manual_seed(0)
        model = SDFlow(PRESETS[name]).eval()
        params = sum(p.numel() for p in model.parameters())
        with FlopCounterMode(display=False) as fc:
            model.upscale(x, temperature=0.8, generator=torch.Generator().manual_seed(0))
        times = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            model.upscale(x, temperature=0.8, generator=torch.Generator().manual_seed(r))
            times.append(time.perf_counter() - t0)
        print(f"{name:6s} params={params / 1e6:6.2f} M  GFLOP={fc.get_total_flops() / 1e9:7.1f}  "
              f"median={statistics.median(times):6.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
