"""Training pairs for `sdtool train --model sr`: HR crops degraded on the fly by frozen degraders, or crops of
pairs made beforehand (`sample-degradation --pairs`). Batch `it` depends only on (seed, rank, it), so a
resumed run sees what an uninterrupted one would."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from sdtool.degrade.classic import ClassicConfig
from sdtool.degrade.mix import LEARNED_KINDS, Mix, apply_extras
from sdtool.errors import DatasetError, OptionError
from sdtool.train.data import ImageBank, _augment, _crop, _to_tensor
from sdtool.train.task import stable_seed


class BatchDegrader:
    """HR batch N×3×H×W in [0, 1] → LR N×3×H/4×W/4 in [0, 1] by a mix of degraders with frozen weights: one
    part per image (drawn from the generator), each part's degrader run once on its images, then its extras.
    models: the loaded learned degraders by kind ("sdflow": SDFlow, "pdm": PDM, "redeg": ReDeg, with Ω drawn from
    its own pool)."""

    def __init__(self, mix: Mix, models: dict[str, Any], temperature: float, classic: ClassicConfig = ClassicConfig()):
        from sdtool.degrade.classic import ClassicDegradation

        missing = [k for k in mix.kinds if k in LEARNED_KINDS and k not in models]
        if missing:
            raise OptionError("degradation", f"needs the {missing[0]} model, which was not loaded")
        self.mix, self.models, self.temperature = mix, models, temperature
        self.classic_config = classic
        self.classic = ClassicDegradation(classic)

    @torch.no_grad()
    def __call__(self, hr: Tensor, gen: torch.Generator) -> Tensor:
        choice = self.mix.choose(hr.shape[0], gen)
        out = torch.empty(hr.shape[0], 3, hr.shape[2] // 4, hr.shape[3] // 4)
        for index in sorted(set(choice)):
            part = self.mix.parts[index]
            rows = [i for i, c in enumerate(choice) if c == index]
            lr = self._base(part.kind, hr[rows], gen)
            if part.extras:
                lr = apply_extras(lr, part.extras, self.classic_config, gen)
            out[rows] = lr.cpu().float().clamp(0, 1)
        return out

    def _base(self, kind: str, hr: Tensor, gen: torch.Generator) -> Tensor:
        if kind == "bicubic":
            from sdtool.resize import imresize

            return imresize(hr, 0.25).clamp(0, 1)
        if kind == "classic":
            return self.classic.sample(hr, generator=gen).lr
        model = self.models[kind]
        if kind == "redeg":
            from sdtool.model.redeg import ReDegDegrader

            return ReDegDegrader(model)(hr.to(model.device), gen)
        if kind == "pdm":
            return model.degrade(hr.to(model.device), temperature=self.temperature, generator=gen).lr
        noise = torch.randn(model.downscale_noise_shape(*hr.shape[:1], *hr.shape[2:]), generator=gen)
        return model.downscale(hr.to(model.device), temperature=self.temperature, generator=gen, noise=noise)


def load_degraders(mix: Mix, weights: Optional[Path], device: torch.device) -> dict[str, Any]:
    """The learned degraders a mix needs, frozen, in eval mode: the shipped SDFlow / PDM / ReDeg weights, or
    `weights` for the kind that file holds."""
    from sdtool.api import checkpoint_kind, load_model
    from sdtool.checkpoint import load_pdm
    from sdtool.model.redeg import load_redeg
    from sdtool.infer.sample_degradation import sampler_weights

    learned = [k for k in mix.kinds if k in LEARNED_KINDS]
    target = checkpoint_kind(weights) if weights is not None else None
    if weights is not None and target not in learned:
        raise OptionError("degradation_weights", f"{weights}: a {target} checkpoint; the degradation uses "
                          f"{', '.join(learned) or 'no learned model'}")
    models: dict[str, Any] = {}
    for kind in learned:
        path = weights if kind == target else None
        if kind == "sdflow":
            model = load_model(path, device)
        else:
            model = (load_pdm(sampler_weights(kind, path), str(device)) if kind == "pdm"
                     else load_redeg(sampler_weights(kind, path), device))
        model.eval().requires_grad_(False)
        models[kind] = model
    return models


@dataclass
class DegradedCropSampler:
    """Random HR crops (patch², augmented by the 8 symmetries of the square) and their LR images from `degrade`."""

    hr: ImageBank
    degrade: BatchDegrader
    batch: int
    patch: int
    seed: int = 0
    rank: int = 0

    def __call__(self, it: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(stable_seed("sr-crops", self.seed, self.rank, it))
        crops = []
        for _ in range(self.batch):
            j = int(torch.randint(len(self.hr), (1,), generator=g))
            crops.append(_augment(_crop(self.hr.images[j], self.patch, g)[0], int(torch.randint(8, (1,), generator=g))))
        hr = _to_tensor(crops)
        return self.degrade(hr, g), hr


class PairBank:
    """Pairs from OUT/HR and OUT/LR (matching relative paths, LR exactly a quarter), decoded once to uint8;
    identical HR files (the copies `--pairs -n N` writes for N samples) are kept once."""

    def __init__(self, root: Path, lr_patch: int):
        from sdtool.imageio import read_image
        from sdtool.train.data import list_images

        root = Path(root)
        hr_dir, lr_dir = root / "HR", root / "LR"
        if not hr_dir.is_dir() or not lr_dir.is_dir():
            raise DatasetError(f"{root}: expected the folders HR/ and LR/ (sample-degradation --pairs writes them)")
        by_digest: dict[bytes, int] = {}
        self.hr: list[np.ndarray] = []
        self.lr: list[np.ndarray] = []
        self.hr_index: list[int] = []
        for lr_path in list_images(lr_dir):
            hr_path = hr_dir / lr_path.relative_to(lr_dir)
            if not hr_path.is_file():
                continue
            lr = (read_image(lr_path).rgb * 255 + 0.5).astype(np.uint8)
            if min(lr.shape[:2]) < lr_patch:
                continue
            digest = hashlib.sha256(hr_path.read_bytes()).digest()
            if digest not in by_digest:
                by_digest[digest] = len(self.hr)
                self.hr.append((read_image(hr_path).rgb * 255 + 0.5).astype(np.uint8))
            hr = self.hr[by_digest[digest]]
            if hr.shape[:2] != (4 * lr.shape[0], 4 * lr.shape[1]):
                raise DatasetError(f"{hr_path}: size {hr.shape[:2]} is not 4× its LR image {lr.shape[:2]}")
            self.lr.append(lr)
            self.hr_index.append(by_digest[digest])
        if not self.lr:
            raise DatasetError(f"{root}: no pair with an LR image of at least {lr_patch}×{lr_patch} pixels")

    def __len__(self) -> int:
        return len(self.lr)


@dataclass
class PairCropSampler:
    """Aligned random crops of made pairs: LR lr_patch², HR 4·lr_patch², the same symmetry for both."""

    pairs: PairBank
    batch: int
    lr_patch: int
    seed: int = 0
    rank: int = 0

    def __call__(self, it: int) -> tuple[Tensor, Tensor]:
        g = torch.Generator().manual_seed(stable_seed("sr-pairs", self.seed, self.rank, it))
        p, lrs, hrs = self.lr_patch, [], []
        for _ in range(self.batch):
            i = int(torch.randint(len(self.pairs), (1,), generator=g))
            lr, top, left = _crop(self.pairs.lr[i], p, g)
            hr = self.pairs.hr[self.pairs.hr_index[i]][4 * top:4 * (top + p), 4 * left:4 * (left + p)]
            code = int(torch.randint(8, (1,), generator=g))
            lrs.append(_augment(lr, code))
            hrs.append(_augment(hr, code))
        return _to_tensor(lrs), _to_tensor(hrs)
