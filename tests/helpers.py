"""Shared test utilities."""

import torch
from torch import nn


@torch.no_grad()
def perturb(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Add noise to every parameter and mark ActNorms initialised, so no piece is a trivial identity."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    for name, buf in module.named_buffers():
        if name.endswith("initialized"):
            buf.fill_(1)
    return module


def write_image_file(path, arr):
    """Write a uint8/uint16 array with OpenCV, creating folders; returns the path."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return path


def sha256_of(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_args(data, out, *extra: str) -> list:
    """`sdtool train` on the LR/HR folders in `data` with the tiny model, on the CPU."""
    return ["train", "--lr-dir", str(data / "lr"), "--hr-dir", str(data / "hr"), "--out", str(out), "--config", "tiny",
            "--batch", "2", "--patch", "32", "--device", "cpu", "--image-loss-start", "2", *extra]
