"""`sdtool train`: train SDFlow (or PDM) on two folders of unpaired LR and HR images, ReDeg on pairs, or an x4 SR
network on HR images degraded by a frozen degrader."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from sdtool.cli.common import Device, run_guarded
from sdtool.cli.progress import CountBar
from sdtool.train.config import DEFAULT_LR


def train(
    out: Annotated[Path, typer.Option("--out", help="Run folder: model.safetensors, state.pt, log.jsonl.")],
    lr_dir: Annotated[
        Optional[Path], typer.Option("--lr-dir", help="Folder of real LR images (sdflow, pdm, redeg).")
    ] = None,
    hr_dir: Annotated[
        Optional[Path], typer.Option("--hr-dir", help="Folder of HR images (unpaired by default; sr: degraded on the "
                                                      "fly).")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="sdflow, pdm, redeg (ReDegNet-style degradation model, trained on pairs by "
                                          "file name), or sr (a feed-forward x4 SR network).")
    ] = "sdflow",
    config: Annotated[
        str, typer.Option("--config", help="Model size: paper, lite or tiny (pdm: default, variant, tiny; redeg: "
                                           "default, tiny; sr: tiny gives the test size of --arch).")
    ] = "lite",
    arch: Annotated[
        str, typer.Option("--arch", help="sr: compact (SRVGG-style, fast on CPUs) or rrdb (ESRGAN, for GPUs).")
    ] = "compact",
    degradation: Annotated[
        str, typer.Option("--degradation", help="sr: the degrader that makes LR images on the fly: sdflow, pdm, "
                                                "redeg, classic, bicubic or mix.")
    ] = "sdflow",
    mix: Annotated[
        Optional[str], typer.Option("--mix", help="sr, --degradation mix: KIND[+jpeg][+noise]=WEIGHT,... e.g. "
                                                  "sdflow=0.7,sdflow+jpeg=0.3.")
    ] = None,
    degradation_weights: Annotated[
        Optional[Path], typer.Option("--degradation-weights", help="sr: SDFlow, PDM or ReDeg weights of the degrader "
                                                                   "(default: the shipped ones).")
    ] = None,
    degradation_temperature: Annotated[
        Optional[float], typer.Option("--degradation-temperature", help="sr: sampling temperature of a learned "
                                                                        "degrader (default 0.8).")
    ] = None,
    pairs: Annotated[
        Optional[Path], typer.Option("--pairs", help="sr: train on pairs made beforehand (the OUT of "
                                                     "sample-degradation --pairs: HR/ and LR/) instead of --hr-dir.")
    ] = None,
    ema_decay: Annotated[
        float, typer.Option("--ema-decay", min=0.0, max=1.0, help="Decay of the EMA weights that are saved.")
    ] = 0.999,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Total iterations.")] = 1000,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Batch size per process.")] = 8,
    patch: Annotated[int, typer.Option("--patch", min=16, help="HR crop size (LR crops are a quarter).")] = 96,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = DEFAULT_LR,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights and crops.")] = 0,
    device: Device = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")
    ] = False,
    paired: Annotated[
        bool, typer.Option("--paired", help="Pair LR/HR by file name and add a content-matching term.")
    ] = False,
    disjoint: Annotated[
        bool, typer.Option("--disjoint", help="Use LR and HR images of different scenes only.")
    ] = False,
    name_filter: Annotated[
        Optional[str], typer.Option("--name-filter", help="Regex a training file name must contain.")
    ] = None,
    val_lr: Annotated[Optional[Path], typer.Option("--val-lr", help="Paired validation LR folder.")] = None,
    val_hr: Annotated[Optional[Path], typer.Option("--val-hr", help="Paired validation HR folder.")] = None,
    val_filter: Annotated[
        Optional[str], typer.Option("--val-filter", help="Regex a validation file name must contain.")
    ] = None,
    val_every: Annotated[
        int, typer.Option("--val-every", min=0, help="Validate every N iterations (0: at checkpoints).")
    ] = 0,
    ckpt_every: Annotated[int, typer.Option("--ckpt-every", min=1, help="Checkpoint every N iterations.")] = 250,
    log_every: Annotated[int, typer.Option("--log-every", min=1, help="Log every N iterations.")] = 10,
    image_loss_start: Annotated[
        Optional[int], typer.Option("--image-loss-start", help="Iteration that starts the image-space losses (paper: "
                                                               "50000); sr: the L1 + perceptual + GAN phase (default: "
                                                               "half of --iters).")
    ] = None,
    init: Annotated[
        Optional[Path], typer.Option("--init", help="Start from these SDFlow (sr: SR network) weights.")
    ] = None,
    ds_target_blur: Annotated[
        Optional[str], typer.Option("--ds-target-blur", help="Blur σ (LR px) of the target of generated LR images, or "
                                                             "'auto' (estimated from the unpaired folders).")
    ] = None,
    ds_chroma_blur: Annotated[
        Optional[str], typer.Option("--ds-chroma-blur", help="Further blur σ (LR px) of that target's colour (chroma) "
                                                             "only, or 'auto' (matches the real LR's chroma/luma "
                                                             "detail ratio, unpaired).")
    ] = None,
    freeze: Annotated[
        Optional[str], typer.Option("--freeze", help="Comma-separated SDFlow parts to keep fixed, e.g. "
                                                     "hr_flow,hf_flow,extractor.")
    ] = None,
    loss: Annotated[
        Optional[list[str]], typer.Option("--loss", metavar="NAME=VALUE", help="Override a loss weight, NAME=VALUE "
                                                                               "(repeatable), e.g. "
                                                                               "cycle_perceptual=1.0.")
    ] = None,
    pseudo_hr_dir: Annotated[
        Optional[Path], typer.Option("--pseudo-hr-dir", help="redeg: an SR model's x4 outputs of the LR images (same "
                                                             "names); DegNet then also learns from (LR, pseudo-HR) as "
                                                             "at transfer time.")
    ] = None,
) -> None:
    """Train SDFlow (or PDM) on unpaired LR and HR images, ReDeg on pairs, or (--model sr) an x4 SR network on HR
    images degraded by a frozen degrader; resumable, multi-GPU with torchrun."""
    from sdtool.train.launch import TrainOptions

    opts = TrainOptions.flat(lr_dir=lr_dir, hr_dir=hr_dir, out_dir=out, model=model, config=config, iters=iters,
                        batch=batch, patch=patch, lr=lr, seed=seed, device=device, resume=resume, paired=paired,
                        disjoint=disjoint, name_filter=name_filter, val_lr=val_lr, val_hr=val_hr,
                        val_filter=val_filter, val_every=val_every, ckpt_every=ckpt_every, log_every=log_every,
                        image_loss_start=image_loss_start, init=init, loss=tuple(loss or ()),
                            ds_target_blur=ds_target_blur, ds_chroma_blur=ds_chroma_blur,
                        freeze=tuple(p.strip() for p in (freeze or '').split(',') if p.strip()), arch=arch,
                        degradation=degradation, mix=mix, degradation_weights=degradation_weights,
                        degradation_temperature=degradation_temperature, pairs=pairs, ema_decay=ema_decay,
                        pseudo_hr_dir=pseudo_hr_dir,
                        extra={"command": "sdtool train " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else ""})
    result = run_guarded(lambda: _run_with_progress(opts, iters))
    typer.echo(f"done: {result.iterations} iterations ({result.skipped} skipped) in {result.seconds:.0f} s; "
               f"weights: {out / 'model.safetensors'}")
    if result.validation:
        typer.echo("validation: " + ", ".join(f"{k}={v:.4f}" for k, v in result.validation.items()))


def _step_info(rec: dict) -> str:
    what = f" l1 {rec['l1']:.4f}" if "l1" in rec else ""  # SR networks
    nll = f" nll {rec['nll_hr']:.2f}/{rec.get('nll_lr', 0):.2f}" if "nll_hr" in rec else ""  # SDFlow only
    return f"loss {rec.get('total', float('nan')):.3f}{what}{nll} {rec['sec_per_it']:.2f}s/it"


def _val_line(rec: dict) -> str:
    return f"it {rec['it']}: " + ", ".join(f"{k}={v:.4f}" for k, v in rec.items() if k.startswith("val"))


def _run_with_progress(opts, iters: int):
    """Train with a live bar when stderr is a terminal, plain progress lines with an ETA otherwise."""
    from sdtool.train.launch import train as run_train

    with CountBar("train", iters, "it", transient=False) as bar:

        def on_log(rec: dict) -> None:
            if rec.get("type") == "train":
                bar.update(rec["it"], _step_info(rec))
            elif rec.get("type") == "notice":
                bar.line(f"notice: {rec['message']}")
            elif rec.get("type") == "val":
                bar.line(_val_line(rec))

        return run_train(opts, on_log)
