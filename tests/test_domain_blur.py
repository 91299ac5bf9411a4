"""The unpaired LR-domain blur and colour-blur estimates recover known blurs; the blur is a normalised Gaussian."""

import numpy as np
import pytest
import torch

from sdtool.resize import imresize
from sdtool.degrade.ops import gaussian_blur
from sdtool.train.domain_blur import (bank_crops, chroma_luma_ratio, detail_ratio, domain_target, estimate_chroma_blur,
                                     estimate_domain_blur, split_luma_chroma)


def _scenes(n: int, size: int, seed: int) -> torch.Tensor:
    """Natural-ish images: random 1/f noise, so that blur shows in every frequency band."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(size)
    r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1.0 / size)
    spec = torch.randn(n, 3, size, size, generator=g, dtype=torch.complex64) / r
    x = torch.fft.ifft2(spec).real
    x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)
    return (0.5 + 0.15 * x).clamp(0, 1)


def test_gaussian_blur_is_normalised_and_matches_direct_convolution():
    x = torch.rand(1, 3, 20, 20, dtype=torch.float64)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    c = torch.full((1, 1, 12, 12), 0.3, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(c, 1.3), c)  # a constant image stays constant
    s = 0.8
    t = torch.arange(-3, 4, dtype=torch.float64)
    k = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * s * s))
    k = k / k.sum()
    direct = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect"),
                                        k.expand(3, 1, 7, 7), groups=3)
    torch.testing.assert_close(gaussian_blur(x, s), direct)


@pytest.mark.parametrize("sigma", [0.0, 0.7, 1.0])
def test_estimate_recovers_a_known_blur_without_pairs(sigma):
    hr = _scenes(12, 128, seed=0)
    other = _scenes(12, 128, seed=1)  # the LR images show different scenes: no pairs
    lr = gaussian_blur(imresize(other, 0.25).clamp(0, 1), sigma)
    est = estimate_domain_blur(lr, hr)
    if sigma:
        assert est == pytest.approx(sigma, abs=0.1)
    else:  # a sampled Gaussian below σ ≈ 0.35 is within 0.5 % of the identity, so those σ tie
        assert est <= 0.35
    assert detail_ratio(gaussian_blur(imresize(hr, 0.25).clamp(0, 1), est)) == pytest.approx(detail_ratio(lr), rel=0.03)


def test_detail_ratio_does_not_depend_on_contrast_and_falls_with_blur():
    x = _scenes(4, 64, seed=5)
    assert detail_ratio(0.5 + 0.3 * (x - 0.5)) == pytest.approx(detail_ratio(x), rel=1e-5)
    assert detail_ratio(gaussian_blur(x, 0.8)) < 0.8 * detail_ratio(x)


def test_bank_crops_shapes_and_range():
    imgs = [np.full((40, 50, 3), 255, np.uint8), np.zeros((30, 30, 3), np.uint8)]
    c = bank_crops(imgs, 24, per_image=3, seed=0)
    assert c.shape == (6, 3, 24, 24) and float(c[:3].min()) == 1.0 and float(c[3:].max()) == 0.0


def test_domain_target_blurs_chroma_and_keeps_luma():
    x = _scenes(2, 48, seed=3).double()
    torch.testing.assert_close(domain_target(x, 0.6), gaussian_blur(x, 0.6))
    t = domain_target(x, 0.6, 1.2)
    y0, c0 = split_luma_chroma(gaussian_blur(x, 0.6))
    y1, c1 = split_luma_chroma(t)
    torch.testing.assert_close(y1, y0)  # brightness untouched: chroma planes have zero luma
    torch.testing.assert_close(c1, gaussian_blur(c0, 1.2))
    assert chroma_luma_ratio(t) < 0.6 * chroma_luma_ratio(gaussian_blur(x, 0.6))


@pytest.mark.parametrize("chroma", [0.0, 1.0])
def test_estimate_chroma_blur_recovers_a_known_colour_blur_without_pairs(chroma):
    hr = _scenes(12, 128, seed=0)
    other = _scenes(12, 128, seed=1)
    lr = domain_target(imresize(other, 0.25).clamp(0, 1), 0.4, chroma)
    est = estimate_chroma_blur(lr, hr, 0.4)
    if chroma:
        assert est == pytest.approx(chroma, abs=0.15)
    else:  # a sampled Gaussian below σ ≈ 0.35 is within 0.5 % of the identity, so those σ tie
        assert est <= 0.35
    bic = imresize(hr, 0.25).clamp(0, 1)
    assert chroma_luma_ratio(domain_target(bic, 0.4, est)) == pytest.approx(chroma_luma_ratio(lr), rel=0.05)
