"""Library behind `sdtool sample-degradation HR OUT --pairs`: paired training data from any degrader.

Writes `OUT/HR/<rel>.png` and `OUT/LR/<rel>.png` with matching names, the layout BasicSR-style paired
datasets and the community trainers read (dataroot_gt = OUT/HR, dataroot_lq = OUT/LR). Each HR image (or each
sub-image of `sub_image`² HR pixels, cut every `sub_step` pixels with the last ones flush with the border, named
`b_p000.png`, `b_p001.png`, … in row-major order) is cropped to a multiple of 4 and degraded `samples` times
(`b_s00.png`, …): LR = degrader(HR), exactly a quarter of its size. Both are 8-bit RGB PNG (alpha dropped).

Everything else is `sample-degradation`'s: the degraders (`sdtool.infer.sample_degradation.load_sampler`,
sdflow / pdm / classic / bicubic / mix), per-file seeds (sample k of a piece depends only on the seed, the
file's relative path and the image), skipping of existing pairs, claims and atomic writes (`infer.batch`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from sdtool.errors import OptionError, UsageError
from sdtool.infer.batch import Job, ProcessResult, ProgressCallback
from sdtool.infer.run import LazyModel
from sdtool.infer.sample_degradation import DegradeOptions
from sdtool.seeds import file_generator, resolve_seed


@dataclass
class PairOptions:
    """degrade: model, samples, temperature, classic ranges, mix, tile, overwrite, max_pixels (as
    `sample-degradation`); sub_image: HR side of the pieces (a multiple of 4; None = whole images);
    sub_step: distance between pieces (default: sub_image, no overlap)."""

    degrade: DegradeOptions = field(default_factory=DegradeOptions)
    sub_image: Optional[int] = None
    sub_step: Optional[int] = None


def piece_boxes(height: int, width: int, size: Optional[int], step: Optional[int]) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w) of the HR pieces: the whole image cropped to multiples of 4 (size None), or size² boxes
    every `step` pixels with a last row / column flush with the border; none when the image is smaller."""
    if size is None:
        h4, w4 = height // 4 * 4, width // 4 * 4
        return [(0, 0, h4, w4)] if h4 and w4 else []
    if height < size or width < size:
        return []
    step = step or size

    def starts(n: int) -> list[int]:
        s = list(range(0, n - size + 1, step))
        return s if s[-1] == n - size else s + [n - size]

    return [(t, left, size, size) for t in starts(height) for left in starts(width)]


def _names(rel: Path, pieces: int, samples: int, sub: bool) -> list[Path]:
    from sdtool.infer.jobs import sample_suffixes

    stem = rel.with_suffix("")
    tags = [f"_p{i:03d}" for i in range(pieces)] if sub else [""]
    return [Path(f"{stem}{p}{s}.png") for p in tags for s in sample_suffixes(samples)]


def _check(o: PairOptions) -> None:
    for name, value in (("sub_image", o.sub_image), ("sub_step", o.sub_step)):
        if value is not None and (value < 16 or value % 4):
            raise OptionError(name, f"must be a multiple of 4 and at least 16, got {value}")
    if o.sub_step is not None and o.sub_image is None:
        raise OptionError("sub_step", "needs {sub_image}", ("sub_image",))


def plan_pairs(input_path: Path, out: Path, o: PairOptions) -> tuple[list[Job], list[str], dict[Path, list]]:
    """Jobs whose outputs are the LR files (OUT/LR/…); the HR files are their side files. Also returns the
    pieces of every source file. Files too small for one piece are reported in the notices."""
    from sdtool.errors import ImageError
    from sdtool.imageio import image_size
    from sdtool.infer.jobs import plan_jobs

    if not Path(input_path).is_dir():
        raise UsageError(f"{input_path}: pairs are made from a folder of HR images")
    found, notices = plan_jobs(Path(input_path), out / "LR", task="downscale", samples=1, temperature=0.0,
                               component=None, out_is_dir=True)
    jobs, pieces = [], {}
    for job in found:
        try:
            boxes = piece_boxes(*image_size(job.source), o.sub_image, o.sub_step)
        except ImageError:
            boxes = [(0, 0, 0, 0)]  # unreadable: planned as one piece, so that reading it fails and names the file
        if not boxes:
            notices.append(f"{job.source}: smaller than one piece, skipped")
            continue
        names = _names(job.rel, len(boxes), o.degrade.samples, o.sub_image is not None)
        pieces[job.source] = boxes
        jobs.append(Job(job.source, job.rel, tuple(out / "LR" / n for n in names)))
    return jobs, notices, pieces


def hr_twin(lr_path: Path, out: Path) -> Path:
    """OUT/LR/a/b.png → OUT/HR/a/b.png."""
    return out / "HR" / lr_path.relative_to(out / "LR")


def make_pairs(
    input_path: "str | Path",
    out: "str | Path",
    *,
    options: Optional[PairOptions] = None,
    weights: "Optional[str | Path]" = None,
    device: str = "auto",
    seed: Optional[int] = None,
    sampler: Any = None,
    progress: Optional[ProgressCallback] = None,
) -> ProcessResult:
    """Write HR/LR pairs of every image under the folder `input_path` to `out` (see the module docstring).
    result.done / skipped / failed are per source file; UsageError / CheckpointError stop the run."""
    from sdtool.infer.batch import run_jobs
    from sdtool.infer.sample_degradation import check_options, load_sampler

    o = options or PairOptions()
    t0 = time.perf_counter()
    _check(o)
    check_options(o.degrade)
    if o.degrade.like is not None or o.degrade.sheet is not None or o.degrade.like_dir is not None:
        raise OptionError("pairs", "cannot be combined with {like}, {like_dir} or {sheet}", ("like", "like_dir",
                                                                                             "sheet"))
    out = Path(out)
    seed = resolve_seed(seed)
    jobs, notices, pieces = plan_pairs(Path(input_path), out, o)
    result = ProcessResult(notices=notices, seed=seed)
    holder = LazyModel(lambda: load_sampler(o.degrade.model, Path(weights) if weights else None, device, o.degrade),
                       sampler)

    def work(job: Job, todo: set, step: Callable[[float, int], None]) -> list[str]:
        _pair_file(holder.get(), job, todo, pieces[job.source], seed, o, out, step)
        return []

    run_jobs(jobs, work, result, overwrite=o.degrade.overwrite, progress=progress,
             side_files=lambda lr: [hr_twin(lr, out)])
    result.device = holder.device() or result.device
    result.seconds = time.perf_counter() - t0
    return result


def _pair_file(smp: Any, job: Job, todo: set, boxes: list, seed: int, o: PairOptions, out: Path,
               step: Callable[[float, int], None]) -> None:
    """Every piece and sample of one file in order (the draws of skipped ones too), writing those in `todo`:
    the HR twin first, then the LR file (the one that marks the pair finished)."""
    import torch

    from sdtool.imageio import read_image, write_rgb8_png
    from sdtool.infer.run import Request, _sample_step
    from sdtool.infer.sample_degradation import _max_pixels

    rgb = read_image(job.source, max_pixels=_max_pixels(o.degrade)).rgb
    gen = file_generator(seed, job.rel)
    k, n = 0, len(job.outputs)
    for top, left, h, w in boxes:
        hr = np.ascontiguousarray(rgb[top:top + h, left:left + w])
        hr8 = (hr * 255.0 + 0.5).astype(np.uint8)
        y = torch.from_numpy(hr8).permute(2, 0, 1).unsqueeze(0).float().div(255.0)  # the uint8 HR written
        for _ in range(o.degrade.samples):
            s = smp.sample(y.to(smp.device), gen, Request(True, _sample_step(step, k, n)))
            if k in todo:
                lr = s.lr[0].detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
                write_rgb8_png(hr_twin(job.outputs[k], out), hr8)
                write_rgb8_png(job.outputs[k], lr)
            k += 1
            step(k, n)
