"""Lattice score (sdtool.metrics.lattice) and the lattice training loss (sdtool.train.losses)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sdtool.metrics.lattice import lattice_score
from sdtool.train.losses import lattice_loss, lattice_power

FACE = Path(__file__).resolve().parents[1] / "examples" / "face.png"  # a CC0 photo committed with the project


def _photo() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FACE)), cv2.COLOR_BGR2RGB).astype(np.float64)


def _grid(h: int, w: int, amplitude: float) -> np.ndarray:
    """A 4-px periodic pattern of the given peak amplitude (grey levels), the same on every channel."""
    cell = np.random.default_rng(0).uniform(-1, 1, (4, 4))
    return amplitude * np.tile(cell, (h // 4 + 1, w // 4 + 1))[:h, :w, None]


def test_a_synthetic_lattice_scores_far_above_the_same_photo_without_it() -> None:
    photo = cv2.resize(_photo(), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    clean = lattice_score(photo)
    gridded = lattice_score(photo + _grid(*photo.shape[:2], 3.0))
    assert clean < 10
    assert gridded > 20 * clean


def test_a_natural_photo_and_its_bicubic_sr_score_near_each_other() -> None:
    hr = _photo()[:192, :172]
    lr = cv2.resize(hr, (43, 48), interpolation=cv2.INTER_AREA)
    sr = cv2.resize(lr, (172, 192), interpolation=cv2.INTER_CUBIC)
    a, b = lattice_score(hr), lattice_score(sr)
    # both at a photo's level (RealSR HR crops: 3.5, their bicubic SR 3.4), far from a lattice's hundreds
    assert 0.2 < a < 6 and 0.2 < b < 6
    assert abs(a - b) < 2


def test_score_is_grey_and_channel_layout_independent_and_refuses_tiny_images() -> None:
    photo = _photo()
    grey = photo @ np.array([0.299, 0.587, 0.114])
    assert lattice_score(photo) == pytest.approx(lattice_score(grey), rel=1e-9)
    with pytest.raises(ValueError, match="at least 16"):
        lattice_score(np.zeros((12, 40, 3)))


def test_tiled_and_untiled_model_outputs_score_alike(tiny_model) -> None:
    from sdtool.infer.sampling import Tiling, draw, sample

    lr = cv2.resize(_photo(), (48, 48), interpolation=cv2.INTER_AREA) / 255
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float()
    _, noise = draw(tiny_model, "upscale", 48, 48, torch.Generator().manual_seed(0))
    scores = []
    for tile in (0, 24):
        out, _ = sample(tiny_model, "upscale", x, noise, temperature=0.5, tiling=Tiling(tile, 8), depth=8)
        scores.append(lattice_score(out))
    assert scores[1] == pytest.approx(scores[0], rel=0.1)


def test_lattice_power_sees_the_periodic_part_only() -> None:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 12, 12, generator=g), size=96, mode="bicubic")
    cell = torch.rand(1, 1, 4, 4, generator=g) - 0.5
    grid = 0.1 * cell.repeat(1, 3, 24, 24)
    clean, gridded = lattice_power(smooth), lattice_power(smooth + grid)
    assert clean.shape == (2,)
    assert float(clean.max()) < 1e-6
    # the grid's own power after the high-pass, whatever the image under it
    alone = lattice_power(grid)
    assert torch.allclose(gridded, alone.expand(2), rtol=0.05)
    assert float(alone) > 1e3 * float(clean.max())


def test_lattice_loss_is_zero_without_a_lattice_and_pushes_a_grid_down() -> None:
    g = torch.Generator().manual_seed(1)
    hr = torch.nn.functional.interpolate(torch.rand(4, 3, 8, 8, generator=g), size=32, mode="bicubic") * 2 - 1
    assert float(lattice_loss(hr, hr)) < 1e-3
    cell = (torch.rand(1, 3, 4, 4, generator=g) - 0.5).requires_grad_()
    sr = hr + cell.repeat(1, 1, 8, 8)
    loss = lattice_loss(sr, hr)
    assert float(loss.detach()) > 0.05
    loss.backward()
    step = cell - 0.5 * cell.grad  # a gradient step on the grid lowers the loss
    assert float(lattice_loss(hr + step.detach().repeat(1, 1, 8, 8), hr)) < float(loss.detach())
