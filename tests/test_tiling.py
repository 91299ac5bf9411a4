"""sdtool.infer.tiling: tile grid, blending, noise cuts, OOM fallback; tiled ≈ untiled for the tiny SDFlow."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sdtool.config import PRESETS
from sdtool.model.sdflow import SDFlow
from sdtool.infer.tiling import TileOOMError, blend_window, run_tiled, tile_spans


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (peak 1, mean over all pixels and channels)."""
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.mark.parametrize("length,tile,overlap,align", [(100, 32, 8, 1), (203, 64, 16, 8), (256, 64, 32, 8),
                                                       (33, 40, 8, 1), (256, 128, 16, 1), (1000, 192, 16, 1)])
def test_tile_spans_cover_overlap_and_align(length: int, tile: int, overlap: int, align: int) -> None:
    spans = tile_spans(length, tile, overlap, align)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(s % align == 0 for s, _ in spans) and all(e % align == 0 for _, e in spans[:-1])
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s0 < s1 and e0 < e1 and e0 - s1 >= overlap  # consecutive tiles overlap by at least `overlap`
    assert all(e - s <= tile + overlap + 2 * align for s, e in spans)
    if length <= tile + overlap:
        assert spans == [(0, length)]
    else:
        assert len(spans) == -(-length // tile)
        # The work over an untiled run stays near (1 + overlap / tile), far from fixed tiles' 2× worst case.
        assert sum(e - s for s, e in spans) <= length + len(spans) * (overlap + 2 * align)


def test_blend_window_is_positive_and_ramps() -> None:
    w = blend_window(20, 6, at_start=False, at_end=True)
    assert (w > 0).all() and w[0] < 0.1 and torch.all(w[6:] == 1)
    assert torch.all(w[:6][1:] > w[:6][:-1])
    assert torch.all(blend_window(10, 4, True, True) == 1)


def _up_local(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Stand-in x4 map whose output pixel depends only on its own LR pixel and noise pixel."""
    return x.repeat_interleave(4, 2).repeat_interleave(4, 3) + 0.1 * n[:, :3].repeat_interleave(4,
                                                                                                2).repeat_interleave(4,
                                                                                                                     3)


def _down_local(y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Stand-in /4 map: 4×4 average plus the /8 noise repeated ×2 (noise pixel = HR pixel // 8)."""
    out = F.avg_pool2d(y, 4, ceil_mode=True)
    return out + 0.1 * n[:, :3].repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, : out.shape[2], : out.shape[3]]


def test_local_map_tiled_equals_untiled_upscale() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 37, 50, generator=g)
    n = torch.randn(1, 5, 37, 50, generator=g)
    full = run_tiled(_up_local, x, n, scale=4, tile=0)
    ticks: list[tuple[int, int]] = []
    tiled = run_tiled(_up_local, x, n, scale=4, tile=16, overlap=4, on_tile=lambda d, t: ticks.append((d, t)))
    assert full.tiles == 1 and tiled.tiles > 4
    assert ticks[-1] == (tiled.tiles, tiled.tiles)
    assert tiled.image.shape == (1, 3, 148, 200)
    assert torch.allclose(full.image, tiled.image, atol=1e-5)  # noise cut per tile = global noise


def test_local_map_tiled_equals_untiled_downscale() -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.rand(1, 3, 120, 96, generator=g)
    n = torch.randn(1, 12, 15, 12, generator=g)
    full = run_tiled(_down_local, y, n, scale=0.25, noise_stride=8, align=8, tile=0).image
    tiled = run_tiled(_down_local, y, n, scale=0.25, noise_stride=8, align=8, tile=44, overlap=12)
    assert tiled.tile == 40  # rounded down to the 8-pixel grid
    assert full.shape == tiled.image.shape == (1, 3, 30, 24)
    assert torch.allclose(full, tiled.image, atol=1e-5)


def test_misaligned_noise_would_be_detected() -> None:
    with pytest.raises(ValueError, match="multiple of noise_stride"):
        run_tiled(_down_local, torch.rand(1, 3, 64, 64), torch.randn(1, 12, 8, 8), scale=0.25, noise_stride=8, align=4,
                  tile=32)


def test_oom_halves_the_tile_and_goes_on() -> None:
    calls: list[int] = []

    def fn(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[-1])
        if max(x.shape[-2:]) > 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return _up_local(x, n)

    x = torch.rand(1, 3, 40, 40)
    n = torch.randn(1, 3, 40, 40)
    halved: list[int] = []
    res = run_tiled(fn, x, n, scale=4, tile=0, overlap=4, min_tile=8, on_oom=halved.append)
    assert res.oom_retries == 2 and res.tile == 10 and halved == [20, 10]
    assert torch.allclose(res.image, _up_local(x, n), atol=1e-5)

    def always_oom(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of memory")

    with pytest.raises(TileOOMError, match="out of device memory"):
        run_tiled(always_oom, x, n, scale=4, tile=32, min_tile=16)


def test_other_errors_are_not_swallowed() -> None:
    def broken(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_tiled(broken, torch.rand(1, 3, 32, 32), None, scale=4, tile=16)


@pytest.fixture(scope="module")
def tiny() -> SDFlow:
    torch.manual_seed(0)
    return SDFlow(PRESETS["tiny"]).eval()


def _smooth_image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, h // 4 + 1, w // 4 + 1, generator=g), size=(h, w), mode="bilinear")


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_tiny_sdflow_upscale_tiled_matches_untiled(tiny: SDFlow, temperature: float) -> None:
    # Measured: PSNR of the tiled vs the untiled x4 output (whole 1×3×144×176 image, peak 1), same global noise.
    x = _smooth_image(36, 44, 2)
    noise = torch.randn(tiny.upscale_noise_shape(1, 36, 44), generator=torch.Generator().manual_seed(3))

    def fn(xt: torch.Tensor, nt: torch.Tensor) -> torch.Tensor:
        return tiny.upscale(xt, temperature=temperature, noise=nt)

    full = run_tiled(fn, x, noise, scale=4, tile=0).image
    tiled = run_tiled(fn, x, noise, scale=4, tile=20, overlap=6,
                      noise_size=lambda h, w: tiny.upscale_noise_shape(1, h, w)[2:])
    assert tiled.tiles >= 6
    assert psnr(full, tiled.image) >= 40.0
    if temperature > 0:  # the noise really matters, so matching it across tiles is what keeps the sample
        mean = run_tiled(lambda a, b: tiny.upscale(a, temperature=0.0, noise=b), x, noise, scale=4, tile=0).image
        assert psnr(full, mean) < psnr(full, tiled.image) - 10


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_tiny_sdflow_downscale_tiled_matches_untiled(tiny: SDFlow, temperature: float) -> None:
    y = _smooth_image(160, 136, 4)
    noise = torch.randn(tiny.downscale_noise_shape(1, 160, 136), generator=torch.Generator().manual_seed(5))

    def fn(yt: torch.Tensor, nt: torch.Tensor) -> torch.Tensor:
        return tiny.downscale(yt, temperature=temperature, component=1, noise=nt)

    full = run_tiled(fn, y, noise, scale=0.25, noise_stride=8, align=8, tile=0).image
    tiled = run_tiled(fn, y, noise, scale=0.25, noise_stride=8, align=8, tile=64, overlap=16)
    assert full.shape == tiled.image.shape == (1, 3, 40, 34)
    assert tiled.tiles >= 6
    assert psnr(full, tiled.image) >= 40.0
