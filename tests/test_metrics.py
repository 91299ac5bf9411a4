"""Metrics: PSNR/SSIM (MATLAB conventions), LPIPS-alex (offline, differentiable), NIQE, diversity."""

import importlib
import math

import numpy as np
import pytest
import torch

from sdtool.metrics import diversity, niqe, psnr, rgb_to_y, ssim
from sdtool.resize import imresize_np, quantize


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """Deterministic photo-like test image: smooth shading, hard-edged discs, texture, noise. uint8 grid, H×W×3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        img[..., c] = 90 + 60 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)) + c)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += (8 * np.sin(40 * xx) * np.cos(33 * yy))[..., None]
    img += rng.normal(0, 3, img.shape)
    return np.clip(np.floor(img + 0.5), 0, 255)


@pytest.fixture(scope="module")
def images():
    a = scene(192, 192, 1)
    bic = quantize(imresize_np(quantize(imresize_np(a, 0.25)), 4))  # bicubic x4 round trip
    noisy = np.clip(a + np.random.default_rng(5).normal(0, 20, a.shape), 0, 255).round()
    return a, bic, noisy


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x / 255.0).permute(2, 0, 1)[None].float()


# ------------------------------------------------------------------------------------------- PSNR / SSIM
def test_psnr_known_values():
    a = np.zeros((20, 20, 3))
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    assert psnr(a, a) == math.inf
    # Crop border: errors only in the border do not count.
    b = a.copy()
    b[:4] = 255
    assert psnr(a, b, crop_border=4) == math.inf
    assert psnr(a, b) < 10
    with pytest.raises(ValueError):
        psnr(a, np.zeros((20, 21, 3)))


def test_y_channel_is_matlab_rgb2ycbcr():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], dtype=np.float64)
    np.testing.assert_allclose(rgb_to_y(px)[0], [16.0, 235.0, 16 + 65.481], atol=1e-9)
    # PSNR-Y of a pure-blue change sees only the blue luma weight.
    a = np.zeros((16, 16, 3))
    b = a.copy()
    b[..., 2] = 255
    assert psnr(a, b, y_channel=True) == pytest.approx(10 * math.log10(255**2 / 24.966**2), abs=1e-9)


def test_ssim_constant_images_closed_form():
    # Zero variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    c1 = (0.01 * 255) ** 2
    a, b = np.full((32, 32, 3), 100.0), np.full((32, 32, 3), 110.0)
    assert ssim(a, b) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_gaussian_window_and_valid_filtering():
    # An image and its negative have a negative structure term (SSIM < 0); SSIM is symmetric and below 1.
    a = scene(64, 64, 3)
    neg = 255 - a
    assert ssim(a, neg) < 0
    noisy = np.clip(a + 10 * np.sign(np.sin(np.arange(64)))[:, None, None], 0, 255)
    assert ssim(a, noisy) == pytest.approx(ssim(noisy, a), abs=1e-12)
    assert 0 < ssim(a, noisy) < 1
    with pytest.raises(ValueError):
        ssim(np.zeros((12, 12, 3)), np.zeros((12, 12, 3)), crop_border=4)


def test_psnr_ssim_pinned_on_project_image(images):
    a, bic, _ = images
    assert psnr(bic, a, crop_border=4) == pytest.approx(26.347951, abs=1e-5)
    assert psnr(bic, a, crop_border=4, y_channel=True) == pytest.approx(32.889421, abs=1e-5)
    assert ssim(bic, a, crop_border=4) == pytest.approx(0.8239289, abs=1e-6)
    assert ssim(bic, a, crop_border=4, y_channel=True) == pytest.approx(0.9115151, abs=1e-6)


# ---------------------------------------------------------------------------------------------------- LPIPS
def test_lpips_matches_official_package_with_same_backbone(images):
    # The official `lpips` code (random backbone: no download) loaded with our shipped AlexNet weights must give
    # the same distances as sdtool's own implementation.
    import lpips
    from safetensors.torch import load_file

    from sdtool.metrics.lpips import get_lpips
    from sdtool.resources import LPIPS_BACKBONE, weights_path

    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    sd = {}
    for k, v in load_file(str(weights_path(LPIPS_BACKBONE))).items():
        _, idx, kind = k.split(".")
        sd[f"slice{slice_of[int(idx)]}.{idx}.{kind}"] = v
    ref.net.load_state_dict(sd)
    a, bic, noisy = images
    x = torch.cat([_t(a), _t(a)])
    y = torch.cat([_t(bic), _t(noisy)])
    with torch.no_grad():
        want = ref(x * 2 - 1, y * 2 - 1).flatten()
        got = get_lpips("cpu")(x, y)
    assert got.shape == (2,)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_lpips_pinned_identity_and_gradient(images):
    from sdtool.metrics.lpips import LPIPS, get_lpips, lpips_distance

    a, bic, noisy = images
    d = lpips_distance(torch.cat([_t(a), _t(a)]), torch.cat([_t(bic), _t(noisy)]))
    torch.testing.assert_close(d, torch.tensor([0.153493, 0.319183]), atol=2e-5, rtol=0)
    assert float(lpips_distance(_t(a), _t(a))[0]) == pytest.approx(0.0, abs=1e-7)
    m = get_lpips("cpu")
    assert isinstance(m, LPIPS) and get_lpips("cpu") is m
    m.train()
    assert not m.training  # a metric never switches to dropout
    x = _t(bic).requires_grad_(True)
    loss = m(x, _t(a)).sum()
    loss.backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError):
        m(_t(a), _t(a)[:, :, :-1])
    with pytest.raises(ValueError, match="at least 32"):
        m(_t(a)[..., :31, :], _t(a)[..., :31, :])


def test_lpips_missing_backbone_is_a_checkpoint_error(tmp_path):
    from sdtool.errors import CheckpointError
    from sdtool.metrics.lpips import LPIPS

    with pytest.raises(CheckpointError):
        LPIPS(backbone_path=tmp_path / "none.safetensors")


# ----------------------------------------------------------------------------------------------------- NIQE
def test_niqe_pinned_and_ordering(images):
    a, bic, noisy = images
    assert niqe(a) == pytest.approx(11.833626, abs=1e-4)
    assert niqe(bic) == pytest.approx(11.365171, abs=1e-4)
    assert niqe(noisy) == pytest.approx(20.710493, abs=1e-4)
    # Heavy noise is far less natural than the clean image.
    assert niqe(noisy) > niqe(a) + 5


def test_niqe_grey_input_and_limits(images):
    from sdtool.metrics.niqe import to_gray

    a = images[0]
    g = to_gray(a)
    assert g.shape == (192, 192) and np.array_equal(g, np.round(g))
    assert niqe(g) == pytest.approx(niqe(a), abs=1e-9)
    with pytest.raises(ValueError):
        niqe(np.zeros((95, 300, 3)))
    # Flat blocks have undefined AGGD fits; they are skipped, and an all-flat image is refused.
    half = a.copy()
    half[:96, :96] = 128
    assert math.isfinite(niqe(half))
    with pytest.raises(ValueError):
        niqe(np.full((192, 192, 3), 128.0))


def test_niqe_flat_areas_do_not_depend_on_rounding(images, monkeypatch):
    """MSCN is invariant to a brightness offset in exact arithmetic; in flat areas only the rounding
    noise of the filter changes with it. With that noise snapped to 0 the score must not move."""
    niqe_mod = importlib.import_module("sdtool.metrics.niqe")  # the package re-exports the function

    img = np.clip(images[0], 30, 200)
    img[20:150, 10:120] = 100.0  # flat areas cut through textured blocks at both scales
    img[120:180, 130:190] = 63.0
    shifted = img + 41.0
    assert niqe(shifted) == pytest.approx(niqe(img), abs=1e-6)
    monkeypatch.setattr(niqe_mod, "FLAT_TOL", 0.0)  # the rounding noise back in: the score moves
    assert abs(niqe(shifted) - niqe(img)) > 1e-3


# ------------------------------------------------------------------------------------------------ diversity
def test_diversity():
    s = np.stack([np.zeros((4, 4, 3)), np.full((4, 4, 3), 2.0)])
    assert diversity(s) == pytest.approx(1.0)
    assert diversity(np.stack([np.ones((4, 4, 3))] * 3)) == 0.0
    with pytest.raises(ValueError):
        diversity(np.zeros((1, 4, 4, 3)))


def test_niqe_on_y_is_niqe_of_the_rounded_luma_plane(images):
    from sdtool.metrics.psnr_ssim import rgb_to_y
    from sdtool.resize import quantize

    a = images[0]
    y_plane = quantize(rgb_to_y(a))
    assert niqe(a, input="y") == pytest.approx(niqe(y_plane), abs=1e-12)  # H×W input is used as it is
    assert niqe(a, input="y") == pytest.approx(niqe(np.repeat(y_plane[..., None], 3, 2)), abs=1e-12)
    assert abs(niqe(a, input="y") - niqe(a)) > 1e-3  # a different plane, a different number
    # A neutral grey image: rgb2gray keeps v, BT.601 Y maps it to 16 + 219 v / 255.
    grey = np.repeat(quantize(a.mean(axis=2))[..., None], 3, 2)
    assert niqe(grey, input="y") == pytest.approx(niqe(quantize(16 + 219 * grey[..., 0] / 255)), abs=1e-12)
    with pytest.raises(ValueError):
        niqe(a, input="lab")
