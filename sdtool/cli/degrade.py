"""`sdtool sample-degradation`: sample realistic LR images (and their kernels / noise) from HR images.

Parses options, calls `sdtool.infer.sample_degradation.sample_degradation`, shows progress, prints failures and
notices as they happen and a summary.
Exit codes as `upscale`: 0 all done or skipped, 1 some files failed, 2 bad usage or bad weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sdtool.config import DEFAULT_DOWN_TEMPERATURE

from sdtool.cli.common import (
    EXIT_OK, EXIT_SOME_FAILED, Device, MaxPixels, OutputArg, Overwrite, Samples, Seed, SkipExisting, Temperature, Tile,
    run_guarded,
)
from sdtool.cli.progress import BatchReporter


def _range(text: Optional[str], name: str, default: tuple[float, float]) -> tuple[float, float]:
    from sdtool.errors import UsageError

    if text is None:
        return default
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--{name} takes MIN,MAX (two numbers), got {text!r}") from None
    return lo, hi


def sample_degradation(
    input_path: Annotated[
        Path, typer.Argument(metavar="IN", help="HR image file or folder (recursive).", show_default=False)
    ],
    output: OutputArg = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", show_default=False, help="sdflow (learned, shipped weights), pdm (learned blur kernel + "
        "noise, shipped weights), redeg (ReDegNet-style: a degradation Ω read from real LR images, shipped weights), "
        "classic (parametric), bicubic, or mix (see --mix). Default: classic, sdflow with --like, redeg with "
        "--like-dir.")] = None,
    mix: Annotated[
        Optional[str], typer.Option("--mix", help="With --model mix: KIND[+jpeg][+noise]=WEIGHT,... e.g. "
                                                  "sdflow=0.6,sdflow+jpeg=0.3,classic=0.1 (JPEG / noise ranges: the "
                                                  "classic options).")
    ] = None,
    pairs: Annotated[
        bool, typer.Option("--pairs", help="Write training pairs: OUT/HR/NAME.png and OUT/LR/NAME.png (IN a folder; "
                                           "BasicSR-style paired layout).")
    ] = False,
    sub_image: Annotated[
        Optional[int], typer.Option("--sub-image", help="With --pairs: cut HR images into pieces of this side (a "
                                                        "multiple of 4).")
    ] = None,
    sub_step: Annotated[
        Optional[int], typer.Option("--sub-step", help="With --pairs: distance between pieces (default: --sub-image).")
    ] = None,
    samples: Samples = 1,
    temperature: Temperature = DEFAULT_DOWN_TEMPERATURE,
    seed: Seed = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", "-w", help="SDFlow, PDM or ReDeg checkpoint.")] = None,
    device: Device = "auto",
    save_kernels: Annotated[
        bool, typer.Option("--save-kernels", help="Also write the kernel (.png, .npy); SDFlow, ReDeg: the latent "
                                                  "(.npy).")
    ] = False,
    save_noise: Annotated[
        bool, typer.Option("--save-noise", help="Also write the noise map (.png, .npy); PDM / classic.")
    ] = False,
    sheet: Annotated[
        Optional[Path], typer.Option("--sheet", help="Write one contact sheet PNG (HR, LR samples, kernels).")
    ] = None,
    like: Annotated[
        Optional[Path], typer.Option("--like", help="Transfer the degradation of this real LR image (sdflow, pdm, "
                                                    "redeg).")
    ] = None,
    like_dir: Annotated[
        Optional[Path], typer.Option("--like-dir", help="redeg: a folder of real LR images; each sample takes the "
                                                        "degradation Ω of one of them at random.")
    ] = None,
    save_latent: Annotated[
        bool, typer.Option("--save-latent", help="Also write the degradation latent (.npy): SDFlow's z_d', ReDeg's Ω.")
    ] = False,
    pseudo_hr: Annotated[
        str, typer.Option("--pseudo-hr", help="redeg: the pseudo-HR of a real LR image, sdflow (the shipped SR) or "
                                              "bicubic.")
    ] = "sdflow",
    tile: Tile = None,
    skip_existing: SkipExisting = False,
    overwrite: Overwrite = False,
    max_pixels: MaxPixels = None,
    sigma: Annotated[
        Optional[str], typer.Option("--sigma", help="classic: blur std range in HR px, MIN,MAX [0.4,3].")
    ] = None,
    noise: Annotated[
        Optional[str], typer.Option("--noise", help="classic: Gaussian noise std range /255, MIN,MAX [1,15].")
    ] = None,
    poisson_peak: Annotated[
        Optional[str], typer.Option("--poisson-peak", help="classic: photons at white, MIN,MAX [100,1000].")
    ] = None,
    jpeg_quality: Annotated[
        Optional[str], typer.Option("--jpeg-quality", help="classic: JPEG quality range, MIN,MAX [40,95].")
    ] = None,
    aniso_prob: Annotated[float, typer.Option("--aniso-prob", help="classic: chance of an anisotropic kernel.")] = 0.5,
    poisson_prob: Annotated[float, typer.Option("--poisson-prob", help="classic: chance of Poisson noise.")] = 0.5,
    jpeg_prob: Annotated[float, typer.Option("--jpeg-prob", help="classic: chance of JPEG compression.")] = 0.7,
) -> None:
    """Sample degraded x0.25 LR images of HR images with SDFlow, a trained PDM, ReDeg, parametric degradations or a
    mix.

    Sample k of a/b.png is OUT/a/b.png (one sample) or OUT/a/b_s00.png, ... ; side outputs are named
    b_kernel.png/.npy, b_noise.png/.npy, b_latent.npy and b.json next to it. With --pairs: OUT/HR/a/b.png and
    OUT/LR/a/b.png (pieces b_p000.png, ... with --sub-image), PNG, LR exactly a quarter of HR.
    """
    from sdtool.degrade.classic import ClassicConfig
    from sdtool.infer.sample_degradation import DegradeOptions, sample_degradation as run

    if model is None:
        model = "sdflow" if like is not None else "redeg" if like_dir is not None else "classic"

    def go():
        d = ClassicConfig()
        jq = _range(jpeg_quality, "jpeg-quality", d.jpeg_quality)
        classic = ClassicConfig(
            sigma=_range(sigma, "sigma", d.sigma), noise=_range(noise, "noise", d.noise),
            poisson_peak=_range(poisson_peak, "poisson-peak", d.poisson_peak), jpeg_quality=(int(jq[0]), int(jq[1])),
            aniso_prob=aniso_prob, poisson_prob=poisson_prob, jpeg_prob=jpeg_prob,
        )
        classic.validate()
        opts = DegradeOptions(model=model, samples=samples, temperature=temperature, save_kernels=save_kernels,
                              save_noise=save_noise, sheet=sheet, like=like, like_dir=like_dir, save_latent=save_latent,
                              pseudo_hr=pseudo_hr, tile=tile, overwrite=overwrite, max_pixels=max_pixels,
                              classic=classic, mix=mix)
        with BatchReporter("sample-degradation") as reporter:
            if pairs or sub_image is not None or sub_step is not None:
                return _pairs(opts, reporter)
            return run(input_path, output, options=opts, weights=weights, device=device, seed=seed, progress=reporter)

    def _pairs(opts, reporter):
        from sdtool.errors import OptionError
        from sdtool.pairs import PairOptions, make_pairs

        if not pairs:
            raise OptionError("sub_image", "needs {pairs}", ("pairs",))
        if output is None:
            raise OptionError("pairs", "needs OUT, the folder that gets HR/ and LR/")
        if save_kernels or save_noise:
            raise OptionError("pairs", "writes no side outputs ({save_kernels}, {save_noise})", ("save_kernels",
                                                                                                 "save_noise"))
        return make_pairs(input_path, output, options=PairOptions(opts, sub_image, sub_step), weights=weights,
                          device=device, seed=seed, progress=reporter)

    result = run_guarded(go)
    what = f"{model}, pairs" if pairs else model
    typer.echo(f"sample-degradation ({what}): {len(result.done)} done, {len(result.skipped)} skipped, "
               f"{len(result.failed)} failed in {result.seconds:.1f} s (seed {result.seed})")
    raise typer.Exit(EXIT_SOME_FAILED if result.failed else EXIT_OK)
