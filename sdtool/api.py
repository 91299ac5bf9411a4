"""Functions a Python user calls; the CLI calls the same ones.

  load_model / load_upscaler   an SDFlow checkpoint / any x4 model `upscale` runs
  upscale / downscale          a path (files and folders, as the commands) or a tensor (what they compute)
  sample_degradation           degraded LR samples of HR images
  benchmark                    the report of `sdtool benchmark`
  train                        a training run
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from sdtool.errors import CheckpointError, UsageError
from sdtool.resources import default_sdflow_weights as default_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch

SR_COMPACT_WEIGHTS = "sr-compact.safetensors"
# `upscale --model NAME`: the shipped upscalers by name ("sdflow" is the default SDFlow checkpoint).
SHIPPED_UPSCALERS = ("sdflow", "sr-compact")


def resolve_device(device: Union[str, "torch.device", None] = "auto") -> "torch.device":
    """"auto" → CUDA (the local rank's GPU under torchrun) when available, else CPU; checks a requested GPU exists."""
    import torch

    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"device '{device}' is not supported: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device '{device}' requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"device '{device}' requested but only {torch.cuda.device_count()} GPU(s) exist")
    return dev


def weights_file(path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """The checkpoint file `path` names (default: `default_weights()`); CheckpointError when there is none."""
    path = Path(path) if path is not None else default_weights()
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (.safetensors)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def load_model(path: Optional[Union[str, os.PathLike]] = None, device: Union[str, "torch.device"] = "auto") -> Any:
    """Load an SDFlow checkpoint (default: the shipped weights) in eval mode on `device`. The file is checked
    before any model is built (`sdtool.checkpoint.load_checkpoint`): CheckpointError in one line otherwise."""
    from sdtool.checkpoint import load_checkpoint

    path = weights_file(path)
    model: Any
    model, provenance = load_checkpoint(path, resolve_device(device))
    model.provenance = provenance
    model.source_path = path
    return model


def shipped_upscaler(name: str) -> Path:
    """The weights file of a shipped upscaler named by `upscale --model` (sdflow, sr-compact)."""
    from sdtool.errors import OptionError
    from sdtool.resources import weights_path

    if name not in SHIPPED_UPSCALERS:
        raise OptionError("model", f"must be one of {', '.join(SHIPPED_UPSCALERS)}, got {name!r}")
    return weights_file(default_weights()) if name == "sdflow" else weights_path(SR_COMPACT_WEIGHTS)


def checkpoint_kind(path: Union[str, os.PathLike]) -> str:
    """What a weights file holds, from its header alone: "sdflow", "sr" (an sdtool SR network), "pdm", "redeg", or
    "foreign" (anything else: left to spandrel). CheckpointError for a missing path or a folder."""
    from safetensors import safe_open

    path = weights_file(path)
    if path.suffix != ".safetensors":
        return "foreign"
    try:
        with safe_open(str(path), framework="numpy") as f:  # the header only: torch is not needed
            meta = f.metadata() or {}
    except Exception:  # unreadable here: load_model / spandrel name the problem
        return "sdflow"
    fmt = meta.get("format", "")
    if fmt == "sdtool-sdflow":
        return "sdflow"
    if fmt == "sdtool-sr":
        return "sr"
    if meta.get("kind") == "pdm" or fmt == "sdtool-pdm":
        return "pdm"
    if meta.get("kind") == "redeg":
        return "redeg"
    return "foreign"


def load_upscaler(path: Optional[Union[str, os.PathLike]] = None, device: Union[str, "torch.device"] = "auto"):
    """Any x4 model `upscale` runs, in eval mode: an SDFlow checkpoint (default: the shipped weights), an sdtool
    SR network (`sdtool train --model sr`), or any single-image x4 model spandrel reads (.pth, .safetensors…).
    The SR networks and spandrel models have `deterministic = True`."""
    if path is None:
        return load_model(None, device)
    kind = checkpoint_kind(path)
    if kind == "sdflow":
        return load_model(path, device)
    if kind in ("pdm", "redeg"):
        raise CheckpointError(f"{path}: a {kind.upper() if kind == 'pdm' else 'ReDeg'} degradation model; it "
                              "downscales "
                              f"(sample-degradation --model {kind}), it does not upscale")
    dev = resolve_device(device)
    if kind == "sr":
        from sdtool.model.sr import load_sr

        model: Any = load_sr(Path(path), dev)
        model.source_path = Path(path)
        return model
    from sdtool.model.sr import SpandrelUpscaler, load_spandrel

    return SpandrelUpscaler(load_spandrel(Path(path), dev), Path(path))


# ------------------------------------------------------------------------- what the commands do, as functions
def upscale(image: Union[str, os.PathLike, "torch.Tensor"], output: Optional[Union[str, os.PathLike]] = None, *,
            model: Any = None, weights: Optional[Union[str, os.PathLike]] = None, device: str = "auto",
            seed: Optional[int] = None, temperature: Optional[float] = None, color_fix: Optional[str] = None,
            detail: Optional[float] = None, delattice: bool = True, tile: Optional[int] = None,
            **options: Any) -> Any:
    """x4 super-resolution, with the colour guard `sdtool upscale` applies (the model alone returns the raw sample).

    image a path (file or folder): `sdtool upscale`, outputs written to `output` (or beside the input); returns
    the `ProcessResult`; further options as `sdtool.infer.pipeline.process_images` (samples, suffix, …).
    image a float tensor N×3×h×w in [0, 1]: returns N×3×4h×4w in [0, 1] on its device, one sample per image
    drawn from `seed` (random when None), tiled when large. model: an upscaler object (default: `weights`, or
    the shipped SDFlow, loaded on `device`)."""
    import torch

    if not isinstance(image, torch.Tensor):
        from sdtool.infer.pipeline import process_images

        return process_images(image, output, task="upscale", weights=weights, model=model, device=device, seed=seed,
                              temperature=temperature, color_fix=color_fix, detail=detail, delattice=delattice,
                              tile=tile, **options)
    m = model if model is not None else load_upscaler(weights, device)
    return _sample_tensor(m, "upscale", image, seed, temperature, tile, color_fix=color_fix, detail=detail,
                          delattice=delattice)


def downscale(image: Union[str, os.PathLike, "torch.Tensor"], output: Optional[Union[str, os.PathLike]] = None, *,
              model: Any = None, weights: Optional[Union[str, os.PathLike]] = None, device: str = "auto",
              seed: Optional[int] = None, temperature: Optional[float] = None, tile: Optional[int] = None,
              **options: Any) -> Any:
    """Realistic /4 downscaling with SDFlow (`sdtool downscale`): a path gives the `ProcessResult` (options as
    `process_images`), a tensor N×3×H×W in [0, 1] the N×3×ceil(H/4)×ceil(W/4) samples."""
    import torch

    if not isinstance(image, torch.Tensor):
        from sdtool.infer.pipeline import process_images

        return process_images(image, output, task="downscale", weights=weights, model=model, device=device,
                              seed=seed, temperature=temperature, tile=tile, **options)
    m = model if model is not None else load_model(weights, device)
    return _sample_tensor(m, "downscale", image, seed, temperature, tile)


def _sample_tensor(model: Any, op: str, x: "torch.Tensor", seed: Optional[int], temperature: Optional[float],
                   tile: Optional[int], **guard: Any) -> "torch.Tensor":
    """One sample per image of x as the commands make it (`sdtool.infer.sampling.sample`), drawn in order from one
    generator seeded with `seed`."""
    import torch

    from sdtool.config import DEFAULT_DOWN_TEMPERATURE, DEFAULT_SR_TEMPERATURE
    from sdtool.infer.colorfix import guard_settings
    from sdtool.infer.pipeline import check_deterministic
    from sdtool.infer.sampling import Tiling, draw, sample
    from sdtool.inputs import check_image
    from sdtool.seeds import resolve_seed

    check_image(x)
    deterministic = getattr(model, "deterministic", False)
    if deterministic:
        check_deterministic(1, temperature)
    default = DEFAULT_SR_TEMPERATURE if op == "upscale" else DEFAULT_DOWN_TEMPERATURE
    t = 0.0 if deterministic else (default if temperature is None else temperature)
    if op == "upscale":
        fix, gain = guard_settings(guard["color_fix"], guard["detail"],
                                   model.default_color_fix if deterministic else None)
        guard = {**guard, "color_fix": fix, "detail": gain}
    gen = torch.Generator().manual_seed(resolve_seed(seed))
    outs = []
    for xi in x.detach().float().cpu().split(1):
        comp, noise = draw(model, op, xi.shape[2], xi.shape[3], gen)  # type: ignore[arg-type]
        with torch.no_grad():
            y, _ = sample(model, op, xi, noise, temperature=t, component=comp, tiling=Tiling(tile),  # type: ignore[arg-type]
                          **guard)
        outs.append(y)
    return torch.cat(outs).to(x.device)


def sample_degradation(input_path: Union[str, os.PathLike], output: Optional[Union[str, os.PathLike]] = None,
                       **kwargs: Any) -> Any:
    """`sdtool sample-degradation`: degraded LR samples of HR images (PDM, ReDeg, classic, SDFlow, mixtures); see
    `sdtool.infer.sample_degradation.sample_degradation` and its `DegradeOptions`."""
    from sdtool.infer.sample_degradation import sample_degradation as run

    return run(Path(input_path), Path(output) if output is not None else None, **kwargs)


def benchmark(dataset: str = "realsr", *, weights: Sequence[Union[str, os.PathLike]] = (), data_root: Any = None,
              methods: Sequence[str] = (), temperatures: Sequence[float] = (), samples: int = 1, seed: int = 0,
              device: str = "auto", split: str = "all", limit: Optional[int] = None, default_model: bool = True,
              **options: Any) -> dict:
    """`sdtool benchmark` without the files: scores the shipped SDFlow (unless `default_model` is False, or
    `weights` are given) and `methods` such as "bicubic" on a paired dataset; returns the report dict
    (`sdtool.benchmark.run_benchmark`, whose further options — downscale, tiling, save_sr, cache, … — pass
    through). Sample k of a pair is the one
    `upscale LR --seed seed` draws (`sdtool.seeds`)."""
    from sdtool import benchmark as bm

    data = bm.load_dataset(dataset, data_root, split, limit)
    chosen = bm.resolve_methods([Path(w) for w in weights], list(methods), list(temperatures), device=device,
                                default_model=default_model)
    return bm.run_benchmark(data, chosen, samples=samples, seed=seed, **options)


def train(lr_dir: Any = None, hr_dir: Any = None, out: Any = "runs/train", **options: Any) -> Any:
    """`sdtool train`: options as `sdtool.train.launch.TrainOptions.flat` (model, config, iters, lr, …); returns
    the run's result (iterations, seconds)."""
    from pathlib import Path as _Path

    from sdtool.train.launch import TrainOptions, train as run

    return run(TrainOptions.flat(lr_dir=lr_dir, hr_dir=hr_dir, out_dir=_Path(out), **options))
