"""What a benchmark runs: bicubic, SDFlow checkpoints (with the colour guard), another tool's outputs in a folder
(`--sr-dir`), and single-image SR checkpoints of other architectures loaded with spandrel (`--baseline`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from sdtool.benchmark.data import LR_TAGS, SCALE, Dataset, Pair, images_in, strip_tag
from sdtool.config import DEFAULT_SR_TEMPERATURE
from sdtool.errors import DatasetError, OptionError, UsageError
from sdtool.infer.sampling import Tiling, draw, pad_input, run, sample
from sdtool.inputs import check_temperature
from sdtool.resize import imresize_np, quantize


@dataclass
class Method:
    """Something to benchmark. kind "bicubic" needs no model; kind "model" wraps an object with the
    SDFlow API (upscale/downscale/upscale_noise_shape/downscale_noise_shape/device), upscaled with the
    colour guard `color_fix` and its detail gain `detail`; kind "folder" scores the x4 outputs another tool
    wrote to `folder`; kind "baseline" wraps a spandrel model descriptor (any single-image x4 SR architecture
    spandrel reads)."""

    name: str
    kind: str
    model: Any = None
    temperature: float = 0.0
    weights: Optional[str] = None
    color_fix: str = "none"
    detail: float = 1.0
    delattice: bool = True
    architecture: str = ""  # kind "baseline": what spandrel recognised
    folder: Optional[Path] = None
    files: dict[str, Path] = field(default_factory=dict)  # pair name → output file, for kind "folder"


_OUTPUT_TAGS = ("_sr", "_out", "_x4", "_x4plus", "_rlt", "_s00", "_lr4", "_x1", "_hr", "_lr")


def folder_method(name: str, folder: Union[str, Path], data: Dataset) -> Method:
    """A method that scores images already in `folder`, matched to each pair by file stem (the pair's name,
    its HR or LR file stem, with common tags such as _sr/_out/_x4 removed). UsageError when the folder is
    missing or lacks an image for some pair (named), before any work."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OptionError("sr_dir", f"{name}={folder}: no such folder")
    by_key: dict[str, Path] = {}
    for p in images_in(folder):
        by_key.setdefault(p.stem.lower(), p)
        by_key.setdefault(strip_tag(p.stem, _OUTPUT_TAGS).lower(), p)
    files: dict[str, Path] = {}
    missing: list[str] = []
    for pair in data.pairs:
        keys = (pair.name, pair.hr.stem, pair.lr.stem, strip_tag(pair.lr.stem, LR_TAGS))
        hit = next((by_key[k.lower()] for k in keys if k.lower() in by_key), None)
        if hit is None:
            missing.append(pair.name)
        else:
            files[pair.name] = hit
    if not files:
        raise OptionError("sr_dir", f"{name}={folder}: no image there matches a pair of {data.name} by file name")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise OptionError("sr_dir", f"{name}={folder}: no output for {', '.join(missing[:3])}{more}")
    return Method(name, "folder", folder=folder, files=files)


def unique_names(existing: Sequence[Method], more: Sequence[Method]) -> list[Method]:
    """`more`, refused (UsageError) when a name is already taken."""
    names = {m.name for m in existing}
    for m in more:
        if m.name in names:
            raise OptionError("sr_dir", f"method name '{m.name}' is used twice; give each folder its own NAME")
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
        raise DatasetError(f"{path}: size {img.shape[1]}×{img.shape[0]}, expected the HR size "
                           f"{hr_shape[1]}×{hr_shape[0]}")
    return img


def bicubic_upscale(lr: np.ndarray) -> np.ndarray:
    """MATLAB imresize(lr, 4, 'bicubic') of a uint8-grid H×W×3 image, rounded to the uint8 grid."""
    return quantize(imresize_np(lr, float(SCALE)))


def bicubic_downscale(hr: np.ndarray) -> np.ndarray:
    """MATLAB imresize(hr, 1/4, 'bicubic') (antialiased), rounded to the uint8 grid."""
    return quantize(imresize_np(hr, 1.0 / SCALE))


def to_tensor(img: np.ndarray) -> Any:
    """A uint8-grid H×W×3 image as the models' 1×3×H×W tensor in [0, 1]."""
    from sdtool.imageio import image_tensor

    return image_tensor(img / 255.0)


def to_grid(t: Any) -> np.ndarray:
    return quantize(t[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64) * 255.0)


def _generator(seed: Any) -> Any:
    import torch

    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))


def model_upscale(model: Any, lr: np.ndarray, temperature: float, seed: Any, color_fix: str = "none",
                  tiling: Optional[Tiling] = None, detail: float = 1.0, delattice: bool = True) -> np.ndarray:
    """SR of one uint8-grid LR image, run as `upscale` runs it (sdtool.infer). seed: the generator the sample is
    drawn from (the run draws a pair's samples in order from `file_generator(seed, LR file name)`, as `upscale`
    does), or an integer to seed one."""
    import torch

    x = to_tensor(lr)
    _, noise = draw(model, "upscale", lr.shape[0], lr.shape[1], _generator(seed))
    with torch.no_grad():
        y, _ = sample(model, "upscale", x, noise, temperature=temperature, tiling=tiling or Tiling(),
                      color_fix=color_fix, detail=detail, delattice=delattice)
    return to_grid(y)


def model_downscale(model: Any, hr: np.ndarray, temperature: float, seed: Any,
                    tiling: Optional[Tiling] = None) -> np.ndarray:
    """Realistic /4 of one uint8-grid HR image (random degradation component from the generator, or an integer
    seed), run as `downscale` runs it."""
    import torch

    comp, noise = draw(model, "downscale", hr.shape[0], hr.shape[1], _generator(seed))
    with torch.no_grad():
        y, _ = sample(model, "downscale", to_tensor(hr), noise, temperature=temperature, component=comp,
                      tiling=tiling or Tiling())
    return to_grid(y)


def resolve_methods(
    weights: Sequence[Union[str, Path]] = (),
    methods: Sequence[str] = (),
    temperatures: Sequence[float] = (DEFAULT_SR_TEMPERATURE,),
    device: str = "auto",
    default_model: bool = True,
    color_fix: Optional[str] = None,
    detail: Optional[float] = None,
    delattice: bool = True,
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
    from sdtool.infer.colorfix import guard_settings

    fix, gain = guard_settings(color_fix, detail)  # checked before any model loads
    temps = list(temperatures) or [DEFAULT_SR_TEMPERATURE]
    for t in temps:
        check_temperature(t)
    paths: list[Optional[Path]] = [Path(w) for w in weights]
    if not paths and default_model:
        paths = [None]
    if not out and not paths:
        raise OptionError("", "nothing to benchmark: give {weights}, {method} bicubic, or leave out {no_model}",
                          ("weights", "method", "no_model"))
    from sdtool.api import default_weights, load_upscaler

    used: set[str] = {m.name for m in out}
    for p in paths:
        model = load_upscaler(p, device=device)
        base = _free_name((p if p is not None else default_weights()).stem, used)
        used.add(base)
        if getattr(model, "deterministic", False):  # one output per input: no temperatures; its default guard
            m_fix, m_gain = guard_settings(color_fix, detail, model.default_color_fix)
            out.append(Method(base, "model", model=model, temperature=0.0, weights=str(p), color_fix=m_fix,
                              detail=m_gain))
            continue
        for t in temps:
            name = base if len(temps) == 1 else f"{base}@{t:g}"
            out.append(Method(name, "model", model=model, temperature=float(t), weights=str(p or default_weights()),
                              color_fix=fix, detail=gain, delattice=delattice))
    return out


def _free_name(stem: str, used: "Sequence[str] | set[str]") -> str:
    """`stem`, or `stem-2`, `stem-3`, … when taken: method names label the report's rows."""
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}-{n}", n + 1
    return name


def baseline_method(path: Union[str, Path], device: str = "auto", used: Sequence[str] = ()) -> Method:
    """A checkpoint of another SR architecture (ESRGAN/Real-ESRGAN, SwinIR, HAT, DAT, …) loaded with spandrel;
    UsageError when spandrel is missing, the file is missing or not x4 single-image SR."""
    from sdtool.api import resolve_device
    from sdtool.model.sr import load_spandrel

    desc = load_spandrel(path, resolve_device(device), option="baseline")
    return Method(_free_name(Path(path).stem, used), "baseline", model=desc, weights=str(path),
                  architecture=str(desc.architecture.name))


def baseline_upscale(desc: Any, lr: np.ndarray, tiling: Optional[Tiling] = None) -> np.ndarray:
    """x4 SR of one uint8-grid LR image with a spandrel model, tiled by the same rules as `upscale`."""
    import torch

    x = to_tensor(lr)
    h, w = lr.shape[:2]
    xp = pad_input(x, "upscale")
    dummy = torch.zeros(1, 1, *xp.shape[2:])  # the tiled runner cuts noise per tile; these models take none
    with torch.no_grad():
        y, _ = run(lambda xt, _n: desc(xt.to(desc.device)).float(), xp, dummy, "upscale", tiling or Tiling(),
                   desc.device, size=(h, w))
    assert y is not None  # no sink: the runner returns the image
    return to_grid(y[..., : SCALE * h, : SCALE * w])
