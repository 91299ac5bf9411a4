"""Benchmark data: x4 pairs found by folder layout, matched by name, read on the uint8 grid.

Layouts: StableSR-protocol crops (`test_HR/` + `test_LR/`, same names), the original DRealSR x4 test set
(`*_x1.png` / `*_x4.png`), the original RealSR V3 (`*_HR.png` beside `*_LR4.png`, LR at HR size reduced by
MATLAB bicubic /4) and any `HR|GT` + `LR|LQ` pair of folders. Pairs are matched by name, never by position.
Training validation (`sdtool.train.validate`) reads its pairs through `load_pairs_arrays` here too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from sdtool.errors import DatasetError, OptionError, UsageError
from sdtool.imageio import IMAGE_SUFFIXES
from sdtool.resize import imresize_np, quantize

SCALE = 4


KNOWN_DATASETS = ("drealsr", "realsr")


SPLITS = ("all", "train", "val")


_HR_DIRS = ("test_hr", "hr", "gt")


_LR_DIRS = ("test_lr", "lr", "lq", "lr4", "x4")


_HR_TAGS = ("_x1", "_hr", "_gt")


LR_TAGS = ("_x4", "_lr4", "_lr", "_lq")


_REALSR_NAME = re.compile(r"^(canon|nikon)_(\d{3})", re.IGNORECASE)


DATA_HINTS = {
    "drealsr": "the DRealSR x4 test pairs: test_HR/ and test_LR/ with the same file names (StableSR-protocol "
    "crops), or the original DRealSR x4 test_HR/*_x1.png and test_LR/*_x4.png",
    "realsr": "the RealSR x4 test pairs: test_HR/ and test_LR/ with the same file names (StableSR-protocol "
    "crops), or the original RealSR V3 Canon/ and Nikon/ folders (*_HR.png beside *_LR4.png)",
}


@dataclass(frozen=True)
class Pair:
    """One x4 pair: `name` identifies it in reports; paths to the HR and LR files."""

    name: str
    hr: Path
    lr: Path


@dataclass(frozen=True)
class Dataset:
    """Pairs sorted by name; `layout` says how they were found; `root` is the folder searched; `notices` names the
    images beside the pairs that found no partner and were left out."""

    name: str
    root: Path
    layout: str
    pairs: tuple[Pair, ...]
    notices: tuple[str, ...] = ()


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def strip_tag(stem: str, tags: Sequence[str]) -> str:
    low = stem.lower()
    for tag in tags:
        if low.endswith(tag):
            return stem[: -len(tag)]
    return stem


def _pair_folders(hr_dir: Path, lr_dir: Path) -> tuple[list[Pair], str]:
    """Pair two folders by identical file name, else by name with _x1/_HR and _x4/_LR4 tags removed."""
    hrs, lrs = images_in(hr_dir), images_in(lr_dir)
    hr_names, lr_names = {p.name: p for p in hrs}, {p.name: p for p in lrs}
    common = sorted(set(hr_names) & set(lr_names))
    if common and len(common) >= max(len(hrs), len(lrs)) // 2:
        return [Pair(Path(n).stem, hr_names[n], lr_names[n]) for n in common], "same-name"
    hr_keys: dict[str, Path] = {}
    for p in hrs:
        hr_keys[strip_tag(p.stem, _HR_TAGS)] = p
    lr_keys: dict[str, Path] = {}
    for p in lrs:
        lr_keys[strip_tag(p.stem, LR_TAGS)] = p
    keys = sorted(set(hr_keys) & set(lr_keys))
    return [Pair(k, hr_keys[k], lr_keys[k]) for k in keys], "tagged-names"


def _find_dir(root: Path, names: Sequence[str], depth: int = 3) -> list[Path]:
    found: list[Path] = []
    frontier = [root]
    for _ in range(depth + 1):
        nxt: list[Path] = []
        for d in frontier:
            try:
                children = sorted(c for c in d.iterdir() if c.is_dir())
            except OSError:
                continue
            for c in children:
                (found if c.name.lower() in names else nxt).append(c)
        if found:
            return found
        frontier = nxt
    return found


def _realsr_original(root: Path) -> list[Pair]:
    hrs = sorted(p for p in root.rglob("*_HR.*") if p.suffix.lower() in IMAGE_SUFFIXES)
    # The RealSR release has Train/ and Test/; benchmark only the test part when both are present.
    if any("test" in (part.lower() for part in p.parts) for p in hrs):
        hrs = [p for p in hrs if "test" in (part.lower() for part in p.relative_to(root).parts)]
    pairs = []
    for hr in hrs:
        stem = hr.stem[: -len("_HR")]
        for tag in ("_LR4", "_lr4"):
            lr = hr.with_name(f"{stem}{tag}{hr.suffix}")
            if lr.is_file():
                pairs.append(Pair(stem, hr, lr))
                break
    return pairs


def left_out(pairs: Sequence[Pair], layout: str) -> list[str]:
    """Notices for the images in the pairs' folders that are in no pair (an HR image without its LR, or the
    reverse), so that a lower count than expected is explained."""
    used = {p.hr for p in pairs} | {p.lr for p in pairs}
    if layout.startswith("realsr-original"):  # HR and LR side by side, with other scales (LR2, LR3) beside them
        return [f"{f}: no *_LR4 image beside it; left out" for d in sorted({p.hr.parent for p in pairs})
                for f in images_in(d) if f not in used and f.stem.lower().endswith("_hr")]
    notices = []
    for other, folders in (("LR", {p.hr.parent for p in pairs}), ("HR", {p.lr.parent for p in pairs})):
        notices += [f"{f}: no {other} image with a matching name; left out" for d in sorted(folders)
                    for f in images_in(d) if f not in used]
    return notices


def find_pairs(root: Path) -> tuple[list[Pair], str]:
    """Find x4 pairs under `root` by layout; returns (pairs, layout name). Raises DatasetError if none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    hr_dirs = _find_dir(root, _HR_DIRS)
    for hr_dir in hr_dirs:
        for lr_dir in sorted(c for c in hr_dir.parent.iterdir() if c.is_dir() and c.name.lower() in _LR_DIRS):
            pairs, how = _pair_folders(hr_dir, lr_dir)
            if pairs:
                return pairs, f"{hr_dir.name}/{lr_dir.name} ({how})"
    pairs = _realsr_original(root)
    if pairs:
        return pairs, "realsr-original (*_HR / *_LR4)"
    if hr_dirs:
        raise DatasetError(f"{root}: found {hr_dirs[0]} but no LR folder beside it with matching file names")
    raise DatasetError(
        f"{root}: no x4 pairs found (expected test_HR/ + test_LR/ with matching names, or RealSR *_HR/*_LR4 files)"
    )


def _candidates(dataset: str, data_root: Optional[Path]) -> list[Path]:
    if data_root is not None:
        return [Path(data_root), Path(data_root) / dataset]
    env = os.environ.get("SDTOOL_DATA")
    if env:
        return [Path(env) / dataset, Path(env)]
    return [Path("data") / dataset]


def realsr_split(names: Sequence[str], split: str) -> list[str]:
    """RealSR split by scene number NNN of Canon_NNN / Nikon_NNN: train 001-040, val 041-050, all."""
    if split == "all":
        return list(names)
    out = []
    for n in names:
        m = _REALSR_NAME.match(n)
        if m is None:
            raise OptionError("split", f"{split} needs RealSR names (Canon_NNN / Nikon_NNN); '{n}' is not one")
        num = int(m.group(2))
        if (split == "val" and 41 <= num <= 50) or (split == "train" and 1 <= num <= 40):
            out.append(n)
    return out


def load_dataset(
    dataset: str, data_root: Optional[Path] = None, split: str = "all", limit: Optional[int] = None
) -> Dataset:
    """Resolve `dataset` (drealsr, realsr or a folder path) to its sorted pairs.

    Known names look in --data-root (or its <name>/ subfolder), else $SDTOOL_DATA/<name>, else ./data/<name>.
    Raises DatasetError naming where to put the data when nothing is there.
    """
    split = {"validation": "val", "valid": "val", "training": "train"}.get(split.lower(), split.lower())
    if split not in SPLITS:
        raise UsageError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    key = dataset.lower()
    if key in KNOWN_DATASETS:
        tried = _candidates(key, data_root)
        found: Optional[tuple[Path, list[Pair], str]] = None
        errors: list[str] = []
        for cand in tried:
            if not cand.is_dir():
                continue
            try:
                pairs, layout = find_pairs(cand)
                found = (cand, pairs, layout)
                break
            except DatasetError as exc:
                errors.append(str(exc))
        if found is None:
            where = " or ".join(str(c) for c in tried)
            extra = f" ({errors[0]})" if errors else ""
            raise DatasetError(
                f"no {key} data found in {where}{extra}. Put {DATA_HINTS[key]} in {tried[0]}, "
                f"or give the folder as {{data_root}}, or set SDTOOL_DATA to a folder that holds {key}/", ("data_root",)
            )
        root, pairs, layout = found
        name = key
    else:
        root = Path(dataset)
        if data_root is not None:
            raise OptionError("data_root", "applies to the known datasets (drealsr, realsr); give the folder directly")
        if not root.exists():
            raise DatasetError(f"{root}: no such folder (the dataset is drealsr, realsr or a folder of x4 pairs)")
        pairs, layout = find_pairs(root)
        name = root.name or str(root)
    names = {p.name: p for p in pairs}
    if len(names) != len(pairs):
        raise DatasetError(f"{root}: two pairs share the name; rename the files")
    keep = realsr_split(sorted(names), split)
    if not keep:
        raise DatasetError(f"{root}: no pairs in split '{split}'")
    if limit is not None:
        keep = keep[: max(limit, 0)]
    return Dataset(name=name, root=root, layout=layout, pairs=tuple(names[n] for n in keep),
                   notices=tuple(left_out(pairs, layout)))


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a pair as float64 H×W×3 arrays on the uint8 grid (0..255). Returns (hr, lr, notes).

    Raises DatasetError when the HR is not exactly 4× the LR (RealSR-original LR stored at HR size is
    reduced by MATLAB bicubic /4 first, after cropping the HR to a multiple of 4)."""
    from sdtool.imageio import read_image

    hr_img, lr_img = read_image(pair.hr), read_image(pair.lr)
    notes = [f"{p}: {note}" for p, img in ((pair.hr, hr_img), (pair.lr, lr_img)) for note in img.notes]
    hr = quantize(hr_img.rgb.astype(np.float64) * 255.0)
    lr = quantize(lr_img.rgb.astype(np.float64) * 255.0)
    del hr_img, lr_img
    if hr.shape == lr.shape:
        h4, w4 = (hr.shape[0] // SCALE) * SCALE, (hr.shape[1] // SCALE) * SCALE
        hr, lr = hr[:h4, :w4], quantize(imresize_np(lr[:h4, :w4], 1 / SCALE))
        notes.append("LR stored at HR size: reduced by MATLAB bicubic /4")
    if hr.shape[0] != SCALE * lr.shape[0] or hr.shape[1] != SCALE * lr.shape[1]:
        raise DatasetError(
            f"{pair.name}: HR {hr.shape[1]}×{hr.shape[0]} is not 4× LR {lr.shape[1]}×{lr.shape[0]} "
            f"({pair.hr} vs {pair.lr})"
        )
    return hr, lr, notes
