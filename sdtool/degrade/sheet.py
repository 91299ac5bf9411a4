"""Contact sheet: one PNG with, per HR image, a row [HR | LR samples | kernels] for looking at many at once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

ROW = 160  # row height in pixels
GAP = 4


def _fit(img: "np.ndarray", height: int, nearest: bool) -> "np.ndarray":
    import cv2

    h, w = img.shape[:2]
    width = max(1, round(w * height / h))
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(img, (width, height), interpolation=interp)


def make_sheet(rows: "Sequence[tuple[np.ndarray, Sequence[np.ndarray], Sequence[Optional[np.ndarray]]]]",
               height: int = ROW) -> "np.ndarray":
    """rows: (HR H×W×3, LR samples h×w×3, kernels K×K or None) per image, float in [0,1]. LR samples are
    enlarged with nearest neighbour so their pixels stay visible; kernels are scaled to a max of 1.
    Returns uint8 H×W×3 (RGB) on a dark grey background."""
    import numpy as np

    tiles_rows = []
    for hr, lrs, kernels in rows:
        tiles = [_fit(hr, height, nearest=False)]
        tiles += [_fit(lr, height, nearest=True) for lr in lrs]
        for k in kernels:
            if k is None:
                continue
            kk = k / max(float(k.max()), 1e-12)
            tiles.append(_fit(np.repeat(kk[..., None], 3, axis=2).astype(np.float32), height // 2, nearest=True))
        tiles_rows.append(tiles)
    width = max(sum(t.shape[1] + GAP for t in r) + GAP for r in tiles_rows)
    total_h = len(tiles_rows) * (height + GAP) + GAP
    sheet = np.full((total_h, width, 3), 0.15, dtype=np.float32)
    y = GAP
    for r in tiles_rows:
        x = GAP
        for t in r:
            sheet[y : y + t.shape[0], x : x + t.shape[1]] = t[..., :3]
            x += t.shape[1] + GAP
        y += height + GAP
    return (np.clip(sheet, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_sheet(path: "str | Path", sheet: "np.ndarray") -> None:
    """Write an RGB uint8 sheet as PNG, atomically."""
    from sdtool.imageio import write_rgb8_png

    write_rgb8_png(path, sheet)
