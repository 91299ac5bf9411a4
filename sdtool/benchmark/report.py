"""Writing a benchmark report: JSON (NaN/inf as null) and a CSV beside it."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from sdtool.benchmark.run import DOWN_KEYS, SAMPLE_KEYS, SR_KEYS

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
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, json_path)
    keys = [k for k in (*SR_KEYS, *SAMPLE_KEYS, *DOWN_KEYS) if any(k in s for s in report["summary"].values())]
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["method", "image", *keys])
        for name, rows in report["per_image"].items():
            for r in rows:
                w.writerow([name, r["image"], *(_fmt_csv(r.get(k)) for k in keys)])
            w.writerow([name, "MEAN", *(_fmt_csv(report["summary"][name].get(k)) for k in keys)])
    os.replace(tmp, csv_path)
    return json_path, csv_path


def _fmt_csv(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)
