"""`sdtool benchmark`: SR and downscaling metrics on paired x4 datasets, comparable to published numbers.

Data: a folder of x4 pairs, found by layout (see `find_pairs`):
- StableSR-protocol crops: `test_HR/` and `test_LR/` holding the same file names (RealSR crops name both
  `*_LR4.png`, DRealSR crops `*_x1.png`);
- original DRealSR x4 test set: `test_HR/*_x1.png` with `test_LR/*_x4.png` (searched a few levels down);
- original RealSR (V3): `Canon|Nikon/Test/4/*_HR.png` beside `*_LR4.png` (LR stored at HR size is reduced
  by MATLAB bicubic /4 first, as the RealSR protocol does);
- any folder with `HR|GT|hr` and `LR|LQ|lr` subfolders.
Pairs are matched by name, never by position; the HR must be exactly 4× the LR.

Metrics (images on the uint8 grid, 0..255, float64; see sdtool.metrics):
psnr_rgb/psnr_y/ssim_rgb/ssim_y (crop border 4), lpips (alex v0.1), niqe (whole SR image),
lr_psnr (MATLAB-bicubic /4 of the SR vs the LR input, RGB, no crop), color_err (mean over R, G, B of
|mean(SR channel) − mean(HR channel)|, 0..255, crop border 4: a colour drift LPIPS does not show). With N > 1 samples the per-image value
is the mean over samples, plus lpips_best (best-of-N LPIPS) and diversity (mean per-pixel std across the
samples, 0..255 scale). Downscaling: down_psnr_real/down_lpips_real (generated LR vs the dataset's real LR)
and down_psnr_bicubic/down_lpips_bicubic (generated LR vs the MATLAB-bicubic LR of the HR).
"""

from __future__ import annotations

import math
import os
import platform
import re
import resource
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from sdtool.errors import DatasetError, UsageError
from sdtool.resize import imresize_np, quantize

SCALE = 4
KNOWN_DATASETS = ("drealsr", "realsr")
SPLITS = ("all", "train", "val")
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")
UNTILED_LR_SIDE = 128  # SR of LR inputs up to 128×128 runs in one piece
SR_TILE, SR_OVERLAP = 128, 16  # LR pixels, larger inputs
DOWN_TILE, DOWN_OVERLAP, DOWN_ALIGN = 512, 32, 8  # HR pixels

SR_KEYS = ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "lpips", "niqe", "lr_psnr", "color_err")
SAMPLE_KEYS = ("lpips_best", "diversity")
DOWN_KEYS = ("down_psnr_real", "down_lpips_real", "down_psnr_bicubic", "down_lpips_bicubic")

_HR_DIRS = ("test_hr", "hr", "gt")
_LR_DIRS = ("test_lr", "lr", "lq", "lr4", "x4")
_HR_TAGS = ("_x1", "_hr", "_gt")
_LR_TAGS = ("_x4", "_lr4", "_lr", "_lq")
_REALSR_NAME = re.compile(r"^(canon|nikon)_(\d{3})", re.IGNORECASE)

DATA_HINTS = {
    "drealsr": "the DRealSR x4 test pairs: test_HR/ and test_LR/ with the same file names (StableSR-protocol "
    "crops), or the original DRealSR x4 test_HR/*_x1.png and test_LR/*_x4.png",
    "realsr": "the RealSR x4 test pairs: test_HR/ and test_LR/ with the same file names (StableSR-protocol "
    "crops), or the original RealSR V3 Canon/ and Nikon/ folders (*_HR.png beside *_LR4.png)",
}


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class Pair:
    """One x4 pair: `name` identifies it in reports; paths to the HR and LR files."""

    name: str
    hr: Path
    lr: Path


@dataclass(frozen=True)
class Dataset:
    """Pairs sorted by name; `layout` says how they were found; `root` is the folder searched."""

    name: str
    root: Path
    layout: str
    pairs: tuple[Pair, ...]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _strip_tag(stem: str, tags: Sequence[str]) -> str:
    low = stem.lower()
    for tag in tags:
        if low.endswith(tag):
            return stem[: -len(tag)]
    return stem


def _pair_folders(hr_dir: Path, lr_dir: Path) -> tuple[list[Pair], str]:
    """Pair two folders by identical file name, else by name with _x1/_HR and _x4/_LR4 tags removed."""
    hrs, lrs = _images(hr_dir), _images(lr_dir)
    hr_names, lr_names = {p.name: p for p in hrs}, {p.name: p for p in lrs}
    common = sorted(set(hr_names) & set(lr_names))
    if common and len(common) >= max(len(hrs), len(lrs)) // 2:
        return [Pair(Path(n).stem, hr_names[n], lr_names[n]) for n in common], "same-name"
    hr_keys: dict[str, Path] = {}
    for p in hrs:
        hr_keys[_strip_tag(p.stem, _HR_TAGS)] = p
    lr_keys: dict[str, Path] = {}
    for p in lrs:
        lr_keys[_strip_tag(p.stem, _LR_TAGS)] = p
    keys = sorted(set(hr_keys) & set(lr_keys))
    return [Pair(k, hr_keys[k], lr_keys[k]) for k in keys], "tagged-names"


def _find_dir(root: Path, names: Sequence[str], depth: int = 3) -> list[Path]:
    found: list[Path] = []
    frontier = [root]
    for _ in range(depth + 1):
        nxt: list[Path] = []
        for d in frontier:
            try:
                children = sorted(c for c in d.iterdir() if c.is_dir())
            except OSError:
                continue
            for c in children:
                (found if c.name.lower() in names else nxt).append(c)
        if found:
            return found
        frontier = nxt
    return found


def _realsr_original(root: Path) -> list[Pair]:
    hrs = sorted(p for p in root.rglob("*_HR.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    # The RealSR release has Train/ and Test/; benchmark only the test part when both are present.
    if any("test" in (part.lower() for part in p.parts) for p in hrs):
        hrs = [p for p in hrs if "test" in (part.lower() for part in p.relative_to(root).parts)]
    pairs = []
    for hr in hrs:
        stem = hr.stem[: -len("_HR")]
        for tag in ("_LR4", "_lr4"):
            lr = hr.with_name(f"{stem}{tag}{hr.suffix}")
            if lr.is_file():
                pairs.append(Pair(stem, hr, lr))
                break
    return pairs


def find_pairs(root: Path) -> tuple[list[Pair], str]:
    """Find x4 pairs under `root` by layout; returns (pairs, layout name). Raises DatasetError if none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    hr_dirs = _find_dir(root, _HR_DIRS)
    for hr_dir in hr_dirs:
        for lr_dir in sorted(c for c in hr_dir.parent.iterdir() if c.is_dir() and c.name.lower() in _LR_DIRS):
            pairs, how = _pair_folders(hr_dir, lr_dir)
            if pairs:
                return pairs, f"{hr_dir.name}/{lr_dir.name} ({how})"
    pairs = _realsr_original(root)
    if pairs:
        return pairs, "realsr-original (*_HR / *_LR4)"
    if hr_dirs:
        raise DatasetError(f"{root}: found {hr_dirs[0]} but no LR folder beside it with matching file names")
    raise DatasetError(
        f"{root}: no x4 pairs found (expected test_HR/ + test_LR/ with matching names, or RealSR *_HR/*_LR4 files)"
    )


def _candidates(dataset: str, data_root: Optional[Path]) -> list[Path]:
    if data_root is not None:
        return [Path(data_root), Path(data_root) / dataset]
    env = os.environ.get("SDTOOL_DATA")
    if env:
        return [Path(env) / dataset, Path(env)]
    return [Path("data") / dataset]


def realsr_split(names: Sequence[str], split: str) -> list[str]:
    """RealSR split by scene number NNN of Canon_NNN / Nikon_NNN: train 001-040, val 041-050, all."""
    if split == "all":
        return list(names)
    out = []
    for n in names:
        m = _REALSR_NAME.match(n)
        if m is None:
            raise UsageError(f"--split {split} needs RealSR names (Canon_NNN / Nikon_NNN); '{n}' is not one")
        num = int(m.group(2))
        if (split == "val" and 41 <= num <= 50) or (split == "train" and 1 <= num <= 40):
            out.append(n)
    return out


def load_dataset(
    dataset: str, data_root: Optional[Path] = None, split: str = "all", limit: Optional[int] = None
) -> Dataset:
    """Resolve `dataset` (drealsr, realsr or a folder path) to its sorted pairs.

    Known names look in --data-root (or its <name>/ subfolder), else $SDTOOL_DATA/<name>, else ./data/<name>.
    Raises DatasetError naming where to put the data when nothing is there.
    """
    split = {"validation": "val", "valid": "val", "training": "train"}.get(split.lower(), split.lower())
    if split not in SPLITS:
        raise UsageError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    key = dataset.lower()
    if key in KNOWN_DATASETS:
        tried = _candidates(key, data_root)
        found: Optional[tuple[Path, list[Pair], str]] = None
        errors: list[str] = []
        for cand in tried:
            if not cand.is_dir():
                continue
            try:
                pairs, layout = find_pairs(cand)
                found = (cand, pairs, layout)
                break
            except DatasetError as exc:
                errors.append(str(exc))
        if found is None:
            where = " or ".join(str(c) for c in tried)
            extra = f" ({errors[0]})" if errors else ""
            raise DatasetError(
                f"no {key} data found in {where}{extra}. Put {DATA_HINTS[key]} in {tried[0]}, "
                f"or pass --data-root DIR, or set SDTOOL_DATA to a folder that holds {key}/"
            )
        root, pairs, layout = found
        name = key
    else:
        root = Path(dataset)
        if data_root is not None:
            raise UsageError("--data-root applies to the known datasets (drealsr, realsr); give the folder directly")
        if not root.exists():
            raise DatasetError(f"{root}: no such folder (use --dataset drealsr, realsr or a folder of x4 pairs)")
        pairs, layout = find_pairs(root)
        name = root.name or str(root)
    names = {p.name: p for p in pairs}
    if len(names) != len(pairs):
        raise DatasetError(f"{root}: two pairs share the name; rename the files")
    keep = realsr_split(sorted(names), split)
    if not keep:
        raise DatasetError(f"{root}: no pairs in split '{split}'")
    if limit is not None:
        keep = keep[: max(limit, 0)]
    return Dataset(name=name, root=root, layout=layout, pairs=tuple(names[n] for n in keep))


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a pair as float64 H×W×3 arrays on the uint8 grid (0..255). Returns (hr, lr, notes).

    Raises DatasetError when the HR is not exactly 4× the LR (RealSR-original LR stored at HR size is
    reduced by MATLAB bicubic /4 first, after cropping the HR to a multiple of 4)."""
    from sdtool.imageio import read_image

    hr = quantize(read_image(pair.hr).rgb.astype(np.float64) * 255.0)
    lr = quantize(read_image(pair.lr).rgb.astype(np.float64) * 255.0)
    notes: list[str] = []
    if hr.shape == lr.shape:
        h4, w4 = (hr.shape[0] // SCALE) * SCALE, (hr.shape[1] // SCALE) * SCALE
        hr, lr = hr[:h4, :w4], quantize(imresize_np(lr[:h4, :w4], 1 / SCALE))
        notes.append("LR stored at HR size: reduced by MATLAB bicubic /4")
    if hr.shape[0] != SCALE * lr.shape[0] or hr.shape[1] != SCALE * lr.shape[1]:
        raise DatasetError(
            f"{pair.name}: HR {hr.shape[1]}×{hr.shape[0]} is not 4× LR {lr.shape[1]}×{lr.shape[0]} "
            f"({pair.hr} vs {pair.lr})"
        )
    return hr, lr, notes


# --------------------------------------------------------------------------------------------- methods
@dataclass
class Method:
    """Something to benchmark. kind "bicubic" needs no model; kind "model" wraps an object with the
    SDFlow API (upscale/downscale/upscale_noise_shape/downscale_noise_shape/device), upscaled with the
    colour guard `color_fix`; kind "folder" scores the x4 outputs another tool wrote to `folder`."""

    name: str
    kind: str
    model: Any = None
    temperature: float = 0.0
    weights: Optional[str] = None
    color_fix: str = "none"
    folder: Optional[Path] = None
    files: dict[str, Path] = field(default_factory=dict)  # pair name → output file, for kind "folder"


_OUTPUT_TAGS = ("_sr", "_out", "_x4", "_x4plus", "_rlt", "_s00", "_lr4", "_x1", "_hr", "_lr")


def folder_method(name: str, folder: Union[str, Path], data: Dataset) -> Method:
    """A method that scores images already in `folder`, matched to each pair by file stem (the pair's name,
    its HR or LR file stem, with common tags such as _sr/_out/_x4 removed). UsageError when the folder is
    missing or lacks an image for some pair (named), before any work."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--sr-dir {name}={folder}: no such folder")
    by_key: dict[str, Path] = {}
    for p in _images(folder):
        by_key.setdefault(p.stem.lower(), p)
        by_key.setdefault(_strip_tag(p.stem, _OUTPUT_TAGS).lower(), p)
    files: dict[str, Path] = {}
    missing: list[str] = []
    for pair in data.pairs:
        keys = (pair.name, pair.hr.stem, pair.lr.stem, _strip_tag(pair.lr.stem, _LR_TAGS))
        hit = next((by_key[k.lower()] for k in keys if k.lower() in by_key), None)
        if hit is None:
            missing.append(pair.name)
        else:
            files[pair.name] = hit
    if not files:
        raise UsageError(f"--sr-dir {name}={folder}: no image there matches a pair of {data.name} by file name")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise UsageError(f"--sr-dir {name}={folder}: no output for {', '.join(missing[:3])}{more}")
    return Method(name, "folder", folder=folder, files=files)


def unique_names(existing: Sequence[Method], more: Sequence[Method]) -> list[Method]:
    """`more`, refused (UsageError) when a name is already taken."""
    names = {m.name for m in existing}
    for m in more:
        if m.name in names:
            raise UsageError(f"method name '{m.name}' is used twice; give each --sr-dir its own NAME")
        names.add(m.name)
    return list(more)


def read_folder_output(method: Method, pair: Pair, hr_shape: tuple[int, ...]) -> np.ndarray:
    """The output image of a "folder" method for one pair, on the uint8 grid; DatasetError naming the file
    when it cannot be read or is not the HR image's size."""
    from sdtool.errors import ImageError
    from sdtool.imageio import read_image

    path = method.files[pair.name]
    try:
        img = quantize(read_image(path).rgb.astype(np.float64) * 255.0)
    except ImageError as exc:
        raise DatasetError(f"{path}: {exc}") from None
    if img.shape[:2] != hr_shape[:2]:
        raise DatasetError(f"{path}: size {img.shape[1]}×{img.shape[0]}, expected the HR size {hr_shape[1]}×{hr_shape[0]}")
    return img


def bicubic_upscale(lr: np.ndarray) -> np.ndarray:
    """MATLAB imresize(lr, 4, 'bicubic') of a uint8-grid H×W×3 image, rounded to the uint8 grid."""
    return quantize(imresize_np(lr, float(SCALE)))


def bicubic_downscale(hr: np.ndarray) -> np.ndarray:
    """MATLAB imresize(hr, 1/4, 'bicubic') (antialiased), rounded to the uint8 grid."""
    return quantize(imresize_np(hr, 1.0 / SCALE))


def _seed(seed: int, name: str, sample: int, what: str) -> int:
    return (zlib.crc32(f"{what}:{name}".encode()) + 1_000_003 * seed + 7919 * sample) % (2**63)


def _to_tensor(img: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(img / 255.0, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)


def _to_grid(t: Any) -> np.ndarray:
    return quantize(t[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64) * 255.0)


def model_upscale(model: Any, lr: np.ndarray, temperature: float, seed: int, color_fix: str = "none") -> np.ndarray:
    """SR of one uint8-grid LR image with a seeded noise draw; tiled for LR inputs larger than 128×128; the
    colour guard runs once on the whole image."""
    import torch

    from sdtool.colorfix import apply_color_fix

    x = _to_tensor(lr)
    h, w = lr.shape[:2]
    noise = torch.randn(tuple(model.upscale_noise_shape(1, h, w)), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        if max(h, w) <= UNTILED_LR_SIDE:
            y = model.upscale(x.to(model.device), temperature=temperature, noise=noise.to(model.device), color_fix="none")
        else:
            from sdtool.tiling import run_tiled

            def noise_size(th: int, tw: int) -> tuple[int, int]:
                return tuple(model.upscale_noise_shape(1, th, tw)[2:])  # type: ignore[return-value]

            y = run_tiled(
                lambda xt, nt: model.upscale(xt, temperature=temperature, noise=nt, color_fix="none"), x, noise, scale=float(SCALE),
                noise_size=noise_size, tile=SR_TILE, overlap=SR_OVERLAP, device=model.device,
            ).image
        y = apply_color_fix(y[..., : SCALE * h, : SCALE * w].float().cpu().clamp(0, 1), x, color_fix)
    return _to_grid(y)


def model_downscale(model: Any, hr: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """Realistic /4 of one uint8-grid HR image (random degradation component from the seed)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    y = _to_tensor(hr)
    h, w = hr.shape[:2]
    with torch.no_grad():
        if max(h, w) <= DOWN_TILE:
            out = model.downscale(y.to(model.device), temperature=temperature, generator=gen)
        else:
            from sdtool.tiling import run_tiled

            # Pad to the noise grid so that every tile's noise cut lines up (noise pixel = HR pixel // 8).
            ph, pw = (-h) % DOWN_ALIGN, (-w) % DOWN_ALIGN
            yp = torch.nn.functional.pad(y, (0, pw, 0, ph), mode="replicate") if ph or pw else y
            comp = int(torch.randint(model.n_components, (1,), generator=gen))
            noise = torch.randn(tuple(model.downscale_noise_shape(1, *yp.shape[2:])), generator=gen)

            def noise_size(th: int, tw: int) -> tuple[int, int]:
                return tuple(model.downscale_noise_shape(1, th, tw)[2:])  # type: ignore[return-value]

            out = run_tiled(
                lambda xt, nt: model.downscale(xt, temperature=temperature, component=comp, noise=nt), yp, noise,
                scale=1.0 / SCALE, noise_stride=DOWN_ALIGN, noise_size=noise_size, tile=DOWN_TILE,
                overlap=DOWN_OVERLAP, align=DOWN_ALIGN, min_tile=64, device=model.device,
            ).image
    return _to_grid(out[..., : math.ceil(h / SCALE), : math.ceil(w / SCALE)])


# ---------------------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class ProgressEvent:
    """method: its name; done/total: images finished for this method."""

    method: str
    done: int
    total: int


def _lpips(a: np.ndarray, b: np.ndarray, device: Any) -> float:
    from sdtool.metrics.lpips import MIN_SIDE, lpips_distance

    if min(a.shape[:2]) < MIN_SIDE:
        return math.nan  # too small for AlexNet (e.g. the LR of a tiny crop): undefined, reported as null
    return float(lpips_distance(_to_tensor(a), _to_tensor(b), device=device)[0])


def sr_metrics(sr: np.ndarray, hr: np.ndarray, lr: np.ndarray, device: Any = "cpu") -> dict[str, float]:
    """Every SR metric of one uint8-grid SR image against its HR and LR (see module docstring)."""
    from sdtool.metrics import color_error, niqe, psnr, ssim

    return {
        "psnr_rgb": psnr(sr, hr, crop_border=SCALE),
        "psnr_y": psnr(sr, hr, crop_border=SCALE, y_channel=True),
        "ssim_rgb": ssim(sr, hr, crop_border=SCALE),
        "ssim_y": ssim(sr, hr, crop_border=SCALE, y_channel=True),
        "lpips": _lpips(sr, hr, device),
        "niqe": _niqe_or_nan(niqe, sr),
        "lr_psnr": psnr(bicubic_downscale(sr), lr),
        "color_err": color_error(sr, hr, crop_border=SCALE),
    }


def _niqe_or_nan(fn: Callable[[np.ndarray], float], img: np.ndarray) -> float:
    try:
        return fn(img)
    except ValueError:  # too small or flat for NIQE's 96×96 blocks
        return math.nan


def _finite_mean(values: Sequence[float]) -> float:
    """Mean ignoring NaN (metric undefined, e.g. NIQE of a tiny image); +inf (identical images) stays inf."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _device_of(method: Method, metric_device: Optional[str]) -> Any:
    if metric_device is not None:
        return metric_device
    if method.model is not None:
        return method.model.device
    return "cpu"


def run_method(
    method: Method,
    data: Dataset,
    samples: int = 1,
    seed: int = 0,
    downscale: bool = True,
    metric_device: Optional[str] = None,
    progress: Optional[Callable[[ProgressEvent], None]] = None,
    save_sr: Optional[Path] = None,
) -> dict[str, Any]:
    """Benchmark one method on every pair (model outputs also written under `save_sr`/<method>/ when given). Returns {"per_image": [...], "summary": {...}, "wall_time_s", ...}."""
    import torch

    dev = _device_of(method, metric_device)
    cuda = method.model is not None and torch.device(method.model.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(method.model.device)
    n_draw = samples if method.kind == "model" else 1
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, pair in enumerate(data.pairs):
        hr, lr, pair_notes = read_pair(pair)
        notes.extend(f"{pair.name}: {n}" for n in pair_notes)
        row: dict[str, Any] = {"image": pair.name}
        srs: list[np.ndarray] = []
        per: list[dict[str, float]] = []
        for k in range(n_draw):
            if method.kind == "bicubic":
                sr = bicubic_upscale(lr)
            elif method.kind == "folder":
                sr = read_folder_output(method, pair, hr.shape)
            else:
                sr = model_upscale(method.model, lr, method.temperature, _seed(seed, pair.name, k, "sr"), method.color_fix)
                if save_sr is not None:
                    _save_output(save_sr, method.name, pair.name, k, n_draw, sr)
            srs.append(sr)
            per.append(sr_metrics(sr, hr, lr, dev))
        for key in SR_KEYS:
            row[key] = _finite_mean([m[key] for m in per])
        if n_draw > 1:
            row["lpips_best"] = min(m["lpips"] for m in per)
            from sdtool.metrics import diversity

            row["diversity"] = diversity(np.stack(srs))
        if downscale and method.kind != "folder":
            bic_lr = bicubic_downscale(hr)
            if method.kind == "bicubic":
                row["down_psnr_real"] = _psnr(bic_lr, lr)
                row["down_lpips_real"] = _lpips(bic_lr, lr, dev)
            else:
                d: dict[str, list[float]] = {k: [] for k in DOWN_KEYS}
                for k in range(n_draw):
                    gen_lr = model_downscale(method.model, hr, method.temperature, _seed(seed, pair.name, k, "down"))
                    d["down_psnr_real"].append(_psnr(gen_lr, lr))
                    d["down_lpips_real"].append(_lpips(gen_lr, lr, dev))
                    d["down_psnr_bicubic"].append(_psnr(gen_lr, bic_lr))
                    d["down_lpips_bicubic"].append(_lpips(gen_lr, bic_lr, dev))
                for key, vals in d.items():
                    row[key] = _finite_mean(vals)
        rows.append(row)
        if progress is not None:
            progress(ProgressEvent(method.name, i + 1, len(data.pairs)))
    wall = time.perf_counter() - t0
    keys = [k for k in (*SR_KEYS, *SAMPLE_KEYS, *DOWN_KEYS) if any(k in r for r in rows)]
    summary = {k: _finite_mean([r[k] for r in rows if k in r]) for k in keys}
    peak: dict[str, float] = {}
    if cuda:
        peak["peak_cuda_mb"] = torch.cuda.max_memory_allocated(method.model.device) / 2**20
    # ru_maxrss: kilobytes on Linux, bytes on macOS; a process-wide peak so far, not per method.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak["peak_rss_mb"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
    return {"per_image": rows, "summary": summary, "wall_time_s": wall, "memory": peak, "notes": notes}


def _save_output(root: Path, method: str, name: str, k: int, n: int, sr: np.ndarray) -> None:
    """Keep a model output as PNG (root/method/name.png, or name_sKK.png for several samples), so that it
    can be scored later with --sr-dir or compared by eye."""
    from sdtool.imageio import ImageInfo, write_image

    tag = f"_s{k:02d}" if n > 1 else ""
    path = Path(root) / method.replace("@", "_t") / f"{name}{tag}.png"
    info = ImageInfo(mode="rgb", bit_depth=8, format="png", has_alpha=False, orientation=1,
                     height=sr.shape[0], width=sr.shape[1])
    write_image(path, (sr / 255.0).astype(np.float32), None, info)


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


def resolve_methods(
    weights: Sequence[Union[str, Path]] = (),
    methods: Sequence[str] = (),
    temperatures: Sequence[float] = (0.8,),
    device: str = "auto",
    default_model: bool = True,
    color_fix: Optional[str] = None,
) -> list[Method]:
    """Build the method list: baselines named in `methods`, then each checkpoint × temperature.

    With no `weights` and `default_model`, the shipped default model is used. Names: `bicubic`; a checkpoint's
    file stem (`stem@T` when several temperatures; a numeric suffix when two stems collide)."""
    out: list[Method] = []
    for m in methods:
        if m.lower() != "bicubic":
            raise UsageError(f"unknown method '{m}': available baselines: bicubic")
        if not any(x.name == "bicubic" for x in out):
            out.append(Method("bicubic", "bicubic"))
    from sdtool.colorfix import COLOR_FIXES, DEFAULT_COLOR_FIX

    fix = DEFAULT_COLOR_FIX if color_fix is None else color_fix
    if fix not in COLOR_FIXES:
        raise UsageError(f"--color-fix must be one of {', '.join(COLOR_FIXES)}, got {fix!r}")
    temps = list(temperatures) or [0.8]
    for t in temps:
        if not (t >= 0 and math.isfinite(t)):
            raise UsageError(f"temperature must be a finite number >= 0, got {t}")
    paths: list[Optional[Path]] = [Path(w) for w in weights]
    if not paths and default_model:
        paths = [None]
    if not out and not paths:
        raise UsageError("nothing to benchmark: give --weights, --method bicubic, or leave out --no-model")
    from sdtool.api import default_weights, load_model

    used: set[str] = {m.name for m in out}
    for p in paths:
        model = load_model(p, device=device)
        stem = (p if p is not None else default_weights()).stem
        base, n = stem, 2
        while base in used:
            base, n = f"{stem}-{n}", n + 1
        used.add(base)
        for t in temps:
            name = base if len(temps) == 1 else f"{base}@{t:g}"
            out.append(Method(name, "model", model=model, temperature=float(t), weights=str(p or default_weights()),
                              color_fix=fix))
    return out


def run_benchmark(
    data: Dataset,
    methods: Sequence[Method],
    samples: int = 1,
    seed: int = 0,
    downscale: bool = True,
    metric_device: Optional[str] = None,
    progress: Optional[Callable[[ProgressEvent], None]] = None,
    save_sr: Optional[Path] = None,
) -> dict[str, Any]:
    """Run every method on `data`; returns the report dict (JSON-ready; NaN/inf become None on writing).

    Keys: summary {method: {metric: mean}}, per_image {method: [rows]}, methods {method: settings, wall time,
    memory}, settings, versions, device, wall_time_s."""
    if samples < 1:
        raise UsageError("--samples must be at least 1")
    if not methods:
        raise UsageError("nothing to benchmark")
    t0 = time.perf_counter()
    report: dict[str, Any] = {"summary": {}, "per_image": {}, "methods": {}}
    devices: set[str] = set()
    for m in methods:
        res = run_method(m, data, samples, seed, downscale, metric_device, progress, save_sr)
        report["summary"][m.name] = res["summary"]
        report["per_image"][m.name] = res["per_image"]
        info: dict[str, Any] = {"kind": m.kind, "wall_time_s": res["wall_time_s"], **res["memory"]}
        if m.kind == "model":
            info.update(weights=m.weights, temperature=m.temperature, samples=samples, color_fix=m.color_fix)
            devices.add(str(m.model.device))
            cfg = getattr(m.model, "config", None)
            if cfg is not None and hasattr(cfg, "name"):
                info["config"] = cfg.name
        if m.kind == "folder":
            info["folder"] = str(m.folder)
        if res["notes"]:
            info["notes"] = res["notes"]
        report["methods"][m.name] = info
    report["settings"] = {
        "dataset": data.name, "root": str(data.root), "layout": data.layout, "pairs": len(data.pairs),
        "scale": SCALE, "crop_border": SCALE, "samples": samples, "seed": seed, "downscale_metrics": downscale,
        "metric_device": metric_device, "psnr_ssim": "uint8 grid, float64, crop border 4; Y = BT.601 (MATLAB rgb2ycbcr)",
        "ssim": "11x11 Gaussian sigma 1.5, valid, K1 0.01, K2 0.03", "lpips": "alex v0.1 (inputs [0,1])",
        "niqe": "MATLAB parameters, 96x96 blocks, rgb2gray, whole SR image",
        "lr_psnr": "PSNR(MATLAB bicubic /4 of SR, LR input), RGB, no crop",
        "color_err": "mean over RGB of |mean(SR channel) - mean(HR channel)|, 0..255, crop border 4",
        "diversity": "mean per-pixel std across samples, 0..255 scale",
        "bicubic": "MATLAB imresize bicubic a=-0.5 (antialiased when downscaling), rounded to uint8",
    }
    report["versions"] = _versions()
    report["device"] = _describe_devices(devices)
    report["wall_time_s"] = time.perf_counter() - t0
    return report


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


# ---------------------------------------------------------------------------------------------- output
def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write `out` (JSON; NaN/inf as null) and the CSV beside it (same stem, .csv): one row per method and
    image plus a MEAN row per method. Returns (json path, csv path)."""
    import csv
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out if out.suffix.lower() == ".json" else out.with_suffix(out.suffix + ".json")
    csv_path = json_path.with_suffix(".csv")
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, json_path)
    keys = [k for k in (*SR_KEYS, *SAMPLE_KEYS, *DOWN_KEYS) if any(k in s for s in report["summary"].values())]
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["method", "image", *keys])
        for name, rows in report["per_image"].items():
            for r in rows:
                w.writerow([name, r["image"], *(_fmt_csv(r.get(k)) for k in keys)])
            w.writerow([name, "MEAN", *(_fmt_csv(report["summary"][name].get(k)) for k in keys)])
    os.replace(tmp, csv_path)
    return json_path, csv_path


def _fmt_csv(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)
