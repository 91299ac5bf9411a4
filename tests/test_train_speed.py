"""The training step's speed levers (issue 25): the exact ones give the same numbers as the plain path, the
sampling ones do what their names say."""

import dataclasses

import pytest
import torch

from sdtool.config import get_config
from sdtool.flows import FlowStep, Sequential, Squeeze, Unsqueeze, transition
from sdtool.model.sdflow import SDFlow
from sdtool.nets.folding import folding
from sdtool.train.config import LossWeights
from sdtool.train.sdflow_task import SDFlowTask
from tests.helpers import perturb


def _flow() -> Sequential:
    torch.manual_seed(0)
    flow = Sequential([Squeeze(), *transition(12), FlowStep(12, 8), FlowStep(12, 8), *transition(12), Unsqueeze()])
    return perturb(flow, scale=0.1).double().train()


@pytest.mark.parametrize("inverse", [False, True])
def test_fused_affine_runs_match_the_plain_path_with_gradients(inverse):
    """Training runs each run of ActNorm / 1×1 conv as one composed map: same output, log-det and parameter
    gradients as piece by piece (float64, so only rounding could differ), and it is really taken."""
    flow = _flow()
    assert any(isinstance(r, list) and len(r) >= 4 for r in flow._runs())  # transition + next step's pair
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    calls = []
    run_fused = flow._run_fused
    flow._run_fused = lambda *a, **k: calls.append(1) or run_fused(*a, **k)
    results = {}
    for fused in (True, False):
        flow.zero_grad()
        with folding(fused):
            z, ld = flow.inverse(x) if inverse else flow(x)
        (z.pow(2).sum() + ld.sum()).backward()
        results[fused] = (z.detach(), ld.detach(), [p.grad.clone() for p in flow.parameters()])
    assert calls == [1]  # the fused path ran in training with folding on, and only then
    (z1, ld1, g1), (z0, ld0, g0) = results[True], results[False]
    assert torch.allclose(z1, z0, rtol=1e-12, atol=1e-12) and torch.allclose(ld1, ld0, rtol=1e-12, atol=1e-10)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-10) for a, b in zip(g1, g0))
    back, ld_back = flow(z1) if inverse else flow.inverse(z1)  # round trip through the fused path
    assert torch.allclose(back, x, atol=1e-10) and torch.allclose(ld_back + ld1, torch.zeros(2, dtype=torch.float64),
                                                                  atol=1e-9)


def test_fused_path_waits_for_actnorm_initialisation():
    """An uninitialised ActNorm needs the plain path's data-dependent start: the first training pass takes it."""
    torch.manual_seed(0)
    flow = Sequential([*transition(4), FlowStep(4, 8)]).train()
    assert not flow._ready()
    z, _ = flow(torch.randn(8, 4, 6, 6) * 3 + 1)
    assert flow._ready()  # initialised by that pass
    per_channel = z.detach().transpose(0, 1).reshape(4, -1)
    assert per_channel.std(dim=1).max() < 5  # normalised by the first ActNorm's start, not left at scale 3


def _task(**weights) -> SDFlowTask:
    torch.manual_seed(0)
    w = dataclasses.replace(LossWeights(), image_loss_start=0, **weights)
    return SDFlowTask(SDFlow(get_config("tiny")), w, perceptual=None)


def _batch(n=4, side=32):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, side // 4, side // 4, generator=g), torch.rand(n, 3, side, side, generator=g)


def test_generator_step_leaves_the_discriminators_without_gradients():
    """The generator's pass runs through the discriminators but computes none of their weight gradients (the
    discriminator step would throw them away), while the model's own parameters get theirs."""
    task = _task()
    task._discriminator_step = lambda *a: 0.0
    task.train_step(*_batch(), 1)
    for d in (task.d_latent, task.d_hr, task.d_lr):
        assert all(p.grad is None and p.requires_grad for p in d.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in task.model.hf_flow.parameters())


def test_nll_every_k_steps_counts_k_times():
    """nll_every=2: the NLL terms only on even steps (and until every ActNorm has started), where they enter
    the total twice over."""
    task = _task(nll_every=2)
    lr, hr = _batch()
    first = task.train_step(lr, hr, 1)  # a model whose ActNorms have not started yet: NLL now, whatever the step
    assert "nll_hr" in first and task._initialised()
    odd, even = task.train_step(lr, hr, 3), task.train_step(lr, hr, 2)
    assert "nll_hr" not in odd and "nll_lr" not in odd
    assert even["nll_hr"] > 0 and even["nll_lr"] > 0
    rest = sum(task.w.__dict__[k] * even[k] for k in ("content", "latent_adv", "zc_l2", "deg_l2")) + even["image"]
    assert even["total"] == pytest.approx(rest + 2 * (even["nll_hr"] + even["nll_lr"]), rel=1e-5)


def test_hr_discriminator_sees_aligned_crops_and_cycle_a_fraction_of_the_batch():
    task = _task(d_hr_crop=16, cycle_fraction=0.5)
    seen, cycled = [], []
    task.d_hr.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    task.model.extractor.register_forward_pre_hook(lambda mod, args: cycled.append(args[0].shape[0]))
    task.train_step(*_batch(n=4, side=32), 1)
    assert seen and all(s[-2:] == (16, 16) for s in seen)  # generator pass and both discriminator inputs
    rows, cols = task._window
    assert rows.start % 4 == 0 and cols.start % 4 == 0 and rows.stop - rows.start == 16
    assert cycled == [4, 2]  # the real LR batch, then the cycle on half the generated LR batch
    whole = _task(d_hr_crop=0)
    seen.clear()
    whole.d_hr.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    whole.train_step(*_batch(n=4, side=32), 1)
    assert all(s[-2:] == (32, 32) for s in seen)  # d_hr_crop 0: the whole crop


def test_discriminators_update_every_k_steps():
    """d_every=2: the discriminators' parameters move on even steps only."""
    task = _task(d_every=2)
    lr, hr = _batch()
    before = [p.detach().clone() for p in task.d_hr.parameters()]
    odd = task.train_step(lr, hr, 1)
    assert "d" not in odd and all(torch.equal(a, b) for a, b in zip(before, task.d_hr.parameters()))
    even = task.train_step(lr, hr, 2)
    assert "d" in even and not all(torch.equal(a, b) for a, b in zip(before, task.d_hr.parameters()))


def test_hr_color_crop_decodes_an_aligned_window_of_half_the_batch():
    """hr_color_crop=16 on 32-px crops: the colour anchor's SR samples are 16² windows (offset a multiple of 4) of
    half the batch, decoded on their own and compared with the same window of the HR crops; 0 keeps them whole
    inside the one SR pass."""
    task = _task(hr_color_crop=16)
    sizes = []

    def spy(model):
        decode = model.sr_from_content
        model.sr_from_content = lambda z_c, z_hp: sizes.append(tuple(z_c.shape)) or decode(z_c, z_hp)

    spy(task.model)
    targets = []
    color = task._hr_color_loss
    task._hr_color_loss = lambda y, sr: targets.append((sr["hr"].shape, task._sr_windows["hr"])) or color(y, sr)
    logs = task.train_step(*_batch(n=4, side=32), 1)
    assert sizes[-1] == (2, 3, 4, 4)  # half the batch, a 4×4 content window = 16² HR px
    assert sizes[-2][0] == 4 + 2  # the real LR crops and the cycle, at full size, in one pass
    (shape, (rows, cols)), = targets
    assert shape == (2, 3, 16, 16) and rows.start % 4 == 0 and cols.start % 4 == 0 and rows.stop - rows.start == 16
    assert torch.isfinite(torch.tensor(logs["total"]))
    whole = _task(hr_color_crop=0)
    sizes.clear()
    spy(whole.model)
    whole.train_step(*_batch(n=4, side=32), 1)
    assert sizes == [(4 + 2 + 2, 3, 8, 8)]  # one pass: real LR, cycle and the colour anchor's half


def test_cycle_crop_decodes_and_scores_a_window():
    """cycle_crop=16 on 32-px crops: the cycle's SR samples are a 16² window of their content (the extractor still
    reads the whole generated LR image), scored against the same window of their HR crops."""
    task = _task(cycle_crop=16, cycle_fraction=0.5)
    decoded, scored = [], []
    decode = task.model.sr_from_content
    task.model.sr_from_content = lambda z_c, z_hp: decoded.append(tuple(z_c.shape)) or decode(z_c, z_hp)
    cycle = task._cycle_loss
    task._cycle_loss = lambda y, zc, sr: scored.append((sr["cycle"].shape, sr["cycle_zc"].shape,
                                                         task._sr_windows["cycle"])) or cycle(y, zc, sr)
    task.train_step(*_batch(n=4, side=32), 1)
    assert decoded == [(4 + 2, 3, 8, 8), (2, 3, 4, 4)]  # real LR and colour anchor whole; the cycle's window alone
    (shape, zc_shape, (rows, cols)), = scored
    assert shape == (2, 3, 16, 16) and zc_shape == (2, 3, 8, 8)
    assert rows.start % 4 == 0 and cols.start % 4 == 0 and cols.stop - cols.start == 16
    y = torch.arange(4 * 3 * 32 * 32, dtype=torch.float32).reshape(4, 3, 32, 32)
    assert torch.equal(task._hr_target(y, "cycle", 2), y[:2, :, rows, cols])
