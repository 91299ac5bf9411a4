"""Writing a benchmark report: JSON (NaN/inf as null) and a CSV beside it."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from sdtool.benchmark.run import DOWN_KEYS, SAMPLE_KEYS, SR_KEYS
from sdtool.files import write_bytes_atomic

def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write `out` (JSON; NaN/inf as null) and the CSV beside it (same stem, .csv): one row per method and
    image plus a MEAN row per method. Returns (json path, csv path)."""
    import csv
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out if out.suffix.lower() == ".json" else out.with_suffix(out.suffix + ".json")
    csv_path = json_path.with_suffix(".csv")
    write_bytes_atomic(json_path, (json.dumps(_clean(report), indent=2, allow_nan=False) + "\n").encode("utf-8"))
    keys = [k for k in (*SR_KEYS, *SAMPLE_KEYS, *DOWN_KEYS) if any(k in s for s in report["summary"].values())]
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["method", "image", *keys])
    for name, rows in report["per_image"].items():
        for r in rows:
            w.writerow([name, r["image"], *(_fmt_csv(r.get(k)) for k in keys)])
        w.writerow([name, "MEAN", *(_fmt_csv(report["summary"][name].get(k)) for k in keys)])
    write_bytes_atomic(csv_path, table.getvalue().encode("utf-8"))
    return json_path, csv_path


def _fmt_csv(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def write_sheet(path: Path, data: Any, report: dict[str, Any], cache_root: Path, count: int = 4,
                crop: int = 160) -> Path:
    """A comparison sheet PNG: for the `count` images whose LPIPS differs most between methods, one row of
    crops, HR | bicubic | each method (first sample), labelled with the method and its LPIPS on that image.
    The crop is the window where the methods disagree most. SR images come from the run's cache."""

    from sdtool.benchmark.cache import cached_image
    from sdtool.benchmark.data import read_pair
    from sdtool.benchmark.methods import bicubic_upscale
    from sdtool.imageio import write_rgb8_png

    names = list(report["per_image"])
    lp = {m: {r["image"]: r.get("lpips") for r in rows} for m, rows in report["per_image"].items()}

    def spread(image: str) -> float:
        vals = [v for v in (lp[m].get(image) for m in names) if v is not None and math.isfinite(v)]
        return max(vals) - min(vals) if len(vals) > 1 else 0.0

    pairs = sorted(data.pairs, key=lambda p: -spread(p.name))[:count]
    rows = []
    for pair in pairs:
        hr, lr, _ = read_pair(pair)
        bic = lp.get("bicubic", {}).get(pair.name)
        panels = [("HR", hr), (f"bicubic {bic:.3f}" if bic is not None else "bicubic", bicubic_upscale(lr))]
        for m in (n for n in names if n != "bicubic"):  # the bicubic column is always there
            img = cached_image(cache_root, m, pair.name)
            if img is not None and img.shape == hr.shape:
                panels.append((f"{m} {lp[m].get(pair.name) or float('nan'):.3f}", img.astype(np.float64)))
        top, left, size = _disagreement_window([p[1] for p in panels[1:]], crop)
        rows.append(np.concatenate([_label(p[1][top:top + size, left:left + size], p[0]) for p in panels], axis=1))
    if not rows:
        raise ValueError("nothing to show: no scored images")
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    write_rgb8_png(path, sheet)
    return Path(path)


def _disagreement_window(images: list, crop: int) -> tuple[int, int, int]:
    """(top, left, size) of the crop×crop window with the largest spread between the images."""
    import cv2

    h, w = images[0].shape[:2]
    size = min(crop, h, w)
    if len(images) < 2:
        return (h - size) // 2, (w - size) // 2, size
    std = np.std(np.stack([im.astype(np.float32).mean(axis=2) for im in images]), axis=0)
    score = cv2.boxFilter(std, -1, (size, size), anchor=(0, 0), normalize=True, borderType=cv2.BORDER_CONSTANT)
    score = score[: h - size + 1, : w - size + 1]
    top, left = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(top), int(left), size


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    strip = np.full((16, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text[:32], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    body = np.clip(tile, 0, 255).astype(np.uint8)
    return np.pad(np.concatenate([strip, body]), ((0, 0), (0, 2), (0, 0)), constant_values=255)
