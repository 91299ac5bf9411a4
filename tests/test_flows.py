"""Every invertible piece: exact round trip, log-dets that cancel, and log-det = slogdet of the Jacobian."""

import pytest
import torch

from sdtool.flows import (
    ActNorm, AffineCoupling, AffineInjector, ConditionalFlow, FlowStep, InvConv1x1, MixtureOfGaussians,
    Sequential, Squeeze, StandardNormal, Unsqueeze, transition,
)
from sdtool.nets.rrdb import ConditionNet
from tests.helpers import perturb

C, H, W, CC = 4, 4, 4, 3


def _cases():
    return {
        "actnorm": (lambda: ActNorm(C), False),
        "conv1x1": (lambda: InvConv1x1(C), False),
        "coupling": (lambda: AffineCoupling(C, 8), False),
        "coupling_odd_channels": (lambda: AffineCoupling(5, 8), False),
        "coupling_cond": (lambda: AffineCoupling(C, 8, CC), True),
        "injector": (lambda: AffineInjector(C, 8, CC), True),
        "squeeze": (lambda: Squeeze(), False),
        "unsqueeze": (lambda: Unsqueeze(), False),
        "step": (lambda: FlowStep(C, 8), False),
        "step_cond_no_coupling": (lambda: FlowStep(C, 8, CC, coupling=False), True),
        "transition": (lambda: Sequential(transition(C)), False),
        "conditional_flow": (
            lambda: ConditionalFlow(ConditionNet(CC, 6, nb=1, nf=8, gc=4), Sequential([FlowStep(C, 8, 6)])),
            True,
        ),
        "sequence": (lambda: Sequential([Squeeze(), *transition(4 * C), FlowStep(4 * C, 8), Unsqueeze()]), False),
    }


def _build(name):
    make, conditional = _cases()[name]
    torch.manual_seed(1)
    t = perturb(make()).double().eval()
    channels = 5 if name == "coupling_odd_channels" else C
    x = torch.randn(2, channels, H, W, dtype=torch.float64)
    cond = torch.randn(2, CC, H, W, dtype=torch.float64) if conditional else None
    return t, x, cond


@pytest.mark.parametrize("name", list(_cases()))
def test_round_trip_is_exact(name):
    t, x, cond = _build(name)
    z, ld_f = t(x, cond)
    x2, ld_i = t.inverse(z, cond)
    assert ld_f.shape == (2,)
    assert torch.allclose(x2, x, atol=1e-10), (x2 - x).abs().max()
    assert torch.allclose(ld_f + ld_i, torch.zeros(2, dtype=torch.float64), atol=1e-9)
    # float32 too, the precision the tools run in
    t32 = t.float()
    z32, _ = t32(x.float(), None if cond is None else cond.float())
    assert (t32.inverse(z32, None if cond is None else cond.float())[0] - x.float()).abs().max() < 1e-5


@pytest.mark.parametrize("name", list(_cases()))
def test_logdet_equals_bruteforce_jacobian(name):
    t, x, cond = _build(name)
    x1 = x[:1]
    c1 = None if cond is None else cond[:1]
    jac = torch.autograd.functional.jacobian(lambda v: t(v.view_as(x1), c1)[0].flatten(), x1.flatten())
    sign, logabsdet = torch.linalg.slogdet(jac)
    assert sign != 0
    _, ld = t(x1, c1)
    assert torch.allclose(ld[0], logabsdet, atol=1e-8), (ld[0], logabsdet)


def test_piece_is_not_identity():
    # Guards the tests above: perturbed pieces really change their input.
    t, x, cond = _build("coupling_cond")
    assert (t(x, cond)[0] - x).abs().max() > 1e-3


def test_actnorm_data_dependent_init_normalises_batch():
    an = ActNorm(3).train()
    x = torch.randn(8, 3, 5, 5) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1) + 4.0
    z, _ = an(x)
    assert int(an.initialized) == 1
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    # initialised once: a second batch does not re-initialise
    loc = an.loc.detach().clone()
    an(torch.randn(8, 3, 5, 5))
    assert torch.equal(loc, an.loc.detach())


def test_actnorm_eval_never_initialises():
    an = ActNorm(3).eval()
    an(torch.randn(2, 3, 4, 4) * 5)
    assert int(an.initialized) == 0


def test_standard_normal_log_prob():
    z = torch.randn(3, 2, 4, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(StandardNormal().log_prob(z), expected, atol=1e-4)


def test_mixture_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    mix = MixtureOfGaussians(5)
    with torch.no_grad():
        mix.log_stds.copy_(torch.randn(5) * 0.3)
    z = torch.randn(2, 3, 2, 2)
    comps = torch.distributions.Normal(mix.means.detach(), mix.log_stds.detach().exp())
    dist = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(torch.ones(5)), comps)
    expected = dist.log_prob(z).flatten(1).sum(1)
    assert torch.allclose(mix.log_prob(z), expected, atol=1e-4)


def test_mixture_sample_uses_one_component_per_image():
    mix = MixtureOfGaussians(4)
    noise = torch.randn(2, 3, 2, 2)
    comp = torch.tensor([1, 3])
    s = mix.sample(noise, 0.0, comp)
    assert torch.allclose(s[0], mix.means[1].expand(3, 2, 2))
    assert torch.allclose(s[1], mix.means[3].expand(3, 2, 2))
    s2 = mix.sample(noise, 0.5, comp)
    assert torch.allclose(s2[1], mix.means[3] + mix.log_stds[3].exp() * 0.5 * noise[1])


def test_conditional_inverse_repeated_equals_inverse_with_a_repeated_condition():
    t, x, cond = _build("conditional_flow")
    z = torch.randn(6, C, H, W, dtype=torch.float64)  # three batches of two that share `cond`
    got, ld = t.inverse_repeated(z, cond)
    want, ld_want = t.inverse(z, cond.repeat(3, 1, 1, 1))
    assert torch.allclose(got, want, atol=1e-12) and torch.allclose(ld, ld_want, atol=1e-12)
    with pytest.raises(ValueError, match="does not stack"):
        t.inverse_repeated(z[:5], cond)
