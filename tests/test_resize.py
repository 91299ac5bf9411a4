"""MATLAB-compatible bicubic imresize (sdtool.resize)."""

import numpy as np
import pytest
import torch

from sdtool.resize import cubic, imresize, imresize_np, quantize, weight_matrix


def test_cubic_kernel_values():
    # Keys kernel, a = -0.5: hand-computed values.
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5])
    np.testing.assert_allclose(cubic(x), [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625], atol=1e-12)


@pytest.mark.parametrize("n_in,n_out", [(16, 4), (17, 5), (4, 16), (7, 3), (1, 4)])
def test_weight_rows_sum_to_one(n_in, n_out):
    m = weight_matrix(n_in, n_out)
    assert m.shape == (n_out, n_in)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)


def test_output_size_is_ceil():
    x = np.zeros((130, 77, 3))
    assert imresize_np(x, 0.25).shape == (33, 20, 3)
    assert imresize_np(x, 4).shape == (520, 308, 3)
    assert imresize_np(x, out_size=(10, 11)).shape == (10, 11, 3)
    with pytest.raises(ValueError):
        imresize_np(x)


def test_linear_ramp_interior_matches_pixel_centre_mapping():
    # Cubic convolution reproduces linear functions; away from the borders output pixel i (1-based) of a
    # /2 resize must sit at input coordinate 2i - 0.5 (MATLAB's pixel-centre alignment) and x2 at i/2 + 0.25.
    ramp = np.tile(np.arange(1, 33, dtype=np.float64)[:, None], (1, 3))
    down = imresize_np(ramp, 0.5)
    i = np.arange(1, 17)
    np.testing.assert_allclose(down[4:12, 1], 2 * i[4:12] - 0.5, atol=1e-9)
    up = imresize_np(ramp, 2)
    j = np.arange(1, 65)
    np.testing.assert_allclose(up[4:60, 0], j[4:60] / 2 + 0.25, atol=1e-9)


def test_antialiasing_removes_nyquist_pattern():
    # A 1-pixel checkerboard averages to grey when downscaled with antialiasing (not aliased into a pattern).
    yy, xx = np.mgrid[0:64, 0:64]
    board = ((yy + xx) % 2) * 255.0
    out = imresize_np(board, 0.25)
    assert np.abs(out[2:-2, 2:-2] - 127.5).max() < 1.0
    # Without antialiasing, /3 samples input pixel 3i - 1 exactly (integer position): 1-px stripes alias to
    # full-contrast stripes; with antialiasing they come out close to grey.
    stripes = np.tile(((np.arange(66) % 2) * 255.0)[:, None], (1, 8))
    raw = imresize_np(stripes, 1 / 3, antialias=False)[:, 0]
    np.testing.assert_allclose(raw[1:-1], stripes[3 * np.arange(2, 22) - 2, 0], atol=1e-9)
    assert np.abs(imresize_np(stripes, 1 / 3)[3:-3] - 127.5).max() < 5


def test_constant_and_symmetric_border():
    c = np.full((19, 23, 3), 77.0)
    np.testing.assert_allclose(imresize_np(c, 0.25), 77.0, atol=1e-9)
    np.testing.assert_allclose(imresize_np(c, 4), 77.0, atol=1e-9)


def test_torch_matches_numpy_and_is_differentiable():
    rng = np.random.default_rng(0)
    img = rng.random((2, 3, 40, 36))
    t = torch.tensor(img, dtype=torch.float64, requires_grad=True)
    out = imresize(t, 0.25)
    assert out.shape == (2, 3, 10, 9)
    ref = imresize_np(img[1].transpose(1, 2, 0), 0.25).transpose(2, 0, 1)
    np.testing.assert_allclose(out[1].detach().numpy(), ref, atol=1e-12)
    out.sum().backward()
    assert t.grad is not None and float(t.grad.abs().sum()) > 0
    out32 = imresize(t.detach().float(), 4)
    assert out32.dtype == torch.float32 and out32.shape == (2, 3, 160, 144)


def test_quantize_rounds_half_up_and_clips():
    np.testing.assert_array_equal(quantize(np.array([-3.0, 0.49, 0.5, 1.5, 254.5, 300.0])), [0, 0, 1, 2, 255, 255])


@pytest.mark.parametrize("scale", [4.0, 0.25, 0.5])
def test_banded_resize_equals_dense(monkeypatch, scale):
    """Big images resample tap by tap instead of with dense matrices; same result."""
    import sdtool.resize as R

    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    dense = R.imresize(x, scale)
    monkeypatch.setattr(R, "DENSE_LIMIT", 0)
    banded = R.imresize(x, scale)
    assert banded.shape == dense.shape
    assert (banded - dense).abs().max().item() < 1e-5
