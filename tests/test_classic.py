"""Parametric degradation sampler: ranges, determinism, outputs."""

from __future__ import annotations

import pytest
import torch

from sdtool.degrade.classic import ClassicConfig, ClassicDegradation
from sdtool.degrade.ops import kernel_sigma
from sdtool.errors import UsageError


def test_shapes_ranges_and_determinism() -> None:
    cfg = ClassicConfig(sigma=(1.0, 2.0), noise=(3.0, 4.0), jpeg_prob=0.0, poisson_prob=0.0, aniso_prob=0.0)
    sampler = ClassicDegradation(cfg)
    y = torch.rand(4, 3, 50, 41)
    a = sampler.sample(y, torch.Generator().manual_seed(7))
    b = sampler.sample(y, torch.Generator().manual_seed(7))
    c = sampler.sample(y, torch.Generator().manual_seed(8))
    assert a.lr.shape == (4, 3, 13, 11) and a.noise.shape == (4, 3, 13, 11) and a.kernel.shape == (4, 21, 21)
    assert torch.equal(a.lr, b.lr) and (a.lr - c.lr).abs().max() > 1e-3
    s = kernel_sigma(a.kernel)
    assert bool(((s > 0.95) & (s < 2.05)).all())
    for p in a.params:
        assert 3.0 <= p["noise_sigma_255"] <= 4.0 and p["jpeg_quality"] is None and p["poisson_peak"] is None
    # the noise map is what was added (no clamping at mid-grey, no JPEG)
    stds = a.noise.std(dim=(1, 2, 3)) * 255
    assert bool(((stds > 2.5) & (stds < 4.5)).all())


def test_jpeg_and_invalid_ranges() -> None:
    s = ClassicDegradation(ClassicConfig(jpeg_prob=1.0, jpeg_quality=(20, 20), noise=(0.0, 0.0), poisson_prob=0.0))
    out = s.sample(torch.rand(1, 3, 64, 64), torch.Generator().manual_seed(0))
    assert out.params[0]["jpeg_quality"] == 20
    # 8-bit values after JPEG decoding
    assert torch.allclose(out.lr * 255, (out.lr * 255).round(), atol=1e-4)
    with pytest.raises(UsageError):
        ClassicDegradation(ClassicConfig(sigma=(3.0, 1.0)))
    with pytest.raises(UsageError):
        ClassicDegradation(ClassicConfig(jpeg_quality=(0, 200)))
