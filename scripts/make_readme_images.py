"""Pictures for the README: SR samples of examples/face.png and SDFlow downscaling of a Kodak crop.

Usage: python scripts/make_readme_images.py [--weights W] [--kodak PATH_TO_kodim.png] [--out docs/images]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sdtool import load_model
from sdtool.config import DEFAULT_DOWN_TEMPERATURE, DEFAULT_SR_TEMPERATURE
from sdtool.imageio import ImageInfo, read_image, write_image
from sdtool.infer.colorfix import guard
from sdtool.resize import imresize


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()


def _np(t: torch.Tensor) -> np.ndarray:
    return t[0].clamp(0, 1).permute(1, 2, 0).numpy()


def _row(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    out = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=1.0) for p in panels]
    sep = np.ones((h, gap, 3), np.float32)
    return np.concatenate(sum([[p, sep] for p in out], [])[:-1], axis=1)


def _save(path: Path, img: np.ndarray) -> None:
    info = ImageInfo(mode="rgb", bit_depth=8, format="png", has_alpha=False, orientation=1,
                     height=img.shape[0], width=img.shape[1])
    write_image(path, img.astype(np.float32), None, info)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--kodak", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    args = ap.parse_args()
    m = load_model(args.weights, device="cpu")
    face = read_image(Path(__file__).resolve().parents[1] / "examples" / "face.png").rgb
    crop = face[40:104, 50:114]  # 64×64 LR crop → 256×256 panels
    x = _t(crop)
    nearest = np.repeat(np.repeat(crop, 4, 0), 4, 1)
    bicubic = _np(imresize(x, 4.0))
    t = DEFAULT_SR_TEMPERATURE
    # the flow's own sample (no colour guard, lattice kept), then upscale's defaults
    raw = _np(m.upscale(x, t, generator=torch.Generator().manual_seed(1), delattice=False))
    panels = [nearest, bicubic, raw, _np(guard(m.upscale(x, 0.0), x))]
    panels += [_np(guard(m.upscale(x, t, generator=torch.Generator().manual_seed(s)), x)) for s in (1, 2)]
    _save(args.out / "upscale_face.png", _row(panels))
    if args.kodak is not None:
        hr = read_image(args.kodak).rgb[100:356, 100:356]  # 256×256 HR → 64×64 LR, shown ×3
        y = _t(hr)
        lrs = [_np(imresize(y, 0.25))]
        lrs += [_np(m.downscale(y, DEFAULT_DOWN_TEMPERATURE, generator=torch.Generator().manual_seed(s))) for s in (1, 2, 3)]
        big = [np.repeat(np.repeat(a, 3, 0), 3, 1) for a in lrs]
        hr_small = _np(imresize(y, 0.75))
        _save(args.out / "downscale_kodak.png", _row([hr_small] + big))


if __name__ == "__main__":
    main()
