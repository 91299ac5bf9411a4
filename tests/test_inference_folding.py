"""Inference folding (flows/base.py): runs of ActNorm and 1×1 convolutions become one 1×1 convolution, ZeroConv
scales go into their convolution, computed once per weight state. Same outputs as the plain path."""

from __future__ import annotations

import pytest
import torch

from sdtool.config import PRESETS
from sdtool.flows import ActNorm, InvConv1x1, Sequential, Squeeze
from sdtool.nets.folding import folding
from sdtool.model.sdflow import SDFlow
from tests.helpers import perturb


def _model(scale: float = 0.02) -> SDFlow:
    torch.manual_seed(0)
    return perturb(SDFlow(PRESETS["tiny"]), scale, seed=1).eval()


def test_folded_chain_equals_its_pieces_and_logdet():
    torch.manual_seed(0)
    seq = Sequential([ActNorm(4), InvConv1x1(4), Squeeze(), ActNorm(16), InvConv1x1(16), ActNorm(16)])
    with torch.no_grad():
        for p in seq.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    seq.eval()
    x = torch.randn(2, 4, 6, 8)
    with torch.no_grad():
        with folding(False):
            z_ref, ld_ref = seq(x)
            x_ref, ld_inv_ref = seq.inverse(z_ref)
        z, ld = seq(x)
        back, ld_inv = seq.inverse(z)
        plan = seq.plan(inverse=False)
    assert len(plan) == 3  # affine run, squeeze, affine run
    assert torch.allclose(z, z_ref, atol=1e-5) and torch.allclose(ld, ld_ref, rtol=1e-5)
    assert torch.allclose(back, x, atol=1e-5) and torch.allclose(ld_inv, -ld, rtol=1e-5)
    assert torch.allclose(ld_inv_ref, ld_inv, rtol=1e-5)


def test_folded_model_equals_plain_model():
    m = _model()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(1, 3, 20, 24, generator=g), torch.rand(1, 3, 48, 40, generator=g)
    noise = torch.randn(m.upscale_noise_shape(1, 20, 24), generator=g)
    dn = torch.randn(m.downscale_noise_shape(1, 48, 40), generator=g)

    def run():
        return m.upscale(x, 0.8, noise=noise), m.downscale(y, 0.8, component=1, noise=dn)

    with folding(False):
        plain = run()
    folded = run()
    for a, b in zip(plain, folded):
        assert (a - b).abs().max().item() <= 1e-5


def test_fold_is_recomputed_when_weights_change():
    """The cache follows the weights: an optimiser step or a load makes the next call fold again."""
    m = _model()
    x = torch.rand(1, 3, 12, 12)
    noise = torch.randn(m.upscale_noise_shape(1, 12, 12))
    before = m.upscale(x, 0.5, noise=noise)
    other = _model(scale=0.03)
    m.load_state_dict(other.state_dict())
    after = m.upscale(x, 0.5, noise=noise)
    assert not torch.allclose(before, after, atol=1e-3)
    with folding(False):
        plain = m.upscale(x, 0.5, noise=noise)
    assert (after - plain).abs().max().item() <= 1e-5


@pytest.mark.parametrize("train_mode", [True, False])
def test_training_never_folds(train_mode):
    """With autograd on (training, or eval with gradients) the plain path runs and gradients reach every piece."""
    m = _model()
    m.train(train_mode)
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    logp, _ = m.hr_log_prob(y)
    logp.sum().backward()
    assert all(p.grad is not None for p in m.hr_flow.parameters())


def test_folded_zero_conv_pads_to_eight_outputs_and_returns_its_own():
    """The folded ZeroConv runs with zero filters up to a multiple of 8 outputs (12 → 16) and hands back only
    its 12 channels, equal to the plain scaled convolution."""
    from sdtool.nets.subnet import ZeroConv

    torch.manual_seed(0)
    zc = perturb(ZeroConv(5, 12)).eval()
    x = torch.randn(2, 5, 7, 9)
    with torch.no_grad():
        with folding(False):
            ref = zc(x)
        out = zc(x)
    assert zc._fold_cache[1][0].shape[0] == 16
    assert out.shape == ref.shape == (2, 12, 7, 9)
    assert torch.allclose(out, ref, atol=1e-6)


def test_latents_drawn_nchw_run_the_flows_channels_last():
    """Noise from randn is NCHW; the flows must still see channels-last activations (an NCHW latent ran every
    convolution of the HF and HR flows through oneDNN's reorders, 1.4× slower for `paper` SR)."""
    m = _model()
    layouts = []

    def record(mod, args):
        t = args[0]
        layouts.append(t.stride()[1] == 1 or t.shape[1] == 1)  # channels are the innermost dimension

    hooks = [c.register_forward_pre_hook(record) for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    z_c = torch.randn(1, 3, 8, 8)  # NCHW, as a user or the training loop draws it
    with torch.no_grad():
        m.sr_from_content(z_c, torch.randn(m.upscale_noise_shape(1, 8, 8)))
        m.lr_from_content(z_c, torch.randn(1, 12, 4, 4))
    for h in hooks:
        h.remove()
    assert layouts and all(layouts)
