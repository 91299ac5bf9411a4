"""`sdtool benchmark`: SR and downscaling metrics on DRealSR / RealSR / a folder of x4 pairs.

Parses options, calls `sdtool.benchmark.run_benchmark`, shows progress (a live bar on a terminal, plain lines
with an ETA in logs), prints a rich
table of mean metrics and writes the JSON report and the CSV beside it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from contextlib import contextmanager
from typing import Annotated, Any, Callable, Iterator, Optional

import typer

from sdtool.cli.common import Delattice, Detail, Device, Seed, Tile, run_guarded
from sdtool.cli.progress import CountBar

DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset", "-d",
        help="drealsr, realsr, or a folder of x4 pairs (test_HR/ + test_LR/ with matching names, or the original "
        "RealSR / DRealSR layouts).",
        show_default=False,
    ),
]
DataRoot = Annotated[
    Optional[Path],
    typer.Option(
        "--data-root",
        help="Folder holding the named dataset (or its <name>/ subfolder). Default: $SDTOOL_DATA/<name>, else "
             "./data/<name>.",
    ),
]
SplitOpt = Annotated[
    str,
    typer.Option("--split", help="all; or for RealSR names (Canon/Nikon_NNN): val|validation (NNN 041-050) or train "
                                 "(001-040)."),
]
WeightsMulti = Annotated[
    Optional[list[Path]],
    typer.Option("--weights", "-w", metavar="FILE",
                 help="SDFlow checkpoint; repeat for several side by side. Default: the shipped model."),
]
MethodMulti = Annotated[
    Optional[list[str]],
    typer.Option("--method", "-m", metavar="NAME", help="Baseline to add: bicubic (MATLAB, a=-0.5). Repeatable."),
]
TemperatureMulti = Annotated[
    Optional[list[float]],
    typer.Option("--temperature", "-t", metavar="T",
                 help="Sampling temperature; repeat to benchmark several. Default: upscale's."),
]
SamplesOpt = Annotated[
    int, typer.Option("--samples", "-n", min=1, help="SR samples per image; > 1 adds best-of-N LPIPS and diversity.")
]
OutOpt = Annotated[
    Optional[Path],
    typer.Option("--out", "-o", help="JSON report path; the CSV is written beside it. Default: "
                                     "./benchmark-<dataset>.json."),
]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the first N pairs (by name).")]
NoModel = Annotated[
    bool, typer.Option("--no-model", help="Benchmark only the --method baselines (no default SDFlow model).")
]
ColorFixOpt = Annotated[
    Optional[str],
    typer.Option("--color-fix", help="Colour guard of the model's SR outputs: wavelet, adain or none. Default: "
                                     "upscale's (wavelet)."),
]
SrDirMulti = Annotated[
    Optional[list[str]],
    typer.Option("--sr-dir", metavar="NAME=DIR",
                 help="NAME=DIR: score x4 outputs another tool wrote to DIR (matched to the pairs by file "
                 "stem) with the same metrics. Repeatable."),
]
SaveSr = Annotated[
    Optional[Path], typer.Option("--save-sr", help="Also write the model's SR outputs to DIR/<method>/<pair>.png.")
]
BaselineMulti = Annotated[
    Optional[list[Path]],
    typer.Option("--baseline", metavar="FILE",
                 help="A x4 SR checkpoint of another architecture (ESRGAN/Real-ESRGAN, SwinIR, HAT, DAT, "
                 "...) loaded with spandrel (pip install 'sdtool[baselines]'), run on the LR images. Repeatable."),
]
SheetOpt = Annotated[
    Optional[Path],
    typer.Option("--sheet", help="Write a comparison sheet PNG: crops of HR | bicubic | each method for the images "
                 "whose LPIPS differs most between methods."),
]
SheetCount = Annotated[int, typer.Option("--sheet-count", min=1, help="Images (rows) on the sheet.")]
NiqeInput = Annotated[
    str, typer.Option("--niqe-input", help="NIQE on 'gray' (MATLAB rgb2gray, as the MATLAB reference) or 'y' "
                      "(YCbCr luma, as BasicSR-based papers).")
]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Score everything again instead of reusing <report>.cache/.")]
NoDown = Annotated[bool, typer.Option("--no-downscale", help="Skip the downscaling metrics.")]

_COLUMNS = [
    ("psnr_rgb", "PSNR", 2), ("psnr_y", "PSNR-Y", 2), ("ssim_rgb", "SSIM", 4), ("ssim_y", "SSIM-Y", 4),
    ("lpips", "LPIPS", 4), ("niqe", "NIQE", 3), ("lr_psnr", "LR-PSNR", 2), ("color_err", "colour err", 2),
    ("lattice", "lattice", 1), ("lpips_best", "LPIPS best", 4),
    ("diversity", "Div.", 2), ("down_psnr_real", "↓PSNR real", 2), ("down_lpips_real", "↓LPIPS real", 4),
    ("down_psnr_bicubic", "↓PSNR bic", 2), ("down_lpips_bicubic", "↓LPIPS bic", 4),
]


def _fmt(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _render(report: dict[str, Any], json_path: Path, csv_path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["settings"]
    table = Table(title=f"{s['dataset']}: {s['pairs']} pairs, x4 ({s['root']})")
    cols = [c for c in _COLUMNS if any(c[0] in m for m in report["summary"].values())]
    table.add_column("method", style="bold")
    for _, title, _d in cols:
        table.add_column(title, justify="right")
    table.add_column("time s", justify="right")
    for name, summary in report["summary"].items():
        table.add_row(
            name, *(_fmt(summary.get(k), d) for k, _t, d in cols), f"{report['methods'][name]['wall_time_s']:.1f}"
        )
    for name, ref in report.get("reference", {}).items():  # e.g. the HR images' own lattice score
        table.add_row(f"{name} (reference)", *(_fmt(ref.get(k), d) if k in ref else "" for k, _t, d in cols), "",
                      style="dim")
    # Off a terminal (pipes, logs) rich would wrap at 80 columns; a wide table stays readable there.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 220)
    console.print(table)
    console.print(f"report: {json_path}  {csv_path}  (device: {report['device']})")


def _name_dir(item: str) -> tuple[str, Path]:
    from sdtool.errors import UsageError

    name, sep, folder = item.partition("=")
    if not sep or not name.strip() or not folder:
        raise UsageError(f"--sr-dir '{item}': expected NAME=DIR")
    return name.strip(), Path(folder)


def benchmark(
    dataset: DatasetOpt,
    data_root: DataRoot = None,
    split: SplitOpt = "all",
    weights: WeightsMulti = None,
    method: MethodMulti = None,
    samples: SamplesOpt = 1,
    temperature: TemperatureMulti = None,
    out: OutOpt = None,
    seed: Seed = None,
    device: Device = "auto",
    limit: LimitOpt = None,
    no_model: NoModel = False,
    no_downscale: NoDown = False,
    color_fix: ColorFixOpt = None,
    detail: Detail = None,
    delattice: Delattice = True,
    sr_dir: SrDirMulti = None,
    save_sr: SaveSr = None,
    baseline: BaselineMulti = None,
    sheet: SheetOpt = None,
    sheet_count: SheetCount = 4,
    niqe_input: NiqeInput = "gray",
    no_cache: NoCache = False,
    tile: Tile = None,
) -> None:
    """Measure SR quality (PSNR, SSIM, LPIPS, NIQE, LR consistency, colour error) and downscaling realism on x4
    pairs, for SDFlow checkpoints, bicubic, other tools' outputs and other architectures side by side."""
    from sdtool import benchmark as bm
    from sdtool.infer.sampling import Tiling

    def work() -> None:
        data = bm.load_dataset(dataset, data_root, split, limit)
        for notice in data.notices:
            typer.echo(f"notice: {notice}", err=True)
        folders = [bm.folder_method(*_name_dir(item), data) for item in sr_dir or []]  # checked before any work
        methods = []
        if weights or method or not no_model or not (folders or baseline):
            methods = bm.resolve_methods(weights or [], method or [], temperature or [], device=device,
                                         default_model=not no_model, color_fix=color_fix,
                                         detail=detail, delattice=delattice)
        for path in baseline or []:
            methods.append(bm.baseline_method(path, device, [m.name for m in methods]))
        methods += bm.unique_names(methods, folders)
        target = out if out is not None else Path(f"benchmark-{data.name}.json")
        cache = None if no_cache else bm.cache_dir(target)
        if sheet is not None and cache is None:
            raise bm.UsageError("--sheet needs the cache (leave out --no-cache)")
        with _progress(len(data.pairs), len(methods)) as on_progress:
            report = bm.run_benchmark(
                data, methods, samples=samples, seed=seed if seed is not None else 0, downscale=not no_downscale,
                progress=on_progress, save_sr=save_sr, niqe_input=niqe_input, cache=cache, tiling=Tiling(tile),
            )
        json_path, csv_path = bm.write_report(report, target)
        _render(report, json_path, csv_path)
        if sheet is not None and cache is not None:  # checked above: a sheet needs the cache
            typer.echo(f"sheet: {bm.write_sheet(sheet, data, report, cache, sheet_count)}")

    run_guarded(work)


@contextmanager
def _progress(pairs: int, methods: int) -> Iterator[Callable[[Any], None]]:
    """Progress over the whole run naming the method and image (`CountBar`: a live bar on a terminal, plain lines
    with an ETA otherwise)."""
    state: dict[str, Any] = {"base": 0, "last": ""}

    def overall(ev: Any) -> int:  # events count images per method; methods run one after the other
        if ev.method != state["last"] and state["last"]:
            state["base"] += pairs
        state["last"] = ev.method
        return state["base"] + ev.done

    with CountBar("benchmark", pairs * methods, "images") as bar:
        yield lambda ev: bar.update(overall(ev), f"{ev.method}: {ev.image}")
