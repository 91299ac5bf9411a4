"""Check sdtool's LPIPS-alex and NIQE against the official values on pyiqa's calibration images.

The five TID2013 pairs ship in the pyiqa wheel (not in this repository):
    pip download --no-deps pyiqa==0.1.16 -d /tmp/pyiqa && unzip -q /tmp/pyiqa/*.whl -d /tmp/pyiqa/w
    python scripts/calibrate_metrics.py /tmp/pyiqa/w/ResultsCalibra
Official values: pyiqa's ResultsCalibra/calibration_summary.csv (LPIPS: the `lpips` package; NIQE: the
authors' MATLAB release on rgb2gray input). Tolerance asked for by the project: ±0.1 for NIQE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sdtool.imageio import read_image
from sdtool.metrics import niqe
from sdtool.metrics.lpips import lpips_distance

NAMES = ["I03", "I04", "I06", "I08", "I19"]
OFFICIAL = {
    "lpips": [0.7237, 0.2572, 0.0508, 0.0520, 0.4253],
    "niqe": [15.7536, 3.6549, 3.2355, 3.1840, 8.6352],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="pyiqa's ResultsCalibra folder (dist_dir/, ref_dir/)")
    args = ap.parse_args()
    ours: dict[str, list[float]] = {"lpips": [], "niqe": []}
    for name in NAMES:
        dist = read_image(args.root / "dist_dir" / f"{name}.bmp").rgb
        ref = read_image(args.root / "ref_dir" / f"{name}.bmp").rgb
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()
        ours["lpips"].append(float(lpips_distance(t(dist), t(ref))[0]))
        ours["niqe"].append(niqe(dist * 255.0))
    for metric, values in ours.items():
        dev = max(abs(a - b) for a, b in zip(values, OFFICIAL[metric]))
        print(f"{metric:6s} ours     " + "  ".join(f"{v:8.4f}" for v in values))
        print(f"{metric:6s} official " + "  ".join(f"{v:8.4f}" for v in OFFICIAL[metric]) + f"   max |diff| {dev:.4f}")


if __name__ == "__main__":
    main()
