"""Training data: random crops of unpaired (or paired) LR and HR images, a pure function of (seed, iteration)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from sdtool.errors import DatasetError


def list_images(folder: Path, name_filter: Optional[str] = None) -> list[Path]:
    """Image files under `folder` (recursive, sorted); `name_filter` is a regex searched in each file name."""
    from sdtool.imageio import is_image_path

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    rx = re.compile(name_filter) if name_filter else None
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and is_image_path(p) and (rx is None or rx.search(p.name)))
    if not files:
        raise DatasetError(f"{folder}: no image files" + (f" matching /{name_filter}/" if name_filter else ""))
    return files


class ImageBank:
    """Images decoded once into uint8 RGB arrays (H×W×3); images smaller than the crop are left out, and
    unreadable ones too (listed in `unreadable`: one corrupt file must not stop a training run)."""

    def __init__(self, files: list[Path], min_size: int):
        from sdtool.errors import ImageError
        from sdtool.imageio import read_image

        self.names: list[str] = []
        self.images: list[np.ndarray] = []
        self.unreadable: list[str] = []
        for f in files:
            try:
                img = read_image(f)
            except ImageError as exc:
                self.unreadable.append(str(exc))
                continue
            if min(img.rgb.shape[:2]) < min_size:
                continue
            self.names.append(f.name)
            self.images.append((img.rgb * 255.0 + 0.5).astype(np.uint8))
        if not self.images:
            raise DatasetError(f"no image of at least {min_size}×{min_size} pixels among {len(files)} file(s)")

    def __len__(self) -> int:
        return len(self.images)


def _crop(img: np.ndarray, size: int, g: torch.Generator, scale: int = 1) -> tuple[np.ndarray, int, int]:
    h, w = img.shape[0] // scale, img.shape[1] // scale
    top = int(torch.randint(0, h - size + 1, (1,), generator=g))
    left = int(torch.randint(0, w - size + 1, (1,), generator=g))
    return img[top * scale:(top + size) * scale, left * scale:(left + size) * scale], top, left


def _augment(arr: np.ndarray, code: int) -> np.ndarray:
    # code bits: horizontal flip, vertical flip, transpose (the 8 symmetries of the square)
    if code & 1:
        arr = arr[:, ::-1]
    if code & 2:
        arr = arr[::-1]
    if code & 4:
        arr = arr.transpose(1, 0, 2)
    return arr


def _to_tensor(batch: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack([np.ascontiguousarray(a) for a in batch])).permute(0, 3, 1, 2).float() / 255.0


@dataclass
class CropSampler:
    """Batches of LR crops (p×p) and HR crops (4p×4p). Unpaired: LR and HR images and crops are drawn
    independently. Paired: the same scene name and aligned crops. Batch `it` on `rank` depends only on
    (seed, rank, it), which makes resume exact."""

    lr: ImageBank
    hr: ImageBank
    batch: int
    lr_patch: int
    seed: int = 0
    rank: int = 0
    paired: bool = False

    def __post_init__(self) -> None:
        if self.paired:
            common = sorted(set(self.lr.names) & set(self.hr.names))
            if not common:
                raise DatasetError("paired training: no file name appears in both the LR and the HR folder")
            self._pairs = [(self.lr.names.index(n), self.hr.names.index(n)) for n in common]

    def __call__(self, it: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(hash((self.seed, self.rank, it)) & 0x7FFF_FFFF_FFFF)
        p = self.lr_patch
        lrs, hrs = [], []
        for _ in range(self.batch):
            if self.paired:
                i, j = self._pairs[int(torch.randint(len(self._pairs), (1,), generator=g))]
                lr_crop, top, left = _crop(self.lr.images[i], p, g)
                hr_img = self.hr.images[j]
                hr_crop = hr_img[top * 4:(top + p) * 4, left * 4:(left + p) * 4]
                if hr_crop.shape[:2] != (4 * p, 4 * p):
                    raise DatasetError(f"paired training: {self.hr.names[j]} is not 4× its LR image")
                code = int(torch.randint(8, (1,), generator=g))
                lrs.append(_augment(lr_crop, code))
                hrs.append(_augment(hr_crop, code))
            else:
                i = int(torch.randint(len(self.lr), (1,), generator=g))
                j = int(torch.randint(len(self.hr), (1,), generator=g))
                lrs.append(_augment(_crop(self.lr.images[i], p, g)[0], int(torch.randint(8, (1,), generator=g))))
                hrs.append(_augment(_crop(self.hr.images[j], 4 * p, g)[0], int(torch.randint(8, (1,), generator=g))))
        return _to_tensor(lrs), _to_tensor(hrs)


def disjoint_split(lr_files: list[Path], hr_files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Keep LR images of every other scene and HR images of the rest (by sorted file name), so no scene
    is seen in both domains: a strictly unpaired set built from a paired one."""
    names = sorted({f.name for f in lr_files} | {f.name for f in hr_files})
    lr_names = set(names[0::2])
    return [f for f in lr_files if f.name in lr_names], [f for f in hr_files if f.name not in lr_names]
