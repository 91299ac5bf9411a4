"""Library behind `sdtool sample-degradation`: N sampled LR images per HR image, with side outputs.

Files, naming, skip-existing, atomic writes, per-file seeds, error handling and results are those of
`sdtool.infer.pipeline` (the `downscale` task): `a/b.png` → `OUT/a/b.png` or `OUT/a/b_s00.png`, … . Side outputs
sit next to each LR sample:
  --save-kernels: `<name>_kernel.png` (max = white) and `<name>_kernel.npy` (float32 K×K, or K×K×h×w for a
                  spatially varying PDM), PDM / classic; SDFlow: `<name>_latent.npy` (z_d', 12×H/8×W/8);
                  ReDeg: `<name>_latent.npy` (Ω, float32 D).
  --save-latent:  `<name>_latent.npy` alone (SDFlow, ReDeg).
  --save-noise:   `<name>_noise.png` (0.5 + n/0.2) and `<name>_noise.npy` (float32 h×w×3), PDM / classic.
  every model:    `<name>.json` with the sampled parameters (SDFlow: the mixture component) when any side
                  output is asked for.
--sheet PATH writes one contact sheet PNG (per image: HR, its LR samples, kernels).
Tiling: SDFlow uses the tiled runner of `sdtool.infer.tiling` like `downscale`; PDM, ReDeg and classic are cheap
convolutions and run on the whole image (a spatially varying PDM needs K²·h·w floats per channel).
ReDeg's Ω: from `like` (one real LR image and its pseudo-HR, made by the shipped SDFlow or bicubic,
`pseudo_hr`), drawn per sample from the Ω of every image in `like_dir`, or else from the model's own pool.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from sdtool.config import DEFAULT_DOWN_TEMPERATURE
from sdtool.degrade import MODELS, DegradationSample
from sdtool.degrade.classic import ClassicConfig
from sdtool.errors import OptionError
from sdtool.infer.batch import Job, ProcessResult, ProgressCallback, pending, run_jobs
from sdtool.infer.pipeline import DEFAULT_MAX_PIXELS
from sdtool.infer.run import LazyModel, Request, plan_run, sample_file
from sdtool.seeds import resolve_seed


@dataclass
class DegradeOptions:
    """What to sample and write (see module docstring)."""

    model: str = "classic"
    samples: int = 1
    temperature: float = DEFAULT_DOWN_TEMPERATURE
    save_kernels: bool = False
    save_noise: bool = False
    sheet: Optional[Path] = None
    like: Optional[Path] = None
    like_dir: Optional[Path] = None  # ReDeg: a pool of real LR images, one drawn per sample
    save_latent: bool = False
    pseudo_hr: str = "sdflow"  # ReDeg's pseudo-HR of a real LR image: "sdflow" (the shipped SR) or "bicubic"
    tile: Optional[int] = None
    tile_overlap: Optional[int] = None  # None: DEFAULT_OVERLAP of downscaling
    overwrite: bool = False
    max_pixels: Optional[int] = None
    classic: ClassicConfig = field(default_factory=ClassicConfig)
    mix: Optional[str] = None  # model "mix": KIND[+EXTRA]=WEIGHT,… (sdtool.degrade.mix)


def _side(path: Path, tag: str, suffix: str) -> Path:
    return path.with_name(f"{path.stem}{tag}{suffix}")


def side_outputs(out: Path, opts: DegradeOptions) -> list[Path]:
    """Side files written with LR sample `out` (for skip-existing and for the user)."""
    files: list[Path] = []
    latent_models = ("sdflow", "redeg")
    if (opts.save_kernels or opts.save_latent) and opts.model in latent_models:
        files.append(_side(out, "_latent", ".npy"))
    if opts.save_kernels and opts.model not in latent_models:
        files += [_side(out, "_kernel", ".png"), _side(out, "_kernel", ".npy")]
    if opts.save_noise and opts.model not in latent_models:
        files += [_side(out, "_noise", ".png"), _side(out, "_noise", ".npy")]
    if opts.save_kernels or opts.save_noise or opts.save_latent:
        files.append(_side(out, "", ".json"))
    return files


class DegradationSampler:
    """A sampler of `sample-degradation` (see `sdtool.infer.run.Sampler`): sample(y, generator, request) →
    DegradationSample, y 1×3×H×W in [0, 1]. One subclass per model; `transfer` holds what `like` / `like_dir`
    fitted (for the models that can)."""

    def __init__(self, model: Any, opts: DegradeOptions) -> None:
        self.model, self.opts = model, opts
        self.transfer: Optional[dict[str, Any]] = None

    @property
    def device(self) -> Any:
        return self.model.device

    def prepare_transfer(self, real_lr: Any, y_example: Any) -> None:
        raise OptionError("like", "needs {model} sdflow, pdm or redeg (the others have nothing to fit)", ("model",))

    def prepare_pool(self, real_lrs: list, names: list[str]) -> None:
        raise OptionError("like_dir", "needs {model} redeg (a pool of degradations Ω)", ("model",))

    def sample(self, y: Any, gen: Any, req: Request) -> Optional[DegradationSample]:
        raise NotImplementedError


class ClassicSampler(DegradationSampler):
    """The classic blur / resize / noise / JPEG chain (`sdtool.degrade.classic`), on the CPU."""

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cpu")

    def sample(self, y: Any, gen: Any, req: Request) -> DegradationSample:
        return self.model.sample(y.to(self.device), generator=gen)


class BicubicSampler(ClassicSampler):
    """MATLAB bicubic /4: no randomness."""

    def sample(self, y: Any, gen: Any, req: Request) -> DegradationSample:
        from sdtool.resize import imresize

        return DegradationSample(lr=imresize(y.cpu(), 0.25).clamp(0, 1), params=[{}])


class SDFlowSampler(DegradationSampler):
    """SDFlow's downscaling: the draws and the tiled run of `downscale` (`sdtool.infer.sampling`); a transfer
    (`like`) gives the latent's mean and spread instead of the mixture's."""

    def prepare_transfer(self, real_lr: Any, y_example: Any) -> None:
        from sdtool.degrade.transfer import sdflow_degradation_stats

        self.transfer = sdflow_degradation_stats(self.model, real_lr)

    def sample(self, y: Any, gen: Any, req: Request) -> Optional[DegradationSample]:
        import torch

        from sdtool.infer.sampling import Tiling, draw, noise_shape, sample

        o, (h, w) = self.opts, y.shape[-2:]
        comp: Optional[int]
        if self.transfer is not None:
            comp = int(self.transfer["component"][0])
            eps = torch.randn(noise_shape(self.model, "downscale", h, w), generator=gen)
            latent = self.transfer["mean"].cpu() + self.transfer["std"].cpu() * o.temperature * eps
            noise = None
        else:
            comp, noise = draw(self.model, "downscale", h, w, gen)
        if not req.make:
            return None
        if noise is not None:
            with torch.no_grad():  # the latent `downscale` will use, kept for --save-kernels
                latent = self.model.deg_prior.sample(noise.full().to(self.device), o.temperature,
                                                     torch.tensor([comp], device=self.device)).cpu()
        lr, _ = sample(self.model, "downscale", y.cpu(), noise, temperature=o.temperature, component=comp,
                       latent=latent if noise is None else None, tiling=Tiling(o.tile, o.tile_overlap),
                       on_tile=lambda d, t: req.step(d / t))
        return DegradationSample(lr=lr, latent=latent, component=torch.tensor([comp]),
                                 params=[{"component": comp, "transfer": self.transfer is not None}])


class ReDegSampler(DegradationSampler):
    """ReDeg with Ω drawn from the prepared pool (like / like_dir) or the model's own."""

    def prepare_transfer(self, real_lr: Any, y_example: Any) -> None:
        self.prepare_pool([real_lr], [self.opts.like.name if self.opts.like else "like"])

    def prepare_pool(self, real_lrs: list, names: list[str]) -> None:
        """Ω of each real LR image (1×3×h×w) with its pseudo-HR, kept as the pool samples draw from."""
        from sdtool.degrade.transfer import redeg_pool

        self.transfer = {"pool": redeg_pool(self.model, real_lrs, _pseudo_upscaler(self.opts.pseudo_hr, self.device)),
                         "names": names}

    def sample(self, y: Any, gen: Any, req: Request) -> DegradationSample:
        import torch

        y = y.to(self.device)
        if self.transfer is None:
            return self.model.degrade(y, temperature=self.opts.temperature, generator=gen)
        pool, names = self.transfer["pool"], self.transfer["names"]
        i = int(torch.randint(pool.shape[0], (1,), generator=gen))
        s = self.model.degrade(y, omega=pool[i : i + 1], temperature=self.opts.temperature, generator=gen)
        s.params[0]["omega_from"] = names[i]
        return s


class PDMSampler(DegradationSampler):
    """PDM on images of any size: those under 8 px a side are reflection-padded first (its 3×3 convolutions
    reflect one LR pixel) and the outputs cropped back to ceil(H/4)×ceil(W/4)."""

    def prepare_transfer(self, real_lr: Any, y_example: Any) -> None:
        from sdtool.degrade.transfer import fit_pdm_latents

        self.transfer = fit_pdm_latents(self.model, real_lr, y_example)

    def sample(self, y: Any, gen: Any, req: Request) -> DegradationSample:
        from sdtool.padding import pad_to

        y = y.to(self.device)
        h, w = y.shape[-2:]
        yp = pad_to(y, 1, 8) if min(h, w) < 8 else y
        if self.transfer is not None:
            from sdtool.degrade.transfer import pdm_transfer

            s = pdm_transfer(self.model, yp, self.transfer, self.opts.temperature, gen)
        else:
            s = self.model.degrade(yp, temperature=self.opts.temperature, generator=gen)
        if yp is y:
            return s
        lh, lw = math.ceil(h / 4), math.ceil(w / 4)
        kernel = s.kernel[..., :lh, :lw] if s.kernel is not None and s.kernel.dim() == 5 else s.kernel
        noise = s.noise[..., :lh, :lw] if s.noise is not None else None
        return DegradationSample(lr=s.lr[..., :lh, :lw], kernel=kernel, noise=noise, latent=s.latent,
                                 component=s.component, params=s.params)


def _pseudo_upscaler(method: str, device: Any) -> Optional[Callable[[Any], Any]]:
    """The x4 SR that makes ReDeg's pseudo-HR: the shipped SDFlow (seeded, default temperature and colour
    guard) for "sdflow", None (= bicubic) for "bicubic"."""
    import torch

    if method == "bicubic":
        return None
    from sdtool.api import load_model
    from sdtool.infer.colorfix import guard

    sr = load_model(None, device=device)

    def upscale(x: Any) -> Any:
        with torch.no_grad():
            y = sr.upscale(x.to(sr.device), generator=torch.Generator().manual_seed(0))
            return guard(y, x).to(x.device)

    return upscale


def sampler_weights(kind: str, weights: Optional[Path]) -> Path:
    """The checkpoint a pdm, redeg or sdflow sampler loads: `weights`, else the shipped PDM / ReDeg / SDFlow
    weights; CheckpointError when there is no such file."""
    from sdtool.api import weights_file
    from sdtool.resources import PDM_WEIGHTS, REDEG_WEIGHTS, weights_path

    if kind in ("pdm", "redeg") and weights is None:
        return weights_path(PDM_WEIGHTS if kind == "pdm" else REDEG_WEIGHTS)
    return weights_file(weights)


class MixSampler(DegradationSampler):
    """Degradations in given proportions (`sdtool.degrade.mix`): per sample, a part is drawn from the generator,
    its degrader runs, then the part's extras (JPEG, noise). params of the sample name the part. Every sample is
    made, skipped ones too: the extras draw from the generator after the part's degrader."""

    def __init__(self, mix: Any, samplers: dict[str, DegradationSampler], opts: DegradeOptions) -> None:
        super().__init__(mix, opts)
        self.mix, self.samplers = mix, samplers

    @property
    def device(self) -> Any:
        learned = [s for k, s in self.samplers.items() if k in ("sdflow", "pdm", "redeg")]
        return (learned or list(self.samplers.values()))[0].device

    def sample(self, y: Any, gen: Any, req: Request) -> DegradationSample:
        from sdtool.degrade.mix import apply_extras

        part = self.mix.parts[self.mix.choose(1, gen)[0]]
        smp = self.samplers[part.kind]
        smp.opts = self.opts
        s = smp.sample(y.to(smp.device), gen, Request(make=True, step=req.step))
        assert s is not None  # made, since asked to
        lr = apply_extras(s.lr, part.extras, self.opts.classic, gen) if part.extras else s.lr
        params = [{**(s.params[0] if s.params else {}), "degradation": part.label}]
        return DegradationSample(lr=lr, kernel=s.kernel, noise=s.noise if not part.extras else None,
                                 latent=s.latent, component=s.component, params=params)


def load_sampler(kind: str, weights: Optional[Path], device: str, opts: DegradeOptions) -> DegradationSampler:
    """Build the sampler: classic and bicubic (no weights), pdm (default: the shipped PDM weights), redeg (default:
    the shipped ReDeg weights), sdflow (default: the shipped SDFlow weights), mix (each of its degraders; `weights`
    goes to the learned one whose kind it is)."""
    if kind == "mix":
        return _load_mix(weights, device, opts)
    if kind in ("classic", "bicubic") and weights is not None:
        raise OptionError("weights", f"does not apply to {{model}} {kind}", ("model",))
    if kind == "bicubic":
        return BicubicSampler(None, opts)
    if kind == "classic":
        from sdtool.degrade.classic import ClassicDegradation

        return ClassicSampler(ClassicDegradation(opts.classic), opts)
    if kind == "pdm":
        from sdtool.checkpoint import load_pdm

        return PDMSampler(load_pdm(sampler_weights(kind, weights), device), opts)
    if kind == "redeg":
        from sdtool.api import resolve_device
        from sdtool.model.redeg import load_redeg

        return ReDegSampler(load_redeg(sampler_weights(kind, weights), resolve_device(device)), opts)
    from sdtool.api import load_model

    return SDFlowSampler(load_model(sampler_weights(kind, weights), device=device).eval(), opts)


def _load_mix(weights: Optional[Path], device: str, opts: DegradeOptions) -> MixSampler:
    from sdtool.api import checkpoint_kind
    from sdtool.degrade.mix import parse_mix

    if not opts.mix:
        raise OptionError("mix", "is needed with {model} mix, e.g. sdflow=0.7,sdflow+jpeg=0.3", ("model",))
    mix = parse_mix(opts.mix)
    target = checkpoint_kind(weights) if weights is not None else None
    if target is not None and target not in mix.kinds:
        raise OptionError("weights", f"{weights}: a {target} checkpoint, but the mix has no {target} part")
    samplers = {k: load_sampler(k, weights if k == target else None, device, opts) for k in mix.kinds}
    return MixSampler(mix, samplers, opts)


def _write_side(out: Path, s: DegradationSample, opts: DegradeOptions) -> None:
    from sdtool.degrade.sheet import write_sheet
    from sdtool.files import write_bytes_atomic

    def npy(path: Path, arr: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.save(buf, arr.astype(np.float32))
        write_bytes_atomic(path, buf.getvalue())

    if (opts.save_kernels or opts.save_latent) and s.latent is not None:
        npy(_side(out, "_latent", ".npy"), s.latent[0].detach().cpu().numpy())
    if opts.save_kernels:
        if s.kernel is not None:
            k = s.kernel[0].detach().cpu().numpy()
            npy(_side(out, "_kernel", ".npy"), k)
            view = k if k.ndim == 2 else k.mean(axis=(2, 3))
            view = view / max(float(view.max()), 1e-12)
            write_sheet(_side(out, "_kernel", ".png"), (np.repeat(view[..., None], 3, 2) * 255 + 0.5).astype(np.uint8))
    if opts.save_noise and s.noise is not None:
        n = s.noise[0].detach().cpu().permute(1, 2, 0).numpy()
        npy(_side(out, "_noise", ".npy"), n)
        write_sheet(_side(out, "_noise", ".png"), (np.clip(0.5 + n / 0.2, 0, 1) * 255 + 0.5).astype(np.uint8))
    if opts.save_kernels or opts.save_noise or opts.save_latent:
        meta = {"model": opts.model, "temperature": opts.temperature, "params": s.params[0] if s.params else {}}
        write_bytes_atomic(_side(out, "", ".json"), json.dumps(meta, indent=1).encode())


def sample_degradation(
    input_path: "str | Path",
    output: "Optional[str | Path]" = None,
    *,
    options: Optional[DegradeOptions] = None,
    weights: "Optional[str | Path]" = None,
    device: str = "auto",
    seed: Optional[int] = None,
    sampler: Optional[DegradationSampler] = None,
    progress: Optional[ProgressCallback] = None,
) -> ProcessResult:
    """Sample `options.samples` degraded LR images for every HR image of a file or folder.

    HR images: any size/format `read_image` reads (alpha is resized and kept like `downscale`). Sample k of a
    file depends only on (seed, relative path, k, image) (`sdtool.seeds`). `sampler` overrides the model (tests).
    Existing outputs (with their side files) are skipped unless `options.overwrite`; outputs are claimed like
    `downscale`'s; under torchrun each rank takes its share of the files (and writes its own --sheet, NAME_rankR).
    Raises UsageError / CheckpointError for the whole run; per-file failures are in `result.failed`.
    """
    from sdtool.degrade.sheet import make_sheet, write_sheet
    from sdtool.imageio import image_tensor, read_image

    o = options or DegradeOptions()
    t_start = time.perf_counter()
    check_options(o)
    plan = plan_run(input_path, output, task="downscale", samples=o.samples, temperature=o.temperature)
    needed = o.sheet is not None or pending(plan.jobs, o.overwrite, lambda out: side_outputs(out, o))
    weights_path = Path(weights) if weights else None
    if sampler is None and o.model in ("sdflow", "pdm") and needed:  # bad weights end the run before any work
        from sdtool.checkpoint import check_weights

        check_weights(sampler_weights(o.model, weights_path), o.model)
    if sampler is None and o.model == "redeg" and needed:  # a ReDeg file is small: loading it is the check
        sampler = load_sampler(o.model, weights_path, device, o)
    result = ProcessResult(notices=plan.notices, seed=resolve_seed(seed), rank=plan.rank, world_size=plan.world_size)
    sheet_rows: list[Any] = []
    like_rgb = image_tensor(read_image(o.like).rgb) if o.like is not None else None
    holder = LazyModel(lambda: load_sampler(o.model, weights_path, device, o), sampler)

    def work(job: Job, todo: set, step: Callable[[float, int], None]) -> list[str]:
        img = read_image(job.source, max_pixels=_max_pixels(o))
        y = image_tensor(img.rgb)
        smp = _prepared(holder.get(), o, like_rgb, y)
        row = _sample_file(smp, job, todo, img, y, result.seed, o, step)
        if o.sheet is not None:
            sheet_rows.append(row)
        return list(img.notes)

    run_jobs(plan.jobs, work, result, overwrite=o.overwrite, run_finished=o.sheet is not None, progress=progress,
             side_files=lambda out: side_outputs(out, o))
    result.device = holder.device() or result.device
    if o.sheet is not None and sheet_rows:
        sheet = Path(o.sheet)
        if plan.world_size > 1:  # one sheet per process, of its files
            sheet = sheet.with_name(f"{sheet.stem}_rank{plan.rank}{sheet.suffix}")
        write_sheet(sheet, make_sheet(sheet_rows))
    result.seconds = time.perf_counter() - t_start
    return result


def _max_pixels(o: DegradeOptions) -> int:
    return o.max_pixels if o.max_pixels is not None else DEFAULT_MAX_PIXELS["downscale"]


def _prepared(smp: DegradationSampler, o: DegradeOptions, like_rgb: Any, y: Any) -> DegradationSampler:
    """The sampler with the run's options, and what `like` / `like_dir` fit (once, at the first file)."""
    from sdtool.imageio import image_tensor, read_image
    from sdtool.train.data import list_images

    smp.opts = o
    if like_rgb is not None and smp.transfer is None:
        smp.prepare_transfer(like_rgb, y)
    if o.like_dir is not None and smp.transfer is None:
        files = list_images(o.like_dir)
        smp.prepare_pool([image_tensor(read_image(f).rgb) for f in files], [f.name for f in files])
    return smp


def check_options(o: DegradeOptions) -> None:
    """OptionError for options that cannot work together, before any file is read."""
    from sdtool.inputs import check_samples, check_temperature

    if o.model not in MODELS:
        raise OptionError("model", f"must be one of {', '.join(MODELS)}, got {o.model!r}")
    check_samples(o.samples)
    check_temperature(o.temperature)
    if o.like is not None and o.model not in ("sdflow", "pdm", "redeg"):
        raise OptionError("like", "needs {model} sdflow, pdm or redeg (the others have nothing to fit)", ("model",))
    if o.model in ("bicubic", "mix") and (o.save_kernels or o.save_noise):
        raise OptionError("", f"{{save_kernels}} and {{save_noise}} need {{model}} sdflow, pdm or classic, not "
                              f"{o.model}",
                          ("save_kernels", "save_noise", "model"))
    if o.mix is not None:
        from sdtool.degrade.mix import parse_mix

        if o.model != "mix":
            raise OptionError("mix", "applies to {model} mix", ("model",))
        parse_mix(o.mix)
    if o.like is not None and not Path(o.like).is_file():
        raise OptionError("like", f"{o.like}: no such file")
    if o.like_dir is not None:
        if o.model != "redeg":
            raise OptionError("like_dir", "needs {model} redeg (a pool of degradations Ω)", ("model",))
        if o.like is not None:
            raise OptionError("like_dir", "and {like} exclude each other", ("like",))
        if not Path(o.like_dir).is_dir():
            raise OptionError("like_dir", f"{o.like_dir}: no such folder")
    if o.save_latent and o.model not in ("sdflow", "redeg"):
        raise OptionError("save_latent", "needs {model} sdflow or redeg (the others have kernels: {save_kernels})",
                          ("model", "save_kernels"))
    if o.pseudo_hr not in ("sdflow", "bicubic"):
        raise OptionError("pseudo_hr", f"must be sdflow or bicubic, got {o.pseudo_hr!r}")


def _sample_file(smp: DegradationSampler, job: Job, todo: set, img: Any, y: Any, seed: int, o: DegradeOptions,
                 step: Callable[[float, int], None]) -> tuple[Any, list, list]:
    """Draw every sample of one file in order (the run loop), write those in `todo`; returns the contact-sheet
    row (every sample's LR and kernel when a sheet is asked for)."""
    from sdtool.imageio import write_image
    from sdtool.resize import resize_alpha

    h, w = y.shape[-2:]
    alpha = resize_alpha(img.alpha, math.ceil(h / 4), math.ceil(w / 4), "downscale") if img.alpha is not None else None
    lrs: list[np.ndarray] = []
    kernels: list[np.ndarray] = []

    def write(_k: int, out: Path, s: DegradationSample, store: bool) -> None:
        lr = s.lr[0].detach().cpu().permute(1, 2, 0).contiguous().numpy()
        if store:
            write_image(out, lr, alpha, img.info)
            _write_side(out, s, o)
        if o.sheet is not None:
            lrs.append(lr)
            if s.kernel is not None:
                kk = s.kernel[0].detach().cpu().numpy()
                kernels.append(kk if kk.ndim == 2 else kk.mean(axis=(2, 3)))

    sample_file(smp, job, todo, y, seed, write, step, make_all=o.sheet is not None)
    return img.rgb, lrs, kernels
