"""The whole SDFlow model: invertibility, densities, deterministic and seeded sampling, sizes."""

import math

import pytest
import torch

from sdtool.config import PRESETS, SDFlowConfig
from sdtool.model.sdflow import SDFlow
from tests.helpers import perturb


@pytest.fixture
def model():
    torch.manual_seed(0)
    return perturb(SDFlow(PRESETS["tiny"]), scale=0.05).eval()


def test_paper_config_matches_authors_size():
    n = sum(p.numel() for p in SDFlow(PRESETS["paper"]).parameters())
    assert 14.0e6 < n < 14.2e6


def test_lite_is_much_cheaper_than_paper():
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for name in ("paper", "lite"):
        m = SDFlow(PRESETS[name]).eval()
        with FlopCounterMode(display=False) as fc:
            m.upscale(torch.rand(1, 3, 16, 16), temperature=0.0)
        flops[name] = fc.get_total_flops()
    assert flops["paper"] / flops["lite"] >= 4


def test_hr_path_inverts(model):
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z_c, z_h, _ = model.hr_latents(y)
        z_hp, _ = model.hf_flow(z_h, z_c)
        y2 = model.sr_from_content(z_c, z_hp)
    assert z_c.shape == (2, 3, 4, 4) and z_hp.shape == (2, 45, 4, 4)
    assert (y2 - y).abs().max() < 1e-4


def test_lr_path_inverts(model):
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        _, parts = model.lr_log_prob(x)
        x2 = model.lr_from_content(parts["z_c"], parts["z_dp"])
    assert parts["z_dp"].shape == (2, 12, 4, 4)
    assert (x2 - x).abs().max() < 1e-4


def test_whole_hr_flow_logdet_equals_bruteforce():
    torch.manual_seed(3)
    m = perturb(SDFlow(PRESETS["tiny"]), scale=0.05).double().eval()
    y = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: m.hr_flow(v.view_as(y))[0].flatten(), y.flatten())
    _, logabsdet = torch.linalg.slogdet(jac)
    assert torch.allclose(m.hr_flow(y)[1][0], logabsdet, atol=1e-8)


def test_densities_are_finite_and_differentiable(model):
    model.train()
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    lp_hr, _ = model.hr_log_prob(y)
    lp_lr, _ = model.lr_log_prob(x)
    assert lp_hr.shape == (2,) and lp_lr.shape == (2,)
    (-(lp_hr.mean() + lp_lr.mean())).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)


def test_temperature_zero_is_deterministic(model):
    x = torch.rand(1, 3, 6, 7)
    a = model.upscale(x, temperature=0.0)
    b = model.upscale(x, temperature=0.0, generator=torch.Generator().manual_seed(5))
    assert a.shape == (1, 3, 24, 28)
    assert torch.equal(a, b)
    y = torch.rand(1, 3, 16, 24)
    assert torch.equal(model.downscale(y, 0.0, component=2), model.downscale(y, 0.0, component=2))


def test_fixed_generator_reproduces_and_seeds_differ(model):
    x = torch.rand(1, 3, 5, 5)
    s1 = model.upscale(x, 0.8, generator=torch.Generator().manual_seed(1))
    s1b = model.upscale(x, 0.8, generator=torch.Generator().manual_seed(1))
    s2 = model.upscale(x, 0.8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(s1, s1b)
    assert (s1 - s2).abs().max() > 1e-4
    y = torch.rand(2, 3, 16, 16)
    d1 = model.downscale(y, 0.8, generator=torch.Generator().manual_seed(1))
    d1b = model.downscale(y, 0.8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(d1, d1b)


def test_explicit_noise_equals_generator_noise(model):
    x = torch.rand(1, 3, 4, 4)
    noise = torch.randn(model.upscale_noise_shape(1, 4, 4), generator=torch.Generator().manual_seed(7))
    a = model.upscale(x, 0.8, noise=noise)
    b = model.upscale(x, 0.8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (17, 9), (32, 32)])
def test_downscale_any_size(model, size):
    h, w = size
    out = model.downscale(torch.rand(1, 3, h, w), 0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, math.ceil(h / 4), math.ceil(w / 4))
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (9, 4)])
def test_upscale_any_size(model, size):
    h, w = size
    out = model.upscale(torch.rand(1, 3, h, w), 0.5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 4 * h, 4 * w)


def test_component_choice_changes_downscale(model):
    with torch.no_grad():
        model.deg_prior.means.copy_(torch.linspace(-1, 1, model.n_components))
    y = torch.rand(1, 3, 16, 16)
    assert (model.downscale(y, 0.0, component=0) - model.downscale(y, 0.0, component=3)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="component"):
        model.downscale(y, 0.0, component=99)


def test_config_json_round_trip():
    for cfg in PRESETS.values():
        assert SDFlowConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown config fields"):
        SDFlowConfig.from_json('{"bogus": 1}')
