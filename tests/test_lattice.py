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
    cell -= cell.mean()  # a pure lattice: no overall brightness shift
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
    scores, cleaned = [], []
    for tile in (0, 24):
        out, _ = sample(tiny_model, "upscale", x, noise, temperature=0.5, tiling=Tiling(tile, 8), depth=8,
                        delattice=False)
        scores.append(lattice_score(out))
        out, _ = sample(tiny_model, "upscale", x, noise, temperature=0.5, tiling=Tiling(tile, 8), depth=8)
        cleaned.append(lattice_score(out))
    assert scores[0] > 10 and scores[1] == pytest.approx(scores[0], rel=0.1)
    assert max(cleaned) < 0.1 * scores[0]  # and the filter works tile by tile as on the whole image


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


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img / 255).permute(2, 0, 1)[None].float()


def _img(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).double().numpy() * 255


def test_remove_lattice_takes_a_grid_out_of_a_photo_and_leaves_the_rest() -> None:
    from sdtool.model.lattice import remove_lattice

    # an SR-like photo: the face at a quarter size, enlarged x4 (bicubic)
    small = cv2.resize(_photo(), (44, 48), interpolation=cv2.INTER_AREA)
    photo = cv2.resize(small, (176, 192), interpolation=cv2.INTER_CUBIC)
    grid = _grid(192, 176, 3.0)
    cleaned = _img(remove_lattice(_t(photo + grid)))
    assert lattice_score(photo + grid) > 20 * lattice_score(photo)
    assert lattice_score(cleaned) < 2 * lattice_score(photo)
    inner = (slice(16, -16), slice(16, -16))  # the windowed mean reads reflected pixels at the border
    assert np.sqrt(((cleaned - photo)[inner] ** 2).mean()) < 0.25 * np.sqrt((grid ** 2).mean())
    # no lattice: the photo itself comes back within a small fraction of its detail
    detail = photo - cv2.GaussianBlur(photo, (0, 0), 2.0)
    change = _img(remove_lattice(_t(photo))) - photo
    assert np.sqrt((change[inner] ** 2).mean()) < 0.1 * np.sqrt((detail[inner] ** 2).mean())
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert torch.allclose(remove_lattice(flat), flat, atol=1e-6)


def test_upscale_removes_the_lattice_by_default_and_keep_lattice_returns_the_flows_sample(tiny_model) -> None:
    x = _t(cv2.resize(_photo(), (40, 40), interpolation=cv2.INTER_AREA))
    noise = torch.randn(tiny_model.upscale_noise_shape(1, 40, 40), generator=torch.Generator().manual_seed(0))
    raw = tiny_model.upscale(x, noise=noise, delattice=False)
    fixed = tiny_model.upscale(x, noise=noise)
    assert lattice_score(_img(raw)) > 10  # an untrained squeeze decoder: a lattice
    assert lattice_score(_img(fixed)) < 0.1 * lattice_score(_img(raw))


def test_cli_keep_lattice_switch(tmp_path, tiny_weights) -> None:
    from typer.testing import CliRunner

    from sdtool.cli.app import app

    src = tmp_path / "in.png"
    cv2.imwrite(str(src), cv2.resize(cv2.imread(str(FACE)), (40, 40), interpolation=cv2.INTER_AREA))
    scores = {}
    for flag in ("--delattice", "--keep-lattice"):
        out = tmp_path / f"out{flag}.png"
        r = CliRunner().invoke(app, ["upscale", str(src), str(out), "--weights", str(tiny_weights), "--seed", "1",
                                     "--color-fix", "none", flag])
        assert r.exit_code == 0, r.output
        scores[flag] = lattice_score(cv2.imread(str(out)).astype(np.float64))
    assert scores["--delattice"] < 0.1 * scores["--keep-lattice"]
    r = CliRunner().invoke(app, ["downscale", str(src), str(tmp_path / "d.png"), "--weights", str(tiny_weights)])
    assert r.exit_code == 0, r.output
