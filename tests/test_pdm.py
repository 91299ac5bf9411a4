"""PDM: kernel/noise networks, save/load, determinism, and recovery of a known degradation by training."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch

from sdtool.degrade.ops import blur_downsample, gaussian_kernel, kernel_sigma
from sdtool.errors import CheckpointError
from sdtool.checkpoint import load_pdm
from sdtool.checkpoint import save_model as save_pdm
from sdtool.model.pdm import PDM, PDM_PRESETS
from sdtool.train.pdm_task import PDMTask, PDMTrainConfig, fit_pdm, learned_kernel_sigma


def synth_hr(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Piecewise-constant images (rectangles, disks): sharp edges make the blur width observable at LR."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    imgs = []
    for _ in range(n):
        img = (0.2 + 0.6 * torch.rand(3, 1, 1, generator=gen)).expand(3, size, size).clone()
        for _ in range(12):
            c = (0.1 + 0.8 * torch.rand(3, 1, 1, generator=gen)).expand(3, size, size)
            if float(torch.rand(1, generator=gen)) < 0.5:
                x0, y0 = (torch.rand(2, generator=gen) * size).tolist()
                wd, ht = (4 + torch.rand(2, generator=gen) * size / 2).tolist()
                m = (xx >= x0) & (xx < x0 + wd) & (yy >= y0) & (yy < y0 + ht)
            else:
                cx, cy = (torch.rand(2, generator=gen) * size).tolist()
                r = 3 + float(torch.rand(1, generator=gen)) * size / 4
                m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            img = torch.where(m, c, img)
        imgs.append(img)
    return torch.stack(imgs)


def test_kernels_are_normalised_and_shapes() -> None:
    m = PDM(PDM_PRESETS["tiny"])
    y = torch.rand(2, 3, 40, 36)
    s = m.degrade(y, generator=torch.Generator().manual_seed(0))
    assert s.lr.shape == (2, 3, 10, 9) and s.noise.shape == (2, 3, 10, 9)
    assert s.kernel.shape == (2, 21, 21)
    assert torch.allclose(s.kernel.sum(dim=(-2, -1)), torch.ones(2), atol=1e-5)
    assert abs(float(kernel_sigma(s.kernel)[0]) - 2.5) < 0.25  # initial kernel = Gaussian of init_sigma
    v = PDM(PDM_PRESETS["variant"])
    sv = v.degrade(y, generator=torch.Generator().manual_seed(0))
    assert sv.kernel.shape == (2, 21, 21, 10, 9)
    assert torch.allclose(sv.kernel.sum(dim=(1, 2)), torch.ones(2, 10, 9), atol=1e-5)


def test_seed_determinism_and_diversity() -> None:
    torch.manual_seed(3)
    m = PDM(PDM_PRESETS["tiny"])
    y = torch.rand(1, 3, 32, 32)
    a = m.degrade(y, generator=torch.Generator().manual_seed(1)).lr
    b = m.degrade(y, generator=torch.Generator().manual_seed(1)).lr
    c = m.degrade(y, generator=torch.Generator().manual_seed(2)).lr
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_save_load_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = PDM(PDM_PRESETS["tiny"])
    with torch.no_grad():
        m.net_n.log_gain.fill_(-3.0)
        for p in m.net_k.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "pdm.safetensors"
    save_pdm(m, path)
    m2 = load_pdm(path)
    assert m2.config == m.config
    y = torch.rand(1, 3, 32, 32)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(m.eval().degrade(y, generator=g()).lr, m2.degrade(y, generator=g()).lr)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_pdm(bad)
    with pytest.raises(CheckpointError):
        load_pdm(tmp_path / "missing.safetensors")


def test_train_step_protocol() -> None:
    task = PDMTask(PDM_PRESETS["tiny"], PDMTrainConfig(), generator=torch.Generator().manual_seed(0))
    assert task.kind == "pdm" and set(task.modules()) == {"pdm", "disc"} and set(task.optimizers()) == {"g", "d"}
    before = task.model.net_n.log_gain.detach().clone()
    stats = task.train_step(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 64, 64), 0)
    assert set(stats) >= {"loss_d", "loss_g_adv", "noise_energy"} and all(v == v for v in stats.values())
    assert not torch.equal(before, task.model.net_n.log_gain.detach())
    assert "config" in task.export_metadata()


def test_recovers_known_gaussian_kernel_and_noise() -> None:
    """LR made with a Gaussian kernel σ = 1.6 (HR px) and noise σ = 5/255 from other HR images (unpaired):
    a small PDM trained adversarially recovers the kernel width within 20 % and the noise level within 30 %."""
    t0 = time.time()
    gen = torch.Generator().manual_seed(0)
    hr_real, hr_other = synth_hr(32, 128, gen), synth_hr(32, 128, gen)
    lr = blur_downsample(hr_real, gaussian_kernel(21, 1.6)[0]) + torch.randn(32, 3, 32, 32, generator=gen) * 5 / 255
    # 150 steps at twice the rates: within 6 % / 22 % for seeds 1-3 (300 steps at 5e-4 / 2e-3: 4 % / 20 %);
    # untrained, the model is 57 % / 49 % off
    model, hist = fit_pdm(lr, hr_other, 150, PDM_PRESETS["tiny"],
                          PDMTrainConfig(lr_g=1e-3, lr_d=4e-3, d_width=16), batch=8, lr_patch=16, seed=0)
    sigma, noise = learned_kernel_sigma(model)
    print(f"recovered kernel sigma {sigma:.3f} (true 1.6), noise {noise * 255:.2f}/255 (true 5), "
          f"{time.time() - t0:.1f}s")
    assert abs(sigma - 1.6) / 1.6 < 0.20
    assert abs(noise - 5 / 255) / (5 / 255) < 0.30


def test_runner_schedule_keeps_the_discriminators_own_rate(tmp_path: Path) -> None:
    """The schedule scales each optimiser's own rate: PDM's discriminator stays at 4× the generator's after
    steps and after a resume (it was set to the generator's rate on every step)."""
    from sdtool.train.config import RunSettings, lr_at
    from sdtool.train.pdm_task import make_pdm_task
    from sdtool.train.runner import Runner

    def rates(runner: Runner) -> tuple[float, float]:
        opts = runner.task.optimizers()
        return opts["g"].param_groups[0]["lr"], opts["d"].param_groups[0]["lr"]

    s = RunSettings(out_dir=tmp_path / "run", iters=3, batch=2, patch=32, lr=1e-4, warmup=2, ckpt_every=2)
    def sampler(it):
        return torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    runner = Runner(make_pdm_task("tiny", torch.device("cpu"), s), sampler, s)
    runner.run()
    g, d = rates(runner)
    assert g == pytest.approx(lr_at(3, s)) and d == pytest.approx(4 * lr_at(3, s))
    longer = RunSettings(out_dir=tmp_path / "run", iters=5, batch=2, patch=32, lr=1e-4, warmup=2, ckpt_every=2)
    resumed = Runner(make_pdm_task("tiny", torch.device("cpu"), longer), sampler, longer)
    resumed.run(resume=True)
    g, d = rates(resumed)
    assert g == pytest.approx(lr_at(5, longer)) and d == pytest.approx(4 * lr_at(5, longer))


@pytest.mark.parametrize("config, fill, needle", [
    ({"k_layers": 64}, None, "k_layers is 64, the file holds 2"),
    ({"k_hidden": 4096}, None, "k_hidden is 4096, the file holds 32"),
    ({"n_hidden": 10**9}, None, "n_hidden must be an integer in 1..4096"),
    ({"kernel_size": 20}, None, "kernel_size must be odd"),
    (None, float("nan"), "holds NaN or infinite values"),
])
def test_bad_pdm_weights_are_refused_before_building(tmp_path: Path, monkeypatch, config, fill, needle) -> None:
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp_path / "pdm.safetensors"
    save_pdm(PDM(PDM_PRESETS["tiny"]), path)
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    if config:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    if fill is not None:
        tensors = {k: torch.full_like(v, fill) for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=meta)
    monkeypatch.setattr(PDM, "__init__", lambda *a, **k: pytest.fail("a PDM was built for weights that do not fit"))
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        load_pdm(path)
