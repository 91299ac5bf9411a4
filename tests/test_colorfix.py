"""Colour guard (sdtool.infer.colorfix), the colour error metric, and the colour anchors of training."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sdtool.infer.colorfix import adain_color_fix, apply_color_fix, low_band, wavelet_color_fix
from sdtool.metrics import color_error
from sdtool.infer.pipeline import process_images
from sdtool.train import losses as L
from tests.helpers import perturb, write_image_file


def _scene(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 6, h), torch.linspace(0, 6, w), indexing="ij")
    base = torch.stack([0.5 + 0.3 * torch.sin(xx + k) * torch.cos(yy - k) for k in range(3)])[None]
    return (base + 0.05 * torch.rand(base.shape, generator=g)).clamp(0, 1)


def test_color_error_of_identical_and_shifted_images():
    rng = np.random.default_rng(0)
    img = rng.uniform(20, 200, (40, 30, 3))
    assert color_error(img, img) == 0.0
    assert color_error(img + 10, img) == pytest.approx(10.0, abs=1e-9)
    shifted = img.copy()
    shifted[..., 1] += 9  # green alone: 9 / 3 channels
    assert color_error(shifted, img, crop_border=4) == pytest.approx(3.0, abs=1e-9)
    with pytest.raises(ValueError):
        color_error(img, img[:-1])


@pytest.mark.parametrize("method", ["wavelet", "adain"])
def test_guard_keeps_a_flat_colour(method):
    lr = torch.tensor([0.8, 0.45, 0.1]).view(1, 3, 1, 1).expand(1, 3, 16, 16).clone()  # an orange
    sr = (lr.repeat_interleave(4, 2).repeat_interleave(4, 3) + torch.tensor([-0.1, 0.12, 0.05]).view(1, 3, 1, 1))
    sr = sr + 0.03 * torch.randn(sr.shape, generator=torch.Generator().manual_seed(1))
    out = apply_color_fix(sr.clamp(0, 1), lr, method)
    assert out.shape == sr.shape
    drift = (out.mean(dim=(2, 3)) - lr.mean(dim=(2, 3))).abs().max().item() * 255
    assert drift < 0.5, drift
    assert (sr.mean(dim=(2, 3)) - lr.mean(dim=(2, 3))).abs().max().item() * 255 > 20  # it had drifted


def test_wavelet_keeps_detail_and_replaces_low_band():
    ref = _scene(64, 64)
    detail = 0.1 * torch.sign(torch.randn(ref.shape, generator=torch.Generator().manual_seed(2)))
    sr = (ref + 0.2 + detail).clamp(0, 1)  # a brightness cast plus fine detail
    out = wavelet_color_fix(sr, ref)
    assert (low_band(out) - low_band(ref)).abs().mean() < 0.02
    assert (out - low_band(out)).abs().mean() > 0.5 * (detail - low_band(detail)).abs().mean()
    ada = adain_color_fix(sr, ref)
    assert torch.allclose(ada.mean(dim=(2, 3)), ref.mean(dim=(2, 3)), atol=0.02)


def test_unknown_guard_is_refused(tiny_model):
    with pytest.raises(ValueError, match="colour fix"):
        apply_color_fix(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 2, 2), "histogram")
    from sdtool.api import upscale
    from sdtool.errors import OptionError

    with pytest.raises(OptionError, match="color_fix"):
        upscale(torch.rand(1, 3, 4, 4), model=tiny_model, color_fix="bogus")


def test_tiled_equals_untiled_with_the_guard(tmp_path, tiny_model):
    import cv2

    img = (_scene(40, 52)[0].permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    src = write_image_file(tmp_path / "in.png", img)
    out = {}
    for name, tile, fix in (("full", 0, "wavelet"), ("tiled", 24, "wavelet"), ("raw", 0, "none")):
        r = process_images(src, tmp_path / f"{name}.png", model=tiny_model, seed=3, tile=tile, tile_overlap=8,
                           temperature=0.8, color_fix=fix)
        assert r.ok, r.failed
        out[name] = cv2.imread(str(tmp_path / f"{name}.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    mse = ((out["full"] - out["tiled"]) ** 2).mean()
    assert 10 * np.log10(65535.0**2 / max(mse, 1e-12)) >= 40.0  # as without the guard (test_pipeline)
    # The guard did act: the untrained model's colours are pulled to the input's.
    up = np.repeat(np.repeat(img[..., ::-1].astype(np.float64), 4, 0), 4, 1)
    assert color_error(out["full"], up) < 0.5 * color_error(out["raw"], up)


def test_color_fix_option_only_for_upscale(tmp_path, tiny_model):
    from sdtool.errors import UsageError

    src = write_image_file(tmp_path / "in.png", np.full((16, 16, 3), 100, np.uint8))
    with pytest.raises(UsageError, match="upscale only"):
        process_images(src, tmp_path / "o.png", task="downscale", model=tiny_model, color_fix="wavelet")
    with pytest.raises(UsageError, match="^color_fix must be one of"):
        process_images(src, tmp_path / "o.png", model=tiny_model, color_fix="nope")


def test_color_low_freq_loss_measures_a_cast():
    a = _scene(24, 24)
    assert L.color_low_freq(a, a, 2.0).item() == 0.0
    # A uniform +0.1 cast: 0.1 in the low band plus 0.1 in the channel means.
    assert L.color_low_freq(a + 0.1, a, 2.0).item() == pytest.approx(0.2, abs=1e-5)


def test_hr_colour_anchor_trains_the_hf_flow(tiny_model):
    from sdtool.train.config import LossWeights
    from sdtool.train.sdflow_task import SDFlowTask

    m = perturb(tiny_model.train(), 0.05)
    on = SDFlowTask(m, dataclasses.replace(LossWeights(), image_loss_start=0), perceptual=None)
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    z_c, _, _ = m.hr_latents(y)
    ds = m.lr_from_content(z_c.detach())
    loss = on._hr_color_loss(y, on._sr_samples(z_c, z_c, ds, torch.Generator().manual_seed(0)))
    assert loss.item() > 0
    loss.backward()
    grads = [p.grad for p in m.hf_flow.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    off = SDFlowTask(m, dataclasses.replace(LossWeights(), hr_color=0.0), perceptual=None)
    assert off._hr_color_loss(y, off._sr_samples(z_c, z_c, ds, torch.Generator())).item() == 0.0


def test_non_finite_weights_are_an_error(tiny_model):
    from sdtool.errors import NonFiniteOutputError

    with torch.no_grad():
        next(tiny_model.hr_flow.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError):
        tiny_model.upscale(torch.rand(1, 3, 8, 8), 0.5)


@pytest.mark.parametrize("method,detail", [("wavelet", 1.0), ("wavelet", 0.7), ("adain", 1.0)])
def test_guard_on_row_bands_equals_guard_on_the_whole_image(method, detail):
    """Tiled runs hand the guard one band of rows at a time; the result is the whole-image guard's."""
    from sdtool.infer.colorfix import RowGuard

    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, 37, 23, generator=g)
    sr = torch.rand(1, 3, 148, 92, generator=g)
    want = apply_color_fix(sr, lr, method, detail)
    got = torch.full_like(sr, -1.0)

    def sink(rows, r0):
        got[:, :, r0: r0 + rows.shape[2]] = rows

    guard = RowGuard(lr, 148, 92, method, sink, detail=detail)
    r = 0
    for n in (10, 3, 40, 1, 50, 44):
        guard(sr[:, :, r: r + n], r)
        r += n
    assert (got - want).abs().max().item() < 1e-6


def test_detail_gain_scales_the_detail_and_keeps_the_colours():
    ref = _scene(64, 64)
    fine = 0.1 * torch.sign(torch.randn(ref.shape, generator=torch.Generator().manual_seed(4)))
    sr = (ref + 0.15 + fine).clamp(0, 1)  # a cast plus fine detail

    def energy(x):
        return (x - low_band(x)).pow(2).mean().item()

    full, half = wavelet_color_fix(sr, ref), wavelet_color_fix(sr, ref, detail=0.5)
    assert torch.equal(full, wavelet_color_fix(sr, ref, detail=1.0))
    assert 0.2 < energy(half) / energy(full) < 0.3  # amplitude × 0.5: energy × 0.25
    for out in (full, half):  # the colour guard still holds
        assert (out.mean(dim=(2, 3)) - ref.mean(dim=(2, 3))).abs().max().item() * 255 < 0.5
    assert torch.allclose(wavelet_color_fix(sr, ref, detail=0.0), low_band(ref).clamp(0, 1), atol=1e-6)


def test_detail_default_and_checks(tmp_path, tiny_model):
    from sdtool.infer.colorfix import resolve_detail
    from sdtool.config import DEFAULT_DETAIL
    from sdtool.errors import UsageError

    assert resolve_detail(None, "wavelet") == DEFAULT_DETAIL and resolve_detail(None, "none") == 1.0
    with pytest.raises(UsageError, match="between 0 and 2"):
        resolve_detail(2.5, "wavelet")
    with pytest.raises(UsageError, match="applies only with"):
        resolve_detail(0.5, "adain")
    img = (_scene(24, 20)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    src = write_image_file(tmp_path / "in.png", img)
    outs = {}
    for name, kw in (("default", {}), ("same", {"detail": DEFAULT_DETAIL}), ("one", {"detail": 1.0})):
        r = process_images(src, tmp_path / f"{name}.png", model=tiny_model, seed=2, temperature=0.8, **kw)
        assert r.ok, r.failed
        outs[name] = (tmp_path / f"{name}.png").read_bytes()
    assert outs["default"] == outs["same"] != outs["one"]
    with pytest.raises(UsageError, match="upscale only"):
        process_images(src, tmp_path / "d.png", task="downscale", model=tiny_model, detail=0.5)


def test_cli_refuses_detail_without_the_wavelet_guard(tmp_path):
    from typer.testing import CliRunner

    from sdtool.cli.app import app

    src = write_image_file(tmp_path / "in.png", np.full((8, 8, 3), 90, np.uint8))
    res = CliRunner().invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "--color-fix", "none",
                                   "--detail", "0.5"])
    assert res.exit_code == 2, res.output
    assert "--detail applies only with --color-fix wavelet" in res.output
    assert not (tmp_path / "o.png").exists()
