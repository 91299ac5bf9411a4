"""Batch x4 upscaling / realistic /4 downscaling of image files and folders (library behind
`sdtool upscale` and `sdtool downscale`).

`process_images` finds the input files, names the outputs, skips existing ones on request, runs the
model (tiled when the image is large) and writes the results atomically. It never prints: progress goes
through a callback and the outcome comes back as a `ProcessResult` (done / skipped / failed).

Naming (documented in the CLI help):
  * folder IN, folder OUT: OUT mirrors IN; `a/b.png` → `OUT/a/b.png` (1 sample) or `OUT/a/b_s00.png`,
    `OUT/a/b_s01.png`, … (N > 1 samples; zero-padded to at least two digits so names sort).
  * file IN, OUT a file with an image suffix: that file (`…_sKK` inserted before the suffix when N > 1);
    OUT an existing folder or a path without suffix: the folder, file named as IN.
  * file IN, no OUT: beside IN, `photo_x4_t0.8.png` / `hr_x0.25_t0.8.png` (`_c3` added for
    `--component 3`, `_sKK` for N > 1). Never over an existing file: `-2`, `-3`, … is appended until
    all names are free (with --skip-existing an existing default name is skipped instead).

Reproducibility: sample k of a file depends only on (seed, the file's path relative to IN, k, the
image), not on the other files of the run nor on tiling: one CPU `torch.Generator` per file is seeded
from sha256(seed, relative path); it draws, per sample, the mixture component (downscaling, unless
given) then the whole-image latent noise, which the tiled runner cuts per tile.

Multi-GPU: under `torchrun` (env RANK / WORLD_SIZE) file i of the sorted list goes to rank
i % WORLD_SIZE, and device "auto" means cuda:LOCAL_RANK.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np

from sdtool.errors import CheckpointError, ImageError, SdtoolError, UsageError

Task = Literal["upscale", "downscale"]
PathLike = Union[str, "os.PathLike[str]"]

# Tiling defaults, in input pixels. Tiling is on by default when the input has more pixels than
# AUTO_TILE_PIXELS (CPU) or AUTO_TILE_PIXELS_CUDA (GPU); the tile side is DEFAULT_TILE[task].
AUTO_TILE_PIXELS = 512 * 512
AUTO_TILE_PIXELS_CUDA = 1024 * 1024
DEFAULT_TILE: dict[str, int] = {"upscale": 192, "downscale": 512}
DEFAULT_OVERLAP: dict[str, int] = {"upscale": 16, "downscale": 32}
DOWNSCALE_ALIGN = 8  # HR pixels per downscale-noise pixel: tile origins must sit on this grid
MIN_TILE: dict[str, int] = {"upscale": 16, "downscale": 64}


# ---------------------------------------------------------------------------------------- results
@dataclass
class FileOutcome:
    """One input file: its outputs, what happened ("done" / "skipped" / "failed"), why it failed,
    seconds spent and notes (for example a tile halved after an out-of-memory error)."""

    source: Path
    outputs: list[Path]
    status: str
    error: Optional[str] = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass
class ProcessResult:
    """The outcome of a run. seed: the base seed used (random when none was given);
    notices: files that were not images and were left alone, and similar remarks."""

    done: list[FileOutcome] = field(default_factory=list)
    skipped: list[FileOutcome] = field(default_factory=list)
    failed: list[FileOutcome] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    seed: int = 0
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class ProgressEvent:
    """kind: "start" (total = files of this process), "file_start" (index, path, steps = samples),
    "step" (step/steps within the current file; fractional while tiles of a sample complete),
    "file_end" (outcome), "notice" (message)."""

    kind: str
    index: int = 0
    total: int = 0
    path: Optional[Path] = None
    step: float = 0.0
    steps: int = 0
    outcome: Optional[FileOutcome] = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class Job:
    """An input file, its path relative to the input root (seeds and naming), and its outputs."""

    source: Path
    rel: Path
    outputs: tuple[Path, ...]


# ---------------------------------------------------------------------------------------- naming
def sample_suffixes(samples: int) -> list[str]:
    """"" for one sample; "_s00", "_s01", … (at least two digits, enough for N) otherwise."""
    if samples == 1:
        return [""]
    width = max(2, len(str(samples - 1)))
    return [f"_s{k:0{width}d}" for k in range(samples)]


def _with_suffix_tag(path: Path, tag: str) -> Path:
    return path.with_name(f"{path.stem}{tag}{path.suffix}")


def default_tag(task: Task, temperature: float, component: Optional[int]) -> str:
    """What was done, for names written beside the input: "_x4_t0.8" / "_x0.25_t0.8[_cK]"."""
    tag = f"_x4_t{temperature:g}" if task == "upscale" else f"_x0.25_t{temperature:g}"
    if component is not None:
        tag += f"_c{component}"
    return tag


def file_seed(seed: int, rel: Path) -> int:
    """Per-file seed from the base seed and the relative path (posix), so a file's samples do not
    depend on which other files are in the run."""
    digest = hashlib.sha256(f"{seed}\0{rel.as_posix()}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def plan_jobs(
    input_path: Path,
    output: Optional[Path],
    *,
    task: Task,
    samples: int,
    temperature: float,
    component: Optional[int],
    skip_existing: bool,
) -> tuple[list[Job], list[str]]:
    """Discover input files and name their outputs. Returns (jobs, notices). Raises UsageError for
    an impossible request (missing input, folder without OUT, OUT a file for a folder)."""
    from sdtool.imageio import is_image_path

    notices: list[str] = []
    suffixes = sample_suffixes(samples)
    if not input_path.exists():
        raise UsageError(f"{input_path}: no such file or folder")

    if input_path.is_dir():
        if output is None:
            raise UsageError("OUT is required when IN is a folder")
        if output.exists() and not output.is_dir():
            raise UsageError(f"{output}: exists and is not a folder (IN is a folder)")
        out_inside = _is_within(output, input_path)
        jobs: list[Job] = []
        for path in sorted(input_path.rglob("*"), key=lambda p: p.relative_to(input_path).as_posix()):
            if not path.is_file():
                continue
            if out_inside and _is_within(path, output):
                continue  # our own outputs from an earlier run, when OUT lies inside IN
            rel = path.relative_to(input_path)
            if not is_image_path(path):
                notices.append(f"{path}: not an image file, skipped")
                continue
            base = output / rel
            jobs.append(Job(path, rel, tuple(_with_suffix_tag(base, s) for s in suffixes)))
        return jobs, notices

    if not input_path.is_file():
        raise UsageError(f"{input_path}: not a regular file")
    if not is_image_path(input_path):
        raise UsageError(f"{input_path}: not an image file (PNG, JPEG, WebP, TIFF or BMP)")
    rel = Path(input_path.name)
    if output is None:
        base = _with_suffix_tag(input_path, default_tag(task, temperature, component))
        outs = [_with_suffix_tag(base, s) for s in suffixes]
        if not (skip_existing and all(p.exists() for p in outs)):
            n = 2
            while any(p.exists() for p in outs):  # never write over an existing file
                outs = [_with_suffix_tag(_with_suffix_tag(base, f"-{n}"), s) for s in suffixes]
                n += 1
        return [Job(input_path, rel, tuple(outs))], notices
    if output.is_dir() or (not output.exists() and output.suffix == ""):
        base = output / input_path.name
    else:
        from sdtool.imageio import format_of

        try:
            format_of(output)
        except ImageError as exc:
            raise UsageError(str(exc)) from None
        base = output
    return [Job(input_path, rel, tuple(_with_suffix_tag(base, s) for s in suffixes))], notices


# ---------------------------------------------------------------------------------------- runtime
def distributed_rank() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from the environment torchrun sets; (0, 1) otherwise."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError("RANK / WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"invalid RANK={rank} / WORLD_SIZE={world}")
    return rank, world


def enable_mixed_precision(model: Any, dtype: Any) -> int:
    """Run the model's plain CNN parts (RRDB condition networks, LR content extractor) under autocast
    with `dtype`, returning float32; the invertible flow layers (couplings, 1×1 convolutions, actnorm)
    stay float32, where a low-precision inverse would drift. Returns how many modules were wrapped.

    Only meaningful on CUDA (or CPU bf16 in tests); the wrapping is per instance and idempotent."""
    import torch

    try:
        from sdtool.nets.extractor import ContentExtractor
        from sdtool.nets.rrdb import ConditionNet, SqueezedConditionNet
    except ImportError:  # pragma: no cover - stand-in models
        return 0
    safe = (ConditionNet, SqueezedConditionNet, ContentExtractor)
    wrapped = 0
    outer: list[str] = []  # wrap the outermost safe module only (a SqueezedConditionNet holds a ConditionNet)
    for name, module in model.named_modules():
        if not isinstance(module, safe) or any(name.startswith(o + ".") for o in outer):
            continue
        outer.append(name)
        if getattr(module, "_sdtool_autocast", False):
            continue
        inner = module.forward
        device_type = next(module.parameters()).device.type

        def forward(*args: Any, _inner: Any = inner, _dev: str = device_type, **kwargs: Any) -> Any:
            with torch.autocast(device_type=_dev, dtype=dtype):
                out = _inner(*args, **kwargs)
            if isinstance(out, torch.Tensor):
                return out.float()
            if isinstance(out, (tuple, list)):
                return type(out)(o.float() if isinstance(o, torch.Tensor) else o for o in out)
            return out

        module.forward = forward
        module._sdtool_autocast = True
        wrapped += 1
    return wrapped


def _pad_reflect(x: Any, mult: int, minimum: int) -> Any:
    """Pad 1×C×h×w bottom/right to multiples of `mult` and at least `minimum` (reflection; numpy's
    repeated reflection when the pad is larger than the image, so a 1-pixel image works too)."""
    import torch

    h, w = x.shape[2:]
    th, tw = max(minimum, math.ceil(h / mult) * mult), max(minimum, math.ceil(w / mult) * mult)
    if (th, tw) == (h, w):
        return x
    arr = np.pad(x.numpy(), ((0, 0), (0, 0), (0, th - h), (0, tw - w)), mode="symmetric" if min(h, w) == 1 else "reflect")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _resize_alpha(alpha: np.ndarray, height: int, width: int, task: Task) -> np.ndarray:
    import cv2

    interp = cv2.INTER_CUBIC if task == "upscale" else cv2.INTER_AREA
    return np.clip(cv2.resize(alpha, (width, height), interpolation=interp), 0.0, 1.0).astype(np.float32)


@dataclass
class _Settings:
    task: Task
    samples: int
    temperature: float
    seed: int
    component: Optional[int]
    tile: Optional[int]
    overlap: int
    skip_existing: bool
    color_fix: str = "none"


def _process_one(model: Any, job: Job, s: _Settings, step: Callable[[float, int], None]) -> list[str]:
    """Read, run every (missing) sample, write. Returns notes. Raises on failure."""
    import torch

    from sdtool.imageio import read_image, write_image
    from sdtool.colorfix import apply_color_fix
    from sdtool.tiling import run_tiled

    for out in job.outputs:
        if out.resolve() == job.source.resolve():
            raise ImageError(f"{job.source}: output would overwrite the input; choose another OUT")
    img = read_image(job.source)
    h, w = img.info.height, img.info.width
    x = torch.from_numpy(img.rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
    device = model.device
    notes: list[str] = []

    if s.task == "upscale":
        xp = _pad_reflect(x, 1, 2)
        out_h, out_w = 4 * h, 4 * w
        noise_shape = tuple(model.upscale_noise_shape(1, *xp.shape[2:]))

        def noise_size(th: int, tw: int) -> tuple[int, int]:
            return tuple(model.upscale_noise_shape(1, th, tw)[2:])  # type: ignore[return-value]

        scale, stride, align = 4.0, 1, 1
    else:
        xp = _pad_reflect(x, DOWNSCALE_ALIGN, DOWNSCALE_ALIGN)
        out_h, out_w = math.ceil(h / 4), math.ceil(w / 4)
        noise_shape = tuple(model.downscale_noise_shape(1, *xp.shape[2:]))

        def noise_size(th: int, tw: int) -> tuple[int, int]:
            return tuple(model.downscale_noise_shape(1, th, tw)[2:])  # type: ignore[return-value]

        scale, stride, align = 0.25, DOWNSCALE_ALIGN, DOWNSCALE_ALIGN

    if s.tile is None:  # automatic: tile only large inputs
        limit = AUTO_TILE_PIXELS_CUDA if device.type == "cuda" else AUTO_TILE_PIXELS
        tile = DEFAULT_TILE[s.task] if h * w > limit else 0
    else:
        tile = s.tile

    gen = torch.Generator().manual_seed(file_seed(s.seed, job.rel))
    alpha_out = _resize_alpha(img.alpha, out_h, out_w, s.task) if img.alpha is not None else None
    steps_total = s.samples
    for k, out_path in enumerate(job.outputs):
        # Draw in a fixed order for every sample, even one we skip, so sample k never depends on
        # which other samples already exist.
        comp = None
        if s.task == "downscale":
            comp = s.component if s.component is not None else int(torch.randint(model.n_components, (1,), generator=gen))
        noise = torch.randn(noise_shape, generator=gen)
        if s.skip_existing and out_path.exists():
            step(k + 1, steps_total)
            continue
        if s.task == "upscale":
            def fn(xt: Any, nt: Any) -> Any:
                return model.upscale(xt, temperature=s.temperature, noise=nt, color_fix="none")
        else:
            def fn(xt: Any, nt: Any, _c: Optional[int] = comp) -> Any:
                return model.downscale(xt, temperature=s.temperature, component=_c, noise=nt)

        res = run_tiled(
            fn, xp, noise, scale=scale, noise_stride=stride, noise_size=noise_size, tile=tile,
            overlap=s.overlap, align=align, min_tile=MIN_TILE[s.task], device=device,
            autocast_dtype=None,  # mixed precision is applied per safe module, see enable_mixed_precision
            on_oom=lambda t: notes.append(f"out of device memory: tile halved to {t} px"),
            on_tile=lambda done, total, _k=k: step(_k + done / total, steps_total),
        )
        del noise  # the whole-image noise is no longer needed; free it before the output copy
        tile = res.tile  # keep a halved tile for the next samples
        # One H×W×3 copy only (the accumulator is freed first): whole-image buffers dominate host memory.
        y_t = res.image[:, :, :out_h, :out_w].clamp_(0, 1)
        del res
        if s.task == "upscale":  # once on the whole image, so that the low-pass cannot seam at tile borders
            y_t = apply_color_fix(y_t, x, s.color_fix)
        y_t = y_t[0]
        y = y_t.permute(1, 2, 0).contiguous().numpy()
        del y_t
        write_image(out_path, y, alpha_out, img.info)
        del y
        step(k + 1, steps_total)
    return notes


def process_images(
    input_path: PathLike,
    output: Optional[PathLike] = None,
    *,
    task: Task = "upscale",
    weights: Optional[PathLike] = None,
    model: Any = None,
    device: str = "auto",
    samples: int = 1,
    temperature: float = 0.8,
    seed: Optional[int] = None,
    component: Optional[int] = None,
    tile: Optional[int] = None,
    tile_overlap: Optional[int] = None,
    skip_existing: bool = False,
    mixed_precision: Optional[bool] = None,
    color_fix: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
) -> ProcessResult:
    """Upscale x4 (task="upscale") or downscale /4 (task="downscale") a file or a folder tree.

    model: an SDFlow-like object (upscale/downscale/…_noise_shape/n_components/device); when None the
    checkpoint `weights` (default: the shipped weights) is loaded on `device`, and only if some file
    needs processing. tile: input pixels (0 = off, None = automatic, see AUTO_TILE_PIXELS);
    tile_overlap: input pixels (default 16 upscale / 32 downscale; rounded up to 8 for downscale; at most
    half the tile). color_fix: colour guard of upscaled images, "wavelet" (default), "adain" or "none"
    (see `sdtool.colorfix`; applied once to the whole image). mixed_precision: bf16/fp16 autocast
    of the CNN parts on CUDA (None = on for CUDA, off on CPU).

    Raises UsageError (bad request), CheckpointError (weights); per-file problems are captured in the
    result's `failed` list and the other files go on.
    """
    t_start = time.perf_counter()
    emit = progress or (lambda _e: None)
    if task not in ("upscale", "downscale"):
        raise UsageError(f"unknown task {task!r}")
    if samples < 1:
        raise UsageError("--samples must be at least 1")
    if not math.isfinite(temperature) or temperature < 0:
        raise UsageError("--temperature must be a finite number >= 0")
    if component is not None and task != "downscale":
        raise UsageError("--component applies to downscale only")
    if component is not None and component < 0:
        raise UsageError("--component must be >= 0")
    if tile is not None and tile < 0:
        raise UsageError("--tile must be >= 0")
    from sdtool.colorfix import COLOR_FIXES, DEFAULT_COLOR_FIX

    if color_fix is not None and task != "upscale":
        raise UsageError("--color-fix applies to upscale only")
    color_fix = DEFAULT_COLOR_FIX if color_fix is None else color_fix
    if color_fix not in COLOR_FIXES:
        raise UsageError(f"--color-fix must be one of {', '.join(COLOR_FIXES)}, got {color_fix!r}")
    overlap = DEFAULT_OVERLAP[task] if tile_overlap is None else tile_overlap
    if overlap < 0:
        raise UsageError("--tile-overlap must be >= 0")
    if task == "downscale":
        overlap = math.ceil(overlap / DOWNSCALE_ALIGN) * DOWNSCALE_ALIGN
    if tile and tile < MIN_TILE[task]:
        raise UsageError(f"--tile must be 0 (off) or at least {MIN_TILE[task]} for {task}")

    input_path = Path(input_path)
    out_path = Path(output) if output is not None else None
    rank, world = distributed_rank()
    seed = secrets.randbits(31) if seed is None else int(seed)
    jobs, notices = plan_jobs(
        input_path, out_path, task=task, samples=samples, temperature=temperature,
        component=component, skip_existing=skip_existing,
    )
    jobs = jobs[rank::world]
    result = ProcessResult(notices=notices, seed=seed, rank=rank, world_size=world)
    for message in notices:
        emit(ProgressEvent("notice", message=message))
    emit(ProgressEvent("start", total=len(jobs)))

    model_checked = False
    settings = _Settings(task, samples, temperature, seed, component, tile, overlap, skip_existing, color_fix)
    for index, job in enumerate(jobs):
        emit(ProgressEvent("file_start", index=index, total=len(jobs), path=job.source, steps=samples))
        if skip_existing and all(p.exists() for p in job.outputs):
            outcome = FileOutcome(job.source, list(job.outputs), "skipped")
            result.skipped.append(outcome)
            emit(ProgressEvent("file_end", index=index, total=len(jobs), path=job.source, outcome=outcome))
            continue
        if model is None or not model_checked:
            model_checked = True
            model = model if model is not None else _load(weights, device)
            if mixed_precision is None:
                mixed_precision = model.device.type == "cuda"
            if mixed_precision:
                enable_mixed_precision(model, _low_precision_dtype(model.device))
            if component is not None and not component < model.n_components:
                raise UsageError(f"--component must be in 0..{model.n_components - 1} for this model, got {component}")
        result.device = str(model.device)
        t0 = time.perf_counter()

        def step(done: float, steps: int, _i: int = index, _p: Path = job.source) -> None:
            emit(ProgressEvent("step", index=_i, total=len(jobs), path=_p, step=done, steps=steps))

        try:
            notes = _process_one(model, job, settings, step)
            outcome = FileOutcome(job.source, list(job.outputs), "done", seconds=time.perf_counter() - t0, notes=notes)
            result.done.append(outcome)
        except (UsageError, CheckpointError):
            raise
        except KeyboardInterrupt:
            raise
        except SdtoolError as exc:
            outcome = FileOutcome(job.source, list(job.outputs), "failed", str(exc), time.perf_counter() - t0)
            result.failed.append(outcome)
        except MemoryError:
            outcome = FileOutcome(job.source, list(job.outputs), "failed", f"{job.source}: out of memory",
                                  time.perf_counter() - t0)
            result.failed.append(outcome)
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
            outcome = FileOutcome(job.source, list(job.outputs), "failed",
                                  f"{job.source}: {type(exc).__name__}: {exc}", time.perf_counter() - t0)
            result.failed.append(outcome)
        emit(ProgressEvent("file_end", index=index, total=len(jobs), path=job.source, outcome=outcome))
    if model is not None:
        result.device = str(model.device)
    result.seconds = time.perf_counter() - t_start
    return result


def _low_precision_dtype(device: Any) -> Any:
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _load(weights: Optional[PathLike], device: str) -> Any:
    from sdtool.api import load_model

    model = load_model(weights, device=device)
    model.eval()
    return model


def upscale_path(input_path: PathLike, output: Optional[PathLike] = None, **kwargs: Any) -> ProcessResult:
    """x4 super-resolution of a file or folder; see `process_images`."""
    return process_images(input_path, output, task="upscale", **kwargs)


def downscale_path(input_path: PathLike, output: Optional[PathLike] = None, **kwargs: Any) -> ProcessResult:
    """Realistic /4 downscaling of a file or folder; see `process_images`."""
    return process_images(input_path, output, task="downscale", **kwargs)
