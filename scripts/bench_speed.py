#!/usr/bin/env python
"""Speed and memory of `sdtool upscale` / `sdtool downscale` inference on the CPU (a benchmark, not a test).

For each model size (lite, paper), task, input size and tiling setting it runs the same code path as the CLI
(`sdtool.infer.sampling.sample`: padding, one global noise tensor, tiles, colour guard) in a *fresh child process*, so that
each figure gets its own peak RSS (resource.getrusage ru_maxrss, which can only grow within a process).
Weights are random (speed and memory do not depend on their values); image I/O is not timed.

Prints one line per configuration: output megapixels per second, seconds, peak RSS of the child, and the
growth of the peak over the baseline (model built + a small warm-up call), which is the part that depends on
the image and the tile.

    python scripts/bench_speed.py                       # lite and paper, a few sizes, tiled and untiled
    python scripts/bench_speed.py --presets lite --task upscale --sizes 64 128 --tile 32
    python scripts/bench_speed.py --threads 2

Example (CLI peak RSS of a whole run): /usr/bin/time -v sdtool downscale in.png out.png --tile 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

DEFAULT_SIZES = {"upscale": [32, 64, 96], "downscale": [128, 256, 512]}
DEFAULT_TILES = {"upscale": 32, "downscale": 128}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(preset: str, task: str, size: int, tile: int, overlap: int, threads: int) -> dict[str, float]:
    """Build the model, warm it up, then time one image of size×size input pixels (in this process)."""
    import torch

    from sdtool.config import PRESETS
    from sdtool.infer.sampling import Tiling, draw, sample
    from sdtool.model.sdflow import SDFlow

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SDFlow(PRESETS[preset]).eval()
    g = torch.Generator().manual_seed(0)
    warm = 8 if task == "upscale" else 32
    _, n = draw(model, task, warm, warm, g, component=0)
    sample(model, task, torch.rand(1, 3, warm, warm, generator=g), n, temperature=0.8, component=0)
    base = _rss_mb()
    x = torch.rand(1, 3, size, size, generator=g)
    comp, noise = draw(model, task, size, size, g, component=0)
    t0 = time.perf_counter()
    out, _ = sample(model, task, x, noise, temperature=0.8, component=comp, tiling=Tiling(tile, overlap),
                    color_fix="wavelet" if task == "upscale" else "none")  # the CLI's path, colour guard included
    seconds = time.perf_counter() - t0
    out_px = out.shape[2] * out.shape[3]
    from sdtool.tiling import tile_spans

    tiles = len(tile_spans(size, tile, min(overlap, tile // 2), 1 if task == "upscale" else 8)) ** 2 if tile else 1
    return {"seconds": seconds, "out_mp": out_px / 1e6, "mp_per_s": out_px / 1e6 / seconds,
            "peak_rss_mb": _rss_mb(), "baseline_rss_mb": base, "tiles": tiles}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["lite", "paper"])
    ap.add_argument("--task", choices=["upscale", "downscale", "both"], default="both")
    ap.add_argument("--sizes", nargs="+", type=int, help="input sides in pixels (default per task)")
    ap.add_argument("--tile", type=int, help="tile side in input pixels for the tiled runs (default 32 / 128)")
    ap.add_argument("--overlap", type=int, help="tile overlap in input pixels (default 8 / 32)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids thread oversubscription on a shared machine)")
    ap.add_argument("--one", nargs=6, metavar=("PRESET", "TASK", "SIZE", "TILE", "OVERLAP", "THREADS"),
                    help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args()
    if args.one:
        p, t, s, tl, ov, th = args.one
        print(json.dumps(run_one(p, t, int(s), int(tl), int(ov), int(th))))
        return

    tasks = ["upscale", "downscale"] if args.task == "both" else [args.task]
    print(f"{'model':6} {'task':9} {'input':>9} {'tile':>5} {'tiles':>5} {'out MP':>8} {'s':>8} "
          f"{'out MP/s':>9} {'peakRSS MB':>10} {'+over base':>10}")
    for preset in args.presets:
        for task in tasks:
            tile_size = args.tile or DEFAULT_TILES[task]
            overlap = args.overlap if args.overlap is not None else (8 if task == "upscale" else 32)
            for size in args.sizes or DEFAULT_SIZES[task]:
                for tile in (0, tile_size):
                    if tile and tile >= size:
                        continue
                    cmd = [sys.executable, __file__, "--one", preset, task, str(size), str(tile), str(overlap),
                           str(args.threads)]
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(f"{preset:6} {task:9} {size:>4}x{size:<4} failed: {proc.stderr.strip()[-300:]}")
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    print(f"{preset:6} {task:9} {size:>4}x{size:<4} {tile or 'off':>5} {r['tiles']:>5} "
                          f"{r['out_mp']:>8.4f} {r['seconds']:>8.2f} {r['mp_per_s']:>9.2e} "
                          f"{r['peak_rss_mb']:>10.0f} {r['peak_rss_mb'] - r['baseline_rss_mb']:>10.0f}",
                          flush=True)


if __name__ == "__main__":
    main()
