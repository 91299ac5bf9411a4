"""Per-image benchmark results kept on disk, so that a stopped run (Ctrl-C) resumes: a rerun with the same
settings reads what was scored and runs only what is missing. One JSON file (and the first SR sample as PNG,
for comparison sheets) per method and image, under a key of everything that changes the numbers."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sdtool.benchmark.methods import Method


def _file_stamp(path: Optional[str]) -> str:
    if not path:
        return ""
    p = Path(path)
    try:
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return str(p)


def method_key(method: Method, options: Any) -> str:
    """Digest of what decides a method's numbers: its kind, weights file (path, size, mtime), temperature,
    colour guard and detail gain, output folder, and the run's samples, seed, downscaling and NIQE input."""
    parts = {
        "kind": method.kind, "weights": _file_stamp(method.weights), "t": method.temperature,
        "fix": method.color_fix, "detail": method.detail, "folder": str(method.folder or ""),
        "samples": options.samples, "seed": options.seed, "down": options.downscale, "niqe": options.niqe_input,
        "version": 2,  # 2: the seed rule of `sdtool.seeds`
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name)


class ResultCache:
    """cache/<method>/<image>.json (+ <image>.png): rows valid only under the same `method_key`."""

    def __init__(self, root: Path, method: Method, options: Any):
        self.dir = Path(root) / _safe(method.name)
        self.key = method_key(method, options)

    def get(self, image: str) -> Optional[tuple[dict[str, Any], list[str]]]:
        try:
            rec = json.loads((self.dir / f"{_safe(image)}.json").read_text())
        except (OSError, ValueError):
            return None
        if rec.get("key") != self.key:
            return None
        row = {k: (float("nan") if v is None else v) for k, v in rec["row"].items()}
        return row, list(rec.get("notes", []))

    def put(self, image: str, row: dict[str, Any], notes: list[str], sr: np.ndarray) -> None:
        from sdtool.files import write_bytes_atomic
        from sdtool.imageio import write_rgb8_png

        clean = {k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in row.items()}
        self.dir.mkdir(parents=True, exist_ok=True)
        write_rgb8_png(self.dir / f"{_safe(image)}.png", np.clip(sr, 0, 255).astype(np.uint8))
        write_bytes_atomic(self.dir / f"{_safe(image)}.json",
                           json.dumps({"key": self.key, "row": clean, "notes": notes}).encode())



def cached_image(root: Path, method: str, image: str) -> Optional[np.ndarray]:
    """The first SR sample that `method` made for `image` (uint8 H×W×3), or None."""
    import cv2

    try:  # bytes, then decode: cv2.imread crashes on a path that is not UTF-8
        data = (Path(root) / _safe(method) / f"{_safe(image)}.png").read_bytes()
    except OSError:
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if arr is None else arr[:, :, ::-1].copy()

