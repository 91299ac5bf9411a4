"""Blur + stride-4 downsampling, kernel synthesis and moments, noise and JPEG operators."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sdtool.degrade.ops import (
    blur_downsample, gaussian_kernel, jpeg, kernel_moments, kernel_sigma, poisson_noise,
)


def test_blur_downsample_equals_direct_conv2d() -> None:
    torch.manual_seed(0)
    y = torch.rand(2, 3, 48, 40, dtype=torch.float64)
    k = torch.rand(2, 21, 21, dtype=torch.float64)
    k = k / k.sum(dim=(1, 2), keepdim=True)
    out = blur_downsample(y, k, 4)
    assert out.shape == (2, 3, 12, 10)
    for i in range(2):
        pad = F.pad(y[i : i + 1], (10, 10, 10, 10), mode="reflect")
        ref = F.conv2d(pad, k[i].expand(3, 1, 21, 21), groups=3)[..., ::4, ::4]
        assert torch.allclose(out[i : i + 1], ref, atol=1e-6)


def test_odd_size_and_variant_kernels_match_shared() -> None:
    torch.manual_seed(1)
    y = torch.rand(1, 3, 37, 30)
    k = gaussian_kernel(21, 1.3, 2.2, 0.5)
    out = blur_downsample(y, k, 4)
    assert out.shape == (1, 3, math.ceil(37 / 4), math.ceil(30 / 4))
    var = k[:, :, :, None, None].expand(1, 21, 21, 10, 8).contiguous()
    assert torch.allclose(blur_downsample(y, var, 4), out, atol=1e-5)
    # a spatially varying kernel really varies: a delta in one pixel differs from the blur there only
    var2 = var.clone()
    var2[0, :, :, 0, 0] = 0
    var2[0, 10, 10, 0, 0] = 1
    diff = (blur_downsample(y, var2, 4) - out).abs()[0].amax(0)
    assert diff[0, 0] > 1e-3 and diff[1:, :].max() < 1e-5 and diff[0, 1:].max() < 1e-5


def test_gaussian_kernel_moments() -> None:
    k = gaussian_kernel(21, torch.tensor([1.6, 2.0]), torch.tensor([1.6, 1.0]), torch.tensor([0.0, math.pi / 2]))
    assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(2), atol=1e-6)
    assert abs(float(kernel_sigma(k)[0]) - 1.6) < 0.01
    mean, cov = kernel_moments(k)
    assert mean.abs().max() < 1e-5
    # rotated by 90°: the long axis (σ 2) is now vertical
    assert abs(float(cov[1, 1, 1]) - 4.0) < 0.05 and abs(float(cov[1, 0, 0]) - 1.0) < 0.05
    with pytest.raises(ValueError):
        blur_downsample(torch.rand(1, 3, 8, 8), torch.ones(1, 4, 4) / 16)


def test_poisson_noise_level_and_jpeg() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.full((1, 3, 64, 64), 0.5)
    n = poisson_noise(x, 200.0, generator=gen)
    assert abs(float(n.std()) - math.sqrt(0.5 / 200)) < 0.005 and abs(float(n.mean())) < 0.005
    img = torch.rand(2, 3, 32, 32)
    lo, hi = jpeg(img, 10), jpeg(img, [95, 95])
    assert lo.shape == img.shape
    assert (lo - img).abs().mean() > (hi - img).abs().mean() > 0
