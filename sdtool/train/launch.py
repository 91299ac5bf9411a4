"""`train(...)`: everything `sdtool train` does, callable from Python: options are checked, the data, the task
(SDFlow, PDM or a feed-forward SR network, `sr_launch`) and the generic `runner.Runner` are set up, and the run
is launched."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from sdtool.errors import OptionError, UsageError
from sdtool.train.config import LossWeights, RunSettings
from sdtool.train.runner import RunResult, Runner


@dataclass
class TrainOptions:
    """What a training run is asked to do. `run` is the schedule and bookkeeping the generic Runner needs
    (out_dir, iters, batch, patch, lr, seed, checkpoint / log / validation cadence), defined once in
    `RunSettings`; the rest says what to train on and how. `TrainOptions.flat(...)` takes all of them as one
    set of keywords."""

    lr_dir: Optional[Path]  # real LR images (sdflow, pdm)
    hr_dir: Optional[Path]  # HR images (sdflow, pdm; sr: degraded on the fly)
    run: RunSettings
    model: str = "sdflow"  # or "pdm", "redeg", "sr"
    config: str = "lite"
    device: str = "auto"
    resume: bool = False
    paired: bool = False
    disjoint: bool = False
    name_filter: Optional[str] = None
    val_lr: Optional[Path] = None
    val_hr: Optional[Path] = None
    val_filter: Optional[str] = None
    image_loss_start: Optional[int] = None  # the one way to set it (refused in `loss`)
    init: Optional[Path] = None  # start from these SDFlow weights
    loss: tuple[str, ...] = ()  # "name=value" overrides of LossWeights fields
    ds_target_blur: Optional[str] = None  # "auto" (estimated from the unpaired folders) or σ in LR pixels
    ds_chroma_blur: Optional[str] = None  # the same for the extra blur of the target's chroma
    freeze: tuple[str, ...] = ()  # SDFlow parts left unchanged, e.g. ("hr_flow", "hf_flow", "extractor")
    pseudo_hr_dir: Optional[Path] = None  # redeg: an SR model's x4 outputs of the LR images, same names
    # model "sr" (sdtool.train.sr_launch)
    arch: str = "compact"  # or "rrdb"
    degradation: str = "sdflow"  # sdflow, pdm, classic, bicubic or mix
    mix: Optional[str] = None  # with degradation "mix": KIND[+EXTRA]=WEIGHT,… (sdtool.degrade.mix)
    degradation_weights: Optional[Path] = None  # SDFlow / PDM weights of the degrader (default: the shipped ones)
    degradation_temperature: Optional[float] = None  # sampling temperature of a learned degrader
    pairs: Optional[Path] = None  # train on pairs made beforehand (OUT of sample-degradation --pairs)

    @classmethod
    def flat(cls, **kw) -> "TrainOptions":
        """TrainOptions from one set of keywords: those of RunSettings go to `run`."""
        run_fields = {f.name for f in dataclasses.fields(RunSettings)}
        run = {k: kw.pop(k) for k in list(kw) if k in run_fields}
        run["out_dir"] = Path(run["out_dir"])
        return cls(run=RunSettings(**run), **kw)


def parse_loss_overrides(items, weights_class: type = LossWeights) -> dict:
    """["cycle_l1=0.5", ...] → {"cycle_l1": 0.5} for the fields of `weights_class`; UsageError naming a bad item."""
    fields = {f.name: f.type for f in dataclasses.fields(weights_class)}
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if name in ("image_loss_start", "gan_start"):  # one way to set it
            raise OptionError("loss", f"'{item}': set it with {{image_loss_start}}", ("image_loss_start",))
        if not sep or name not in fields:
            raise OptionError("loss", f"'{item}': expected NAME=VALUE with NAME one of {', '.join(fields)}")
        try:
            out[name] = int(value) if fields[name] in (int, "int") else float(value)
        except ValueError:
            raise OptionError("loss", f"'{item}': '{value}' is not a number") from None
    return out


def freeze_parts(model: torch.nn.Module, names) -> None:
    """Stop training the named sub-modules (they still run); UsageError for a name the model lacks."""
    parts = dict(model.named_children())
    for name in names:
        if name not in parts:
            raise OptionError("freeze", f"'{name}': the model has {', '.join(parts)}")
        parts[name].requires_grad_(False)


def loss_weights(o: TrainOptions) -> LossWeights:
    """The run's loss weights as the options give them, made in one place: defaults, then `loss` overrides,
    then `image_loss_start`. What `train` measures from the data (an "auto" ds_target_blur) replaces fields
    of these afterwards."""
    weights = dataclasses.replace(LossWeights(), **parse_loss_overrides(o.loss))
    if o.image_loss_start is not None:
        weights = dataclasses.replace(weights, image_loss_start=o.image_loss_start)
    return weights


def _build_task(o: TrainOptions, device: torch.device, settings: RunSettings, weights: LossWeights):
    if o.model == "sdflow":
        from sdtool.config import get_config
        from sdtool.model.sdflow import SDFlow
        from sdtool.train.sdflow_task import SDFlowTask, load_perceptual

        if o.init is not None:
            from sdtool.api import load_model

            model = load_model(o.init, device=device)
        else:
            try:
                cfg = get_config(o.config)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            torch.manual_seed(settings.seed)
            model = SDFlow(cfg).to(device)
        freeze_parts(model, o.freeze)
        return SDFlowTask(model, weights, lr=settings.lr, betas=settings.betas, grad_clip=settings.grad_clip,
                          seed=settings.seed,
                          paired=o.paired, amp=settings.amp, perceptual=load_perceptual(device))
    if o.model == "pdm":
        from sdtool.train.pdm_task import make_pdm_task

        return make_pdm_task(o.config, device, settings)
    if o.model == "redeg":
        from sdtool.train.redeg_task import ReDegLossWeights, make_redeg_task

        return make_redeg_task(o.config, device, settings, parse_loss_overrides(o.loss, ReDegLossWeights))
    raise OptionError("model", f"'{o.model}' is unknown: choose sdflow, pdm, redeg or sr")


def _number_or_auto(flag: str, value: str) -> Optional[float]:
    if value == "auto":
        return None
    try:
        return float(value)
    except ValueError:
        raise OptionError(flag, f"'{value}': give a σ in LR pixels or 'auto'") from None


def _measure_domain(o: TrainOptions, weights: LossWeights, sampler, lr_patch: int) -> dict:
    """--ds-target-blur / --ds-chroma-blur: numbers, or "auto" = estimated from the training crops without
    using pairs (train/domain_blur.py). Returns the LossWeights fields to set."""
    from sdtool.train.domain_blur import bank_crops, estimate_chroma_blur, estimate_domain_blur

    if o.model != "sdflow":
        return {}
    if "auto" in (o.ds_target_blur, o.ds_chroma_blur):
        lr = bank_crops(sampler.lr.images, lr_patch, per_image=4, seed=1)
        hr = bank_crops(sampler.hr.images, 4 * lr_patch, per_image=4, seed=2)
    out = {}
    if o.ds_target_blur is not None:
        sigma = _number_or_auto("ds_target_blur", o.ds_target_blur)
        out["ds_target_blur"] = estimate_domain_blur(lr, hr) if sigma is None else sigma
    if o.ds_chroma_blur is not None:
        chroma = _number_or_auto("ds_chroma_blur", o.ds_chroma_blur)
        if chroma is None:
            base = out.get("ds_target_blur", weights.ds_target_blur)
            chroma = estimate_chroma_blur(lr, hr, base)
        out["ds_target_chroma_blur"] = chroma
    return out


def _check_options(o: TrainOptions) -> None:
    """UsageError, before anything is loaded, for options that cannot work."""
    import math
    import re

    if not (math.isfinite(o.run.lr) and o.run.lr > 0):
        raise OptionError("lr", f"must be a finite number > 0, got {o.run.lr}")
    if o.run.patch % 8 or o.run.patch < 16:
        raise OptionError("patch", f"{o.run.patch}: the HR crop must be a multiple of 8 and at least 16")
    if o.paired and o.disjoint:
        raise OptionError("paired", "and {disjoint} contradict each other", ("disjoint",))
    if (o.val_lr is None) != (o.val_hr is None):
        raise OptionError("val_lr", "and {val_hr} go together", ("val_hr",))
    for option, rx in (("name_filter", o.name_filter), ("val_filter", o.val_filter)):
        if rx:
            try:
                re.compile(rx)
            except re.error as exc:
                raise OptionError(option, f"{rx!r} is not a valid regular expression: {exc}") from None
    _check_model_options(o)
    out = Path(o.run.out_dir)
    if out.exists() and not out.is_dir():
        raise OptionError("out", f"{out}: is a file; give a folder for the run")
    if o.model == "redeg":
        from sdtool.train.redeg_task import ReDegLossWeights

        parse_loss_overrides(o.loss, ReDegLossWeights)  # bad items fail before any work
        if o.run.patch < 128:
            raise OptionError("patch", f"{o.run.patch}: {{model}} redeg needs HR crops of at least 128 (LR 32, the "
                              "smallest side LPIPS takes)", ("model",))
    elif o.pseudo_hr_dir is not None:
        raise OptionError("pseudo_hr_dir", "is only used by {model} redeg", ("model",))
    if o.pseudo_hr_dir is not None and not Path(o.pseudo_hr_dir).is_dir():
        raise UsageError(f"{o.pseudo_hr_dir}: no such folder")
    if o.resume and not (out / "state.pt").is_file():
        raise OptionError("resume", f"{out}: no run to resume (no state.pt); leave it out to start one")
    for d in (o.lr_dir, o.hr_dir, o.pairs):
        if d is not None and not Path(d).is_dir():
            raise UsageError(f"{d}: no such folder")


def _check_model_options(o: TrainOptions) -> None:
    """Options that the chosen model does not use are refused, and the folders it needs are asked for."""
    sr_only = {"arch": o.arch != "compact", "degradation": o.degradation != "sdflow", "mix": o.mix,
               "degradation_weights": o.degradation_weights,
                   "degradation_temperature": o.degradation_temperature is not None,
               "pairs": o.pairs}
    ignored = {"pdm": {"loss": o.loss, "freeze": o.freeze, "init": o.init, "paired": o.paired, "val_lr": o.val_lr,
                       "val_hr": o.val_hr, "ds_target_blur": o.ds_target_blur, "ds_chroma_blur": o.ds_chroma_blur,
                       "image_loss_start": o.image_loss_start is not None, **sr_only},
               "sdflow": sr_only,
               "redeg": {"freeze": o.freeze, "init": o.init, "disjoint": o.disjoint, "ds_target_blur": o.ds_target_blur,
                         "ds_chroma_blur": o.ds_chroma_blur, "image_loss_start": o.image_loss_start is not None,
                         **sr_only},
               "sr": {"lr_dir": o.lr_dir, "paired": o.paired, "disjoint": o.disjoint, "freeze": o.freeze,
                      "ds_target_blur": o.ds_target_blur, "ds_chroma_blur": o.ds_chroma_blur}}.get(o.model, {})
    given = [flag for flag, value in ignored.items() if value]
    if given:
        names = ", ".join("{" + g + "}" for g in given)
        raise OptionError("", f"{names}: not used by {{model}} {o.model}", (*given, "model"))
    if o.model == "sr":
        if (o.hr_dir is None) == (o.pairs is None):
            raise OptionError("hr_dir", "or {pairs}: {model} sr trains on HR images degraded on the fly ({hr_dir}) "
                              "or on pairs made beforehand ({pairs}); give one", ("pairs", "model"))
    elif o.lr_dir is None or o.hr_dir is None:
        raise OptionError("lr_dir", f"and {{hr_dir}} are both needed by {{model}} {o.model}", ("hr_dir", "model"))


def _redeg_sampler(o: TrainOptions, banks, lr_patch: int):
    """Aligned crops of the pairs (and of the pseudo-HR images when given) for ReDeg."""
    from sdtool.train.redeg_task import PairedCropSampler, load_pseudo_bank

    pseudo = load_pseudo_bank(o.pseudo_hr_dir, 4 * lr_patch) if o.pseudo_hr_dir is not None else None
    return PairedCropSampler(*banks, o.run.batch, lr_patch, seed=o.run.seed, pseudo=pseudo)


def train(o: TrainOptions, on_log: Optional[Callable[[dict], None]] = None) -> RunResult:
    """Train on unpaired LR/HR folders; writes out_dir/model.safetensors (EMA), state.pt, log.jsonl."""
    from sdtool.api import resolve_device
    from sdtool.train.data import CropSampler, ImageBank, disjoint_split, list_images
    from sdtool.train.dist import init_from_env

    _check_options(o)
    if o.model == "sr":
        from sdtool.train.sr_launch import train_sr

        return train_sr(o, on_log)
    weights = loss_weights(o) if o.model == "sdflow" else None  # bad `loss` items fail before any work
    device = resolve_device(o.device)
    rank, world_size = init_from_env(device)
    s = o.run
    settings = dataclasses.replace(s, out_dir=Path(s.out_dir), warmup=min(s.warmup, max(1, s.iters // 10)),
                                   extra={**s.extra, "world_size": world_size, "config": o.config, "model": o.model})
    lr_files, hr_files = list_images(o.lr_dir, o.name_filter), list_images(o.hr_dir, o.name_filter)
    if o.disjoint:
        lr_files, hr_files = disjoint_split(lr_files, hr_files)
    lr_patch = s.patch // 4
    banks = ImageBank(lr_files, lr_patch), ImageBank(hr_files, s.patch)
    for bank in banks:
        for warning in bank.unreadable:
            if on_log is not None:
                on_log({"type": "notice", "message": f"skipped unreadable training image: {warning}"})
    if o.model == "redeg":
        sampler = _redeg_sampler(o, banks, lr_patch)
    else:
        sampler = CropSampler(*banks, s.batch, lr_patch, seed=s.seed, rank=rank, paired=o.paired)
    if weights is not None:
        weights = dataclasses.replace(weights, **_measure_domain(o, weights, sampler, lr_patch))
    task = _build_task(o, device, settings, weights)
    validator = None
    if o.val_lr is not None and rank == 0 and o.model != "pdm":
        from sdtool.train.validate import load_pairs, make_validator

        pairs = load_pairs(o.val_lr, o.val_hr, name_filter=o.val_filter)
        if o.model == "redeg":
            from sdtool.train.redeg_task import make_redeg_validator

            validator = make_redeg_validator(pairs)
        else:
            validator = make_validator(pairs)
    runner = Runner(task, sampler, settings, validator, on_log)
    return runner.run(resume=o.resume)
