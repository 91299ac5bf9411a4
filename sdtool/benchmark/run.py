"""Running a benchmark: every method on every pair, the metrics of each SR image, means, and the report dict."""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from sdtool.benchmark.data import SCALE, Dataset, read_pair
from sdtool.benchmark.methods import (
    Method, baseline_upscale, bicubic_downscale, bicubic_upscale, model_downscale, model_upscale, read_folder_output,
    to_tensor,
)
from sdtool.errors import OptionError, UsageError
from sdtool.infer.sampling import Tiling
from sdtool.inputs import check_samples
from sdtool.seeds import file_generator

SR_KEYS = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "lpips", "niqe", "lr_psnr", "color_err", "lattice")
SAMPLE_KEYS = ("lpips_best", "diversity")
DOWN_KEYS = ("down_psnr_real", "down_lpips_real", "down_psnr_bicubic", "down_lpips_bicubic")


@dataclass(frozen=True)
class BenchmarkProgress:
    """method: its name; image: the pair just finished; done/total: images finished for this method."""

    method: str
    done: int
    total: int
    image: str = ""


@dataclass(frozen=True)
class RunOptions:
    """How every method is run and scored. niqe_input: "gray" (MATLAB rgb2gray, as the MATLAB NIQE reference)
    or "y" (YCbCr luma, as BasicSR); cache: folder of per-image results (reruns score only what is missing);
    save_sr: also write the model outputs there."""

    samples: int = 1
    seed: int = 0
    downscale: bool = True
    metric_device: Optional[str] = None
    niqe_input: str = "gray"
    cache: Optional[Path] = None
    save_sr: Optional[Path] = None
    tiling: Tiling = Tiling()


def _lpips(a: np.ndarray, b: np.ndarray, device: Any) -> float:
    from sdtool.metrics.lpips import MIN_SIDE, lpips_distance

    if min(a.shape[:2]) < MIN_SIDE:
        return math.nan  # too small for AlexNet (e.g. the LR of a tiny crop): undefined, reported as null
    return float(lpips_distance(to_tensor(a), to_tensor(b), device=device)[0])


def sr_metrics(sr: np.ndarray, hr: np.ndarray, lr: np.ndarray, device: Any = "cpu",
               niqe_input: str = "gray") -> dict[str, float]:
    """Every SR metric of one uint8-grid SR image against its HR and LR (see module docstring)."""
    from sdtool.metrics import color_error, niqe, psnr, ssim

    return {
        "psnr_rgb": psnr(sr, hr, crop_border=SCALE),
        "psnr_y": psnr(sr, hr, crop_border=SCALE, y_channel=True),
        "ssim_rgb": ssim(sr, hr, crop_border=SCALE),
        "ssim_y": ssim(sr, hr, crop_border=SCALE, y_channel=True),
        "lpips": _lpips(sr, hr, device),
        "niqe": _niqe_or_nan(lambda im: niqe(im, input=niqe_input), sr),
        "lr_psnr": psnr(bicubic_downscale(sr), lr),
        "color_err": color_error(sr, hr, crop_border=SCALE),
        "lattice": _lattice_or_nan(sr),
    }


def _lattice_or_nan(img: np.ndarray) -> float:
    from sdtool.metrics.lattice import lattice_score

    try:
        return lattice_score(img)
    except ValueError:  # smaller than 16×16 px
        return math.nan


def hr_reference(data: Dataset) -> dict[str, float]:
    """The HR images' own value of the metrics that need no reference (the row to read a method's against)."""
    return {"lattice": finite_mean([_lattice_or_nan(read_pair(p)[0]) for p in data.pairs])}


def _niqe_or_nan(fn: Callable[[np.ndarray], float], img: np.ndarray) -> float:
    try:
        return fn(img)
    except ValueError:  # too small or flat for NIQE's 96×96 blocks
        return math.nan


def finite_mean(values: Sequence[float]) -> float:
    """Mean ignoring NaN (metric undefined, e.g. NIQE of a tiny image); +inf (identical images) stays inf."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _device_of(method: Method, metric_device: Optional[str]) -> Any:
    if metric_device is not None:
        return metric_device
    if method.model is not None and hasattr(method.model, "device"):
        return method.model.device
    return "cpu"


def _upscale(method: Method, lr: np.ndarray, hr: np.ndarray, pair: Any, gen: Any, tiling: Tiling) -> np.ndarray:
    if method.kind == "bicubic":
        return bicubic_upscale(lr)
    if method.kind == "folder":
        return read_folder_output(method, pair, hr.shape)
    if method.kind == "baseline":
        return baseline_upscale(method.model, lr, tiling)
    return model_upscale(method.model, lr, method.temperature, gen, method.color_fix, tiling, method.detail,
                         method.delattice)


def _down_metrics(method: Method, hr: np.ndarray, lr: np.ndarray, pair: Any, n_draw: int, o: RunOptions,
                  dev: Any) -> dict[str, float]:
    bic_lr = bicubic_downscale(hr)
    if method.kind == "bicubic":
        return {"down_psnr_real": _psnr(bic_lr, lr), "down_lpips_real": _lpips(bic_lr, lr, dev)}
    d: dict[str, list[float]] = {k: [] for k in DOWN_KEYS}
    gen = file_generator(o.seed, Path(pair.hr.name))  # as `downscale HR --seed S` draws them
    for _ in range(n_draw):
        gen_lr = model_downscale(method.model, hr, method.temperature, gen, o.tiling)
        d["down_psnr_real"].append(_psnr(gen_lr, lr))
        d["down_lpips_real"].append(_lpips(gen_lr, lr, dev))
        d["down_psnr_bicubic"].append(_psnr(gen_lr, bic_lr))
        d["down_lpips_bicubic"].append(_lpips(gen_lr, bic_lr, dev))
    return {key: finite_mean(vals) for key, vals in d.items()}


def score_pair(method: Method, pair: Any, o: RunOptions) -> tuple[dict[str, Any], list[str], np.ndarray]:
    """One method on one pair: the per-image row, notes, and the first SR sample (uint8 grid)."""
    hr, lr, notes = read_pair(pair)
    dev = _device_of(method, o.metric_device)
    deterministic = method.kind != "model" or getattr(method.model, "deterministic", False)
    n_draw = 1 if deterministic else o.samples
    row: dict[str, Any] = {"image": pair.name}
    srs, per = [], []
    gen = file_generator(o.seed, Path(pair.lr.name))  # sample k is `upscale LR --seed S`'s sample k
    for k in range(n_draw):
        sr = _upscale(method, lr, hr, pair, gen, o.tiling)
        if o.save_sr is not None and method.kind in ("model", "baseline"):
            _save_output(o.save_sr, method.name, pair.name, k, n_draw, sr)
        srs.append(sr)
        per.append(sr_metrics(sr, hr, lr, dev, o.niqe_input))
    for key in SR_KEYS:
        row[key] = finite_mean([m[key] for m in per])
    if n_draw > 1:
        from sdtool.metrics import diversity

        row["lpips_best"] = min(m["lpips"] for m in per)
        row["diversity"] = diversity(np.stack(srs))
    if o.downscale and (method.kind == "bicubic" or hasattr(method.model, "downscale")):
        row.update(_down_metrics(method, hr, lr, pair, n_draw, o, dev))
    return row, [f"{pair.name}: {n}" for n in notes], srs[0]


def run_method(method: Method, data: Dataset, o: RunOptions = RunOptions(),
               progress: Optional[Callable[[BenchmarkProgress], None]] = None) -> dict[str, Any]:
    """Benchmark one method on every pair. Returns {"per_image": [...], "summary": {...}, "wall_time_s", ...}.
    With `o.cache`, pairs already scored with the same settings are read back instead of run again."""
    import torch

    from sdtool.benchmark.cache import ResultCache

    cuda = method.kind == "model" and torch.device(method.model.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(method.model.device)
    cache = ResultCache(o.cache, method, o) if o.cache is not None else None
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, pair in enumerate(data.pairs):
        hit = cache.get(pair.name) if cache is not None else None
        if hit is None:
            row, pair_notes, sr0 = score_pair(method, pair, o)
            if cache is not None:
                cache.put(pair.name, row, pair_notes, sr0)
        else:
            row, pair_notes = hit
        rows.append(row)
        notes.extend(pair_notes)
        if progress is not None:
            progress(BenchmarkProgress(method.name, i + 1, len(data.pairs), pair.name))
    keys = [k for k in (*SR_KEYS, *SAMPLE_KEYS, *DOWN_KEYS) if any(k in r for r in rows)]
    summary = {k: finite_mean([r[k] for r in rows if k in r]) for k in keys}
    peak: dict[str, float] = {}
    if cuda:
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(method.model.device) / 2**20
    # ru_maxrss: kilobytes on Linux, bytes on macOS; a process-wide peak so far, not per method.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak["peak_rss_mb"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
    return {"per_image": rows, "summary": summary, "wall_time_s": time.perf_counter() - t0, "memory": peak,
            "notes": notes}


def _save_output(root: Path, method: str, name: str, k: int, n: int, sr: np.ndarray) -> None:
    """Keep an output as PNG (root/method/name.png, or name_sKK.png for several samples), so that it can be
    scored later with --sr-dir or compared by eye."""
    from sdtool.imageio import write_rgb8_png

    tag = f"_s{k:02d}" if n > 1 else ""
    write_rgb8_png(Path(root) / method.replace("@", "_t") / f"{name}{tag}.png", np.clip(sr, 0, 255).astype(np.uint8))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from sdtool.metrics import psnr

    return psnr(a, b)


def _versions() -> dict[str, str]:
    import torch

    import sdtool

    out = {"sdtool": sdtool.__version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__}
    try:
        from importlib.metadata import version

        out["lpips"] = version("lpips")
        out["scipy"] = version("scipy")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return out


def run_benchmark(
    data: Dataset,
    methods: Sequence[Method],
    samples: int = 1,
    seed: int = 0,
    downscale: bool = True,
    metric_device: Optional[str] = None,
    progress: Optional[Callable[[BenchmarkProgress], None]] = None,
    save_sr: Optional[Path] = None,
    niqe_input: str = "gray",
    cache: Optional[Path] = None,
    tiling: Tiling = Tiling(),
) -> dict[str, Any]:
    """Run every method on `data`; returns the report dict (JSON-ready; NaN/inf become None on writing).

    Keys: summary {method: {metric: mean}}, per_image {method: [rows]}, methods {method: settings, wall time,
    memory}, settings, versions, device, wall_time_s. See `RunOptions` for niqe_input, cache and save_sr."""
    check_samples(samples)
    if not methods:
        raise UsageError("nothing to benchmark")
    if niqe_input not in ("gray", "y"):
        raise OptionError("niqe_input", f"must be gray or y, got {niqe_input!r}")
    o = RunOptions(samples, seed, downscale, metric_device, niqe_input, cache, save_sr, tiling)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"summary": {}, "per_image": {}, "methods": {}}
    devices: set[str] = set()
    for m in methods:
        res = run_method(m, data, o, progress)
        report["summary"][m.name] = res["summary"]
        report["per_image"][m.name] = res["per_image"]
        report["methods"][m.name] = _method_info(m, res, samples)
        if m.kind == "model":
            devices.add(str(m.model.device))
    report["reference"] = {"HR": hr_reference(data)}
    report["settings"] = _settings(data, o)
    report["versions"] = _versions()
    report["device"] = _describe_devices(devices)
    report["wall_time_s"] = time.perf_counter() - t0
    return report


def _method_info(m: Method, res: dict[str, Any], samples: int) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": m.kind, "wall_time_s": res["wall_time_s"], **res["memory"]}
    if m.kind == "model":
        info.update(weights=m.weights, temperature=m.temperature, samples=samples, color_fix=m.color_fix,
                    detail=m.detail, delattice=m.delattice)
        cfg = getattr(m.model, "config", None)
        if cfg is not None and hasattr(cfg, "name"):
            info["config"] = cfg.name
    if m.kind == "baseline":
        info.update(weights=m.weights, architecture=m.architecture)
    if m.kind == "folder":
        info["folder"] = str(m.folder)
    if res["notes"]:
        info["notes"] = res["notes"]
    return info


def _settings(data: Dataset, o: RunOptions) -> dict[str, Any]:
    niqe = ("MATLAB parameters, 96x96 blocks, whole SR image, on "
            + ("MATLAB rgb2gray" if o.niqe_input == "gray" else "the BT.601 Y channel (BasicSR)"))
    return {
        "dataset": data.name, "root": str(data.root), "layout": data.layout, "pairs": len(data.pairs),
        "scale": SCALE, "crop_border": SCALE, "samples": o.samples, "seed": o.seed, "downscale_metrics": o.downscale,
        "metric_device": o.metric_device, "niqe_input": o.niqe_input,
        "psnr_ssim": "uint8 grid, float64, crop border 4; Y = BT.601 (MATLAB rgb2ycbcr)",
        "ssim": "11x11 Gaussian sigma 1.5, valid, K1 0.01, K2 0.03", "lpips": "alex v0.1 (inputs [0,1])",
        "niqe": niqe, "lr_psnr": "PSNR(MATLAB bicubic /4 of SR, LR input), RGB, no crop",
        "color_err": "mean over RGB of |mean(SR channel) - mean(HR channel)|, 0..255, crop border 4",
        "lattice": "mean over the 15 non-zero multiples of (H/4, W/4) of the Hann-windowed power spectrum of "
                   "grey minus Gaussian(sigma 2), each over the median of its 7x7 neighbourhood; reference row: HR",
        "diversity": "mean per-pixel std across samples, 0..255 scale",
        "bicubic": "MATLAB imresize bicubic a=-0.5 (antialiased when downscaling), rounded to uint8",
    }


def _describe_devices(devices: set[str]) -> str:
    import torch

    parts = []
    for d in sorted(devices) or ["cpu"]:
        dev = torch.device(d)
        if dev.type == "cuda":
            parts.append(f"{d} ({torch.cuda.get_device_name(dev)})")
        else:
            parts.append(f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    return ", ".join(parts)
