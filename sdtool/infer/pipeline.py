"""Batch x4 upscaling / realistic /4 downscaling of image files and folders (library behind
`sdtool upscale` and `sdtool downscale`).

`process_images` checks the options, plans this process's files and runs them through the run loop
(`sdtool.infer.run`) with the sampler of its model: `SDFlowUpscale`, `SDFlowDownscale` or, for a deterministic
x4 network, `NetUpscale`. Each reads nothing but the image tensor and the file's generator, draws its sample
(`sdtool.infer.sampling`: tiled, colour guard once on the whole image), and the writer here resizes to
--outscale and writes atomically. It never prints: progress goes through a callback and the outcome comes
back as a `ProcessResult`. Seeds: `sdtool.seeds`; multi-GPU: `sdtool.infer.run`.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from sdtool.config import DEFAULT_DOWN_TEMPERATURE, DEFAULT_SR_TEMPERATURE
from sdtool.errors import OptionError, UsageError
from sdtool.infer.batch import Job, ProcessResult, ProgressCallback, ProgressEvent, pending, run_jobs
from sdtool.infer.jobs import Naming, Task, default_tag, sample_suffixes
from sdtool.infer.run import LazyModel, Request, plan_run, sample_file
from sdtool.inputs import check_samples, check_temperature
from sdtool.resize import resize_alpha, resize_image
from sdtool.seeds import resolve_seed

if TYPE_CHECKING:  # pragma: no cover - torch loads only once the weights are known to be good (process_images)
    import torch

    from sdtool.infer.colorfix import ColorFix
    from sdtool.infer.sampling import Tiling

__all__ = ["DEFAULT_MAX_PIXELS", "ProcessResult", "ProgressEvent", "default_tag", "output_size", "process_images",
           "sample_suffixes"]

PathLike = Union[str, "os.PathLike[str]"]

# Inputs with more pixels are refused from the header, before decoding (like image libraries' decompression-
# bomb limit). Upscaling writes 16× the pixels: 16 MP in is a 256 MP, 768 MB output.
DEFAULT_MAX_PIXELS: dict[str, int] = {"upscale": 16_000_000, "downscale": 100_000_000}
MAX_OUTSCALE = 16.0  # --outscale: beyond this an output is mostly resampling, and 256× the input's pixels


@dataclass
class _Settings:
    task: Task
    samples: int
    temperature: float
    seed: int
    component: Optional[int]
    tiling: Tiling
    color_fix: ColorFix = "none"
    detail: float = 1.0
    max_pixels: Optional[int] = None
    delattice: bool = True
    outscale: float = 4.0
    quality: Optional[int] = None


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the system: glibc keeps what the tiles of a big photo freed, so without this
    a process's footprint stays at its peak (measured: 600 MB after one 3840×2160 upscale)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def output_size(task: str, height: int, width: int, outscale: float = 4.0) -> tuple[int, int]:
    """Output height and width: x4 upscaled and then scaled to `outscale` × the input (each side rounded, at
    least 1 px), or downscaled /4 (rounded up)."""
    if task == "upscale":
        return max(1, round(height * outscale)), max(1, round(width * outscale))
    return math.ceil(height / 4), math.ceil(width / 4)


class SDFlowUpscale:
    """x4 SR samples of an SDFlow-like model: per sample, the seed of its noise field, then the tiled run with the
    colour guard applied once to the whole image (`sdtool.infer.sampling.sample`)."""

    op: Task = "upscale"

    def __init__(self, model: Any, s: "_Settings") -> None:
        self.model, self.s, self.tiling = model, s, s.tiling

    @property
    def device(self) -> "torch.device":
        return self.model.device

    def draw(self, x: "torch.Tensor", gen: "torch.Generator") -> tuple[Optional[int], Any]:
        from sdtool.infer.sampling import draw

        return draw(self.model, self.op, x.shape[2], x.shape[3], gen, self.s.component)

    def sample(self, x: "torch.Tensor", gen: "torch.Generator", req: Request) -> Any:
        from sdtool.infer.sampling import sample

        comp, noise = self.draw(x, gen)  # also for skipped samples: a fixed draw order
        if not req.make:
            return None
        s = self.s
        y, tile = sample(
            self.model, self.op, x, noise, temperature=s.temperature, component=comp, tiling=self.tiling,
            color_fix=s.color_fix, detail=s.detail, delattice=s.delattice,
            on_oom=lambda t: req.notes.append(f"out of device memory: tile halved to {t} px"),
            on_tile=lambda done, total: req.step(done / total), depth=req.depth,
        )
        self.tiling = replace(self.tiling, tile=tile)  # keep a halved tile for the next samples
        _return_freed_memory()  # the tiles' buffers, before the encoder needs its own
        return y


class SDFlowDownscale(SDFlowUpscale):
    """Realistic /4 samples of an SDFlow-like model: per sample, the mixture component (unless given) and the
    seed of its noise field, then the tiled run."""

    op: Task = "downscale"


class NetUpscale(SDFlowUpscale):
    """A deterministic x4 network (sdtool's SR networks, spandrel models): nothing to draw, one output per input."""

    def draw(self, x: "torch.Tensor", gen: "torch.Generator") -> tuple[Optional[int], Any]:
        from sdtool.infer.noise import NoiseField
        from sdtool.infer.sampling import noise_shape

        _, c, nh, nw = noise_shape(self.model, "upscale", x.shape[2], x.shape[3])
        return None, NoiseField(0, c, nh, nw)  # read by no one: the tiled runner only cuts it


def make_sampler(model: Any, s: "_Settings") -> SDFlowUpscale:
    """The sampler of `model` for the task of `s`."""
    if s.task == "downscale":
        return SDFlowDownscale(model, s)
    return NetUpscale(model, s) if getattr(model, "deterministic", False) else SDFlowUpscale(model, s)


def _file_work(sampler: LazyModel[SDFlowUpscale], s: "_Settings") -> Callable[[Job, set, Callable], list[str]]:
    """The run loop's work for one file: read it, sample it, resize to --outscale and write each output."""
    from sdtool.imageio import format_of, image_tensor, output_info, read_image, write_image

    def work(job: Job, todo: set, step: Callable[[float, int], None]) -> list[str]:
        img = read_image(job.source, max_pixels=s.max_pixels)
        x = image_tensor(img.rgb)
        out_h, out_w = output_size(s.task, img.info.height, img.info.width, s.outscale)
        alpha = resize_alpha(img.alpha, out_h, out_w, s.task) if img.alpha is not None else None
        info, notes = img.info, list(img.notes)
        del img  # the decoded float copy: x holds the pixels now
        # The image is kept in the bit depth it is written in (uint8 for 8-bit PNG/JPEG): no float32 copy.
        depth = output_info(info, format_of(job.outputs[0]), out_h, out_w).bit_depth

        def write(_k: int, out: Path, y: Any, _store: bool) -> None:
            if y.shape[:2] != (out_h, out_w):  # --outscale: the x4 result resized, as Real-ESRGAN does
                y = resize_image(y, out_h, out_w)
            write_image(out, y, alpha, info, quality=s.quality)

        notes += sample_file(sampler.get(), job, todo, x, s.seed, write, step, depth=depth)
        _return_freed_memory()
        return notes

    return work


def process_images(
    input_path: PathLike,
    output: Optional[PathLike] = None,
    *,
    task: Task = "upscale",
    weights: Optional[PathLike] = None,
    model: Any = None,
    device: str = "auto",
    samples: int = 1,
    temperature: Optional[float] = None,
    seed: Optional[int] = None,
    component: Optional[int] = None,
    tile: Optional[int] = None,
    tile_overlap: Optional[int] = None,
    overwrite: bool = False,
    max_pixels: Optional[int] = None,
    mixed_precision: Optional[bool] = None,
    color_fix: Optional[str] = None,
    detail: Optional[float] = None,
    outscale: Optional[float] = None,
    suffix: Optional[str] = None,
    ext: Optional[str] = None,
    quality: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    delattice: Optional[bool] = None,
) -> ProcessResult:
    """Upscale x4 (task="upscale") or downscale /4 (task="downscale") a file or a folder tree.

    model: an SDFlow-like object (upscale/downscale/…_noise_shape/n_components/device); when None the
    checkpoint `weights` (default: the shipped weights) is loaded on `device`, and only if some file
    needs processing. For upscaling, `weights` may also be an SR network (`sdtool train --model sr`) or any x4
    model spandrel reads: such deterministic models (`deterministic = True`) have one output per input, so
    samples > 1 and a temperature are refused (OptionError), their default colour guard is the wavelet guard at
    detail 1 (SR networks) or none (spandrel models), and outputs written beside the input are named NAME_x4.EXT.
    tile: input pixels (0 = off, None = automatic, see AUTO_TILE_PIXELS);
    tile_overlap: input pixels (default `DEFAULT_OVERLAP` of the task; rounded up to 8 for downscale;
    at most half the tile). Existing outputs are skipped unless `overwrite`; outputs are claimed so that several
    processes share a folder. max_pixels: refuse larger inputs (default DEFAULT_MAX_PIXELS[task]), from the
    header. color_fix: colour guard of upscaled images, "wavelet" (default), "adain" or "none"
    (`sdtool.infer.colorfix`); detail: the wavelet guard's detail gain (None: its default, see DEFAULT_DETAIL).
    delattice: take the decoder's 4-px lattice out of SR samples (None: yes; `sdtool.model.lattice`).
    mixed_precision: bf16/fp16 CNNs on CUDA (None = on for CUDA). A string OUT ending in "/" names a folder.
    outscale: upscale only, the output's scale (default 4): the x4 result is resized to outscale × the input
    (area when shrinking, Lanczos when enlarging), as Real-ESRGAN's --outscale. suffix, ext: see
    `sdtool.infer.jobs.Naming` (outputs named after their inputs). quality: JPEG / WebP quality 1-100 (default
    95).

    Raises UsageError (bad request), CheckpointError (weights); per-file problems are captured in the
    result's `failed` list and the other files go on.
    """
    t_start = time.perf_counter()
    guard = _deterministic_guard(model, weights) if task == "upscale" else None
    deterministic = guard is not None
    if deterministic:
        check_deterministic(samples, temperature)
    if temperature is None:
        temperature = DEFAULT_SR_TEMPERATURE if task == "upscale" else DEFAULT_DOWN_TEMPERATURE
    check_samples(samples)  # the outputs' names depend on these two; the other options are checked below
    check_temperature(temperature)
    outscale, quality = _check_output(task, outscale, quality)
    plan = plan_run(input_path, output, task=task, samples=samples, temperature=None if deterministic else temperature,
                    component=component, naming=Naming(suffix, ext), scale=outscale)
    if model is None and not deterministic and pending(plan.jobs, overwrite):  # bad weights end the run first
        from sdtool.api import weights_file
        from sdtool.checkpoint import check_weights

        check_weights(weights_file(weights))
    settings = _check_options(task, samples, temperature, seed, component, tile, tile_overlap, color_fix, max_pixels,
                              detail, delattice, guard)
    settings = replace(settings, outscale=outscale, quality=quality)
    result = ProcessResult(notices=plan.notices, seed=settings.seed, rank=plan.rank, world_size=plan.world_size)
    sampler = LazyModel(lambda: make_sampler(_prepare_model(model, weights, device, mixed_precision, component, task),
                                             settings))
    run_jobs(plan.jobs, _file_work(sampler, settings), result, overwrite=overwrite, progress=progress)
    result.device = sampler.device() or (str(model.device) if model is not None else result.device)
    result.seconds = time.perf_counter() - t_start
    return result


def _deterministic_guard(model: Any, weights: Optional[PathLike]) -> Optional[str]:
    """None for a model that samples (SDFlow); for a deterministic one, its default colour guard. From the model
    object, or from the weights file's header (before any work, so that a refused option costs nothing)."""
    if model is not None:
        return getattr(model, "default_color_fix", "none") if getattr(model, "deterministic", False) else None
    if weights is None or not Path(weights).is_file():
        return None
    from sdtool.api import checkpoint_kind

    return {"sr": "wavelet", "foreign": "none"}.get(checkpoint_kind(weights))


def check_deterministic(samples: int, temperature: Optional[float]) -> None:
    """OptionError for what a deterministic model cannot do: several samples, a temperature."""
    if samples > 1:
        raise OptionError("samples", f"{samples}: this model is deterministic (one output per input); leave the "
                          "option out, or use an SDFlow model to draw several samples")
    if temperature is not None:
        raise OptionError("temperature", "does not apply: this model is deterministic (it draws no samples); "
                          "leave it out")


def _check_options(task: Task, samples: int, temperature: float, seed: Optional[int], component: Optional[int],
                   tile: Optional[int], tile_overlap: Optional[int], color_fix: Optional[str],
                   max_pixels: Optional[int], detail: Optional[float] = None,
                   delattice: Optional[bool] = None, model_guard: Optional[str] = None) -> _Settings:
    """Validate the options of `process_images` (UsageError naming the option) and fill in defaults.
    model_guard: a deterministic model's default colour guard (None: SDFlow's)."""
    from sdtool.infer.colorfix import guard_settings
    from sdtool.infer.sampling import Tiling
    from sdtool.config import MIN_TILE

    if task not in ("upscale", "downscale"):
        raise UsageError(f"unknown task {task!r}")
    check_samples(samples)
    check_temperature(temperature)
    if component is not None and task != "downscale":
        raise OptionError("component", "applies to downscale only")
    if component is not None and component < 0:
        raise OptionError("component", "must be >= 0")
    if tile is not None and tile < 0:
        raise OptionError("tile", "must be >= 0")
    for name, value in (("color_fix", color_fix), ("detail", detail), ("delattice", delattice)):
        if value is not None and task != "upscale":
            raise OptionError(name, "applies to upscale only")
    fix, gain = guard_settings(color_fix, detail, model_guard)
    if tile_overlap is not None and tile_overlap < 0:
        raise OptionError("tile_overlap", "must be >= 0")
    if tile and tile < MIN_TILE[task]:
        raise OptionError("tile", f"must be 0 (off) or at least {MIN_TILE[task]} for {task}")
    if max_pixels is not None and max_pixels < 1:
        raise OptionError("max_pixels", "must be at least 1")
    return _Settings(task, samples, temperature, resolve_seed(seed), component, Tiling(tile, tile_overlap), fix, gain,
                     max_pixels if max_pixels is not None else DEFAULT_MAX_PIXELS[task], delattice is not False)


def _check_output(task: str, outscale: Optional[float], quality: Optional[int]) -> tuple[float, Optional[int]]:
    """Validate `outscale` and `quality` (OptionError naming the option); returns (outscale, quality)."""
    if outscale is not None:
        if task != "upscale":
            raise OptionError("outscale", "applies to upscale only")
        if not (math.isfinite(outscale) and 0 < outscale <= MAX_OUTSCALE):
            raise OptionError("outscale", f"must be a number in (0, {MAX_OUTSCALE:g}], got {outscale}")
    if quality is not None and not 1 <= quality <= 100:
        raise OptionError("quality", f"must be in 1..100, got {quality}")
    return (4.0 if outscale is None else float(outscale)), quality


def _prepare_model(model: Any, weights: Optional[PathLike], device: str, mixed_precision: Optional[bool],
                   component: Optional[int], task: str = "upscale") -> Any:
    model = model if model is not None else _load(weights, device, task)
    if mixed_precision is None:
        mixed_precision = model.device.type == "cuda"
    if mixed_precision and hasattr(model, "set_compute_dtype"):
        model.set_compute_dtype(_low_precision_dtype(model.device))
    if component is not None and not component < model.n_components:
        raise OptionError("component", f"must be in 0..{model.n_components - 1} for this model, got {component}")
    return model


def _low_precision_dtype(device: Any) -> Any:
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _load(weights: Optional[PathLike], device: str, task: str = "upscale") -> Any:
    from sdtool.api import load_model, load_upscaler

    model = (load_upscaler if task == "upscale" else load_model)(weights, device=device)
    model.eval()
    return model
