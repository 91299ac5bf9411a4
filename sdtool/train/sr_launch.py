"""`sdtool train --model sr`: a feed-forward x4 SR network (compact or RRDB) trained on HR crops degraded on the
fly by frozen degraders (`--degradation sdflow|pdm|classic|bicubic|mix`), or on pairs made beforehand
(`--pairs`), through the generic runner (EMA, resume, validation on pairs, NaN guard, checkpoints)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from sdtool.errors import OptionError
from sdtool.train.runner import RunResult, Runner

if TYPE_CHECKING:  # pragma: no cover
    from sdtool.degrade.mix import Mix
    from sdtool.train.config import RunSettings
    from sdtool.train.launch import TrainOptions


def _mix(o: "TrainOptions") -> "Mix":
    from sdtool.degrade.mix import BASE_KINDS, parse_mix, single

    if o.degradation == "mix":
        if not o.mix:
            raise OptionError("mix", "is needed with {degradation} mix, e.g. sdflow=0.7,sdflow+jpeg=0.3",
                              ("degradation",))
        return parse_mix(o.mix)
    if o.mix:
        raise OptionError("mix", "applies to {degradation} mix", ("degradation",))
    if o.degradation not in BASE_KINDS:
        raise OptionError("degradation", f"must be one of {', '.join((*BASE_KINDS, 'mix'))}, got {o.degradation!r}")
    return single(o.degradation)


def _model(o: "TrainOptions", device: torch.device, seed: int) -> torch.nn.Module:
    from sdtool.model.sr import build_sr, load_sr, sr_config

    if o.init is not None:
        return load_sr(o.init, device)
    config = sr_config(o.arch, o.config)
    torch.manual_seed(seed)
    return build_sr(config).to(device)


def _sampler(o: "TrainOptions", s: "RunSettings", device: torch.device, rank: int,
             on_log: Optional[Callable[[dict], None]]) -> tuple[Callable[[int], Any], dict]:
    """On the fly (HR folder and degraders) or from made pairs; returns (sampler, what it is, for provenance)."""
    lr_patch = s.patch // 4
    if o.pairs is not None:
        from sdtool.train.sr_data import PairBank, PairCropSampler

        if o.degradation != "sdflow" or o.mix or o.degradation_weights or o.degradation_temperature is not None:
            raise OptionError("pairs", "are made already: leave out {degradation}, {mix}, {degradation_weights}",
                              ("degradation", "mix", "degradation_weights"))
        bank = PairBank(o.pairs, lr_patch)
        return PairCropSampler(bank, s.batch, lr_patch, seed=s.seed, rank=rank), {"pairs": str(o.pairs),
                                                                                  "pair_count": len(bank)}
    from sdtool.config import DEFAULT_DOWN_TEMPERATURE
    from sdtool.train.data import ImageBank, list_images
    from sdtool.train.sr_data import BatchDegrader, DegradedCropSampler, load_degraders

    mix = _mix(o)
    temperature = DEFAULT_DOWN_TEMPERATURE if o.degradation_temperature is None else o.degradation_temperature
    bank = ImageBank(list_images(o.hr_dir, o.name_filter), s.patch)
    for warning in bank.unreadable:
        if on_log is not None:
            on_log({"type": "notice", "message": f"skipped unreadable training image: {warning}"})
    degrader = BatchDegrader(mix, load_degraders(mix, o.degradation_weights, device), temperature)
    what = {"degradation": mix.describe(), "degradation_temperature": temperature, "hr_images": len(bank),
            "degradation_weights": str(o.degradation_weights) if o.degradation_weights else "shipped"}
    return DegradedCropSampler(bank, degrader, s.batch, s.patch, seed=s.seed, rank=rank), what


def train_sr(o: "TrainOptions", on_log: Optional[Callable[[dict], None]] = None) -> RunResult:
    """Set up and run an SR training (options checked by `launch._check_options`)."""
    from sdtool.api import resolve_device
    from sdtool.train.dist import init_from_env
    from sdtool.train.launch import parse_loss_overrides
    from sdtool.train.sdflow_task import load_perceptual
    from sdtool.train.sr_task import SRLossWeights, SRTask

    overrides = parse_loss_overrides(o.loss, SRLossWeights)
    device = resolve_device(o.device)
    rank, world_size = init_from_env(device)
    s = o.run
    gan_start = s.iters // 2 if o.image_loss_start is None else o.image_loss_start
    weights = dataclasses.replace(SRLossWeights(), **overrides, gan_start=gan_start)
    sampler, data = _sampler(o, s, device, rank, on_log)
    model = _model(o, device, s.seed)
    extra = {**s.extra, "world_size": world_size, "model": "sr", "arch": model.config.arch, **data}
    settings = dataclasses.replace(s, out_dir=Path(s.out_dir), warmup=min(s.warmup, max(1, s.iters // 10)), extra=extra)
    task = SRTask(model, weights, lr=s.lr, betas=(0.9, 0.99), grad_clip=s.grad_clip, seed=s.seed,
                  perceptual=load_perceptual(device) if weights.perceptual > 0 else None, provenance=data)
    validator = None
    if o.val_lr is not None and rank == 0:
        from sdtool.train.validate import load_pairs, make_sr_validator

        validator = make_sr_validator(load_pairs(o.val_lr, o.val_hr, name_filter=o.val_filter))
    return Runner(task, sampler, settings, validator, on_log).run(resume=o.resume)
