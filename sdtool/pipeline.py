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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np

from sdtool.errors import ImageError, UsageError

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
# Inputs with more pixels are refused from the header, before decoding (like image libraries' decompression-
# bomb limit). Upscaling writes 16× the pixels: 16 MP in is a 256 MP, 768 MB output.
DEFAULT_MAX_PIXELS: dict[str, int] = {"upscale": 16_000_000, "downscale": 100_000_000}
DEFAULT_TEMPERATURE = 0.8  # the authors' default


from sdtool.batch import (  # noqa: E402 - re-exported: the pipeline's public result types
    Job, ProcessResult, ProgressCallback, ProgressEvent, run_jobs,
)


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
    overwrite: bool = False,
    out_is_dir: bool = False,
) -> tuple[list[Job], list[str]]:
    """Discover input files and name their outputs. Returns (jobs, notices). Raises UsageError for
    an impossible request (missing input, folder without OUT, OUT a file for a folder, OUT equal to IN,
    OUT not writable). out_is_dir: OUT was written with a trailing slash, so it names a folder."""
    from sdtool.imageio import is_image_path

    notices: list[str] = []
    suffixes = sample_suffixes(samples)
    if not input_path.exists():
        raise UsageError(f"{input_path}: no such file or folder")
    if output is not None:
        check_writable_target(output, input_path)

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
        n = 2
        while not overwrite and any(p.exists() for p in outs):  # never write over an existing file
            outs = [_with_suffix_tag(_with_suffix_tag(base, f"-{n}"), s) for s in suffixes]
            n += 1
        return [Job(input_path, rel, tuple(outs))], notices
    if out_is_dir or output.is_dir() or (not output.exists() and output.suffix == ""):
        base = output / input_path.name
    else:
        from sdtool.imageio import format_of

        try:
            format_of(output)
        except ImageError as exc:
            raise UsageError(str(exc)) from None
        base = output
    outs = tuple(_with_suffix_tag(base, s) for s in suffixes)
    if any(o.resolve() == input_path.resolve() for o in outs):
        raise UsageError(f"{input_path}: the output would replace the input; choose another OUT")
    return [Job(input_path, rel, outs)], notices


_VIRTUAL_FS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_writable_target(output: Path, input_path: Path) -> None:
    """UsageError, before any work, when OUT cannot hold our outputs: it is IN, it lies in a virtual file
    system, a file stands where a folder is needed, or the nearest existing folder is not writable."""
    resolved = output.resolve()
    if resolved == input_path.resolve():
        raise UsageError(f"{output}: OUT is the input itself; choose another OUT")
    if any(resolved == v or v in resolved.parents for v in _VIRTUAL_FS):
        raise UsageError(f"{output}: is inside a virtual file system; choose another OUT")
    probe = resolved if resolved.is_dir() else resolved.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{output}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{output}: {probe} is not writable")


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
    color_fix: str = "none"
    max_pixels: Optional[int] = None


def _process_one(model: Any, job: Job, todo: set, s: _Settings, step: Callable[[float, int], None]) -> list[str]:
    """Read, run the samples whose indices are in `todo`, write them. Returns notes. Raises on failure."""
    import torch

    from sdtool.imageio import read_image, write_image
    from sdtool.colorfix import apply_color_fix
    from sdtool.tiling import run_tiled

    img = read_image(job.source, max_pixels=s.max_pixels)
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
        if k not in todo:
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
    temperature: float = DEFAULT_TEMPERATURE,
    seed: Optional[int] = None,
    component: Optional[int] = None,
    tile: Optional[int] = None,
    tile_overlap: Optional[int] = None,
    overwrite: bool = False,
    max_pixels: Optional[int] = None,
    mixed_precision: Optional[bool] = None,
    color_fix: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
) -> ProcessResult:
    """Upscale x4 (task="upscale") or downscale /4 (task="downscale") a file or a folder tree.

    model: an SDFlow-like object (upscale/downscale/…_noise_shape/n_components/device); when None the
    checkpoint `weights` (default: the shipped weights) is loaded on `device`, and only if some file
    needs processing. tile: input pixels (0 = off, None = automatic, see AUTO_TILE_PIXELS);
    tile_overlap: input pixels (default 16 upscale / 32 downscale; rounded up to 8 for downscale; at most
    half the tile). Existing outputs are skipped (a rerun resumes) unless `overwrite`; outputs are claimed
    so that several processes share one folder (sdtool.files). max_pixels: refuse inputs with more pixels
    (default DEFAULT_MAX_PIXELS[task]), read from the header before decoding. color_fix: colour guard of
    upscaled images, "wavelet" (default), "adain" or "none" (see `sdtool.colorfix`; applied once to the
    whole image). mixed_precision: bf16/fp16 autocast of the CNN parts on CUDA (None = on for CUDA, off
    on CPU). A string OUT ending in "/" names a folder.

    Raises UsageError (bad request), CheckpointError (weights); per-file problems are captured in the
    result's `failed` list and the other files go on.
    """
    t_start = time.perf_counter()
    settings = _check_options(task, samples, temperature, seed, component, tile, tile_overlap, color_fix, max_pixels)
    input_path = Path(input_path)
    out_is_dir = isinstance(output, str) and output.endswith(("/", os.sep))
    out_path = Path(output) if output is not None else None
    rank, world = distributed_rank()
    jobs, notices = plan_jobs(
        input_path, out_path, task=task, samples=samples, temperature=temperature,
        component=component, overwrite=overwrite, out_is_dir=out_is_dir,
    )
    jobs = jobs[rank::world]
    result = ProcessResult(notices=notices, seed=settings.seed, rank=rank, world_size=world)
    emit = progress or (lambda _e: None)
    for message in notices:
        emit(ProgressEvent("notice", message=message))
    holder: dict[str, Any] = {"model": model, "checked": False}

    def work(job: Job, todo: set, step: Callable[[float, int], None]) -> list[str]:
        if not holder["checked"]:  # loaded only when some file needs it
            holder["model"] = _prepare_model(holder["model"], weights, device, mixed_precision, component)
            holder["checked"] = True
        return _process_one(holder["model"], job, todo, settings, step)

    run_jobs(jobs, work, result, overwrite=overwrite, progress=progress,
             on_device=lambda: str(holder["model"].device) if holder["model"] is not None else "cpu")
    if holder["model"] is not None:
        result.device = str(holder["model"].device)
    result.seconds = time.perf_counter() - t_start
    return result


def _check_options(task: str, samples: int, temperature: float, seed: Optional[int], component: Optional[int],
                   tile: Optional[int], tile_overlap: Optional[int], color_fix: Optional[str],
                   max_pixels: Optional[int]) -> _Settings:
    """Validate the options of `process_images` (UsageError naming the option) and fill in defaults."""
    from sdtool.colorfix import COLOR_FIXES, DEFAULT_COLOR_FIX

    if task not in ("upscale", "downscale"):
        raise UsageError(f"unknown task {task!r}")
    if samples < 1:
        raise UsageError("--samples must be at least 1")
    check_temperature(temperature)
    if component is not None and task != "downscale":
        raise UsageError("--component applies to downscale only")
    if component is not None and component < 0:
        raise UsageError("--component must be >= 0")
    if tile is not None and tile < 0:
        raise UsageError("--tile must be >= 0")
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
    if max_pixels is not None and max_pixels < 1:
        raise UsageError("--max-pixels must be at least 1")
    seed = secrets.randbits(31) if seed is None else int(seed)
    return _Settings(task, samples, temperature, seed, component, tile, overlap, color_fix,  # type: ignore[arg-type]
                     max_pixels if max_pixels is not None else DEFAULT_MAX_PIXELS[task])


def check_temperature(temperature: float) -> None:
    if not math.isfinite(temperature):
        raise UsageError(f"--temperature must be a finite number, got {temperature}")
    if temperature < 0:
        raise UsageError(f"--temperature must be >= 0, got {temperature}")


def _prepare_model(model: Any, weights: Optional[PathLike], device: str, mixed_precision: Optional[bool],
                   component: Optional[int]) -> Any:
    model = model if model is not None else _load(weights, device)
    if mixed_precision is None:
        mixed_precision = model.device.type == "cuda"
    if mixed_precision:
        enable_mixed_precision(model, _low_precision_dtype(model.device))
    if component is not None and not component < model.n_components:
        raise UsageError(f"--component must be in 0..{model.n_components - 1} for this model, got {component}")
    return model


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
