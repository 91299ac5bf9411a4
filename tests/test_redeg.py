"""ReDeg (ReDegNet-style degradation model): shapes, seeds, checkpoints, the classic degrader's fixed
parameters, the contrastive loss, disentanglement after a short training, `train --model redeg` with resume,
and `sample-degradation --model redeg` with --like, --like-dir and --save-latent."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sdtool.cli.app import app
from sdtool.degrade.classic import ClassicConfig, ClassicDegradation
from sdtool.degrade.ops import blur_downsample, gaussian_kernel
from sdtool.errors import CheckpointError
from sdtool.model.redeg import REDEG_PRESETS, ReDeg, ReDegDegrader, load_redeg, save_redeg
from sdtool.train.redeg_task import classic_batch, omega_distances, stratified_params, supcon_loss
from tests.helpers import perturb, write_image_file
from tests.test_pdm import synth_hr

runner = CliRunner()


def _tiny(seed: int = 0, pool: int = 0) -> ReDeg:
    torch.manual_seed(seed)
    m = perturb(ReDeg(REDEG_PRESETS["tiny"]), 0.05, seed).eval()
    if pool:
        m.remember(torch.nn.functional.normalize(torch.randn(pool, m.config.omega_dim), dim=1))
    return m


def test_render_shapes_seeds_and_degrader() -> None:
    m = _tiny(pool=3)
    y = torch.rand(2, 3, 37, 50)
    a = m.degrade(y, generator=torch.Generator().manual_seed(1))
    b = m.degrade(y, generator=torch.Generator().manual_seed(1))
    c = m.degrade(y, generator=torch.Generator().manual_seed(2))
    assert a.lr.shape == (2, 3, 10, 13) and a.latent.shape == (2, 16)
    assert float(a.lr.min()) >= 0 and float(a.lr.max()) <= 1
    assert torch.equal(a.lr, b.lr) and not torch.equal(a.lr, c.lr)
    assert torch.allclose(a.latent.norm(dim=1), torch.ones(2))  # Ω drawn from the pool of unit vectors
    assert ReDegDegrader(m)(torch.rand(3, 3, 64, 64), torch.Generator().manual_seed(0)).shape == (3, 3, 16, 16)
    with pytest.raises(Exception, match="empty degradation pool"):
        _tiny().degrade(y)


def test_checkpoint_roundtrip_and_errors(tmp_path: Path) -> None:
    from sdtool.checkpoint import save_model as save_pdm
    from sdtool.model.pdm import PDM, PDM_PRESETS

    m = _tiny(pool=5)
    path = tmp_path / "r.safetensors"
    save_redeg(m, path, {"note": "test"})
    m2 = load_redeg(path)
    assert m2.config == m.config and torch.equal(m2.pool_omegas(), m.pool_omegas())
    y, om = torch.rand(1, 3, 32, 32), m.pool_omegas()[:1]
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(m.render(y, om, generator=g()), m2.render(y, om, generator=g()))
    save_pdm(PDM(PDM_PRESETS["tiny"]), tmp_path / "pdm.safetensors")
    with pytest.raises(CheckpointError, match="expected a ReDeg checkpoint"):
        load_redeg(tmp_path / "pdm.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        load_redeg(tmp_path / "cut.safetensors")


def test_classic_apply_puts_one_degradation_on_two_contents() -> None:
    clean = ClassicDegradation(ClassicConfig(noise=(0.0, 0.0), poisson_prob=0.0, jpeg_prob=0.0))
    g = torch.Generator().manual_seed(0)
    p = clean.sample_params(1, g)[0]
    y = torch.rand(2, 3, 48, 48, generator=g)
    lr = clean.apply(y, [p, p], g)
    k = gaussian_kernel(21, p["sigma_x"], p["sigma_y"], p["theta"])[0]
    assert torch.allclose(lr, blur_downsample(y, k).clamp(0, 1), atol=1e-6)
    full = ClassicDegradation()
    params = stratified_params(full, 4, g)
    lo, hi = full.config.sigma
    strata = sorted(int((q["sigma_x"] - lo) / (hi - lo) * 4) for q in params)
    assert strata == [0, 1, 2, 3]  # one blur width per quarter of the range
    hr, x, labels = classic_batch(full, y, 2, 4, g)
    assert hr.shape == (8, 3, 48, 48) and x.shape == (8, 3, 12, 12) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_supcon_loss_values() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    same = torch.nn.functional.normalize(torch.ones(4, 3), dim=1)
    assert math.isclose(float(supcon_loss(same, labels, 0.1)), math.log(3), rel_tol=1e-5)
    clusters = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, 1.0, 0]])
    assert float(supcon_loss(clusters, labels, 0.1)) < 1e-3


def test_disentanglement_after_contrastive_training() -> None:
    """Ω of two contents under one classic degradation end up much closer than Ω of one content under two
    degradations after 100 contrastive steps of a tiny DegNet on synthetic images; untrained, they are not."""
    torch.manual_seed(0)
    model = ReDeg(REDEG_PRESETS["tiny"])
    g = torch.Generator().manual_seed(0)
    train_hr, test_hr = synth_hr(8, 64, g), synth_hr(3, 64, g)
    contents = list(test_hr[:, None])
    same0, diff0 = omega_distances(model, contents, crop=64)
    assert same0 > 0.65 * diff0  # the check can fail: an untrained DegNet's Ω follows the content too
    classic, opt = ClassicDegradation(), torch.optim.Adam(model.deg.parameters(), lr=3e-3)
    for _ in range(100):
        y, x, labels = classic_batch(classic, train_hr[torch.randperm(8, generator=g)[:2]], 2, 4, g)
        loss = supcon_loss(model.omega(x, y), labels, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    same, diff = omega_distances(model, contents, crop=64)
    assert same < 0.65 * diff, (same, diff)


def test_task_step_fills_the_pool() -> None:
    from sdtool.train.redeg_task import ReDegTask

    task = ReDegTask(REDEG_PRESETS["tiny"])
    assert task.kind == "redeg" and set(task.modules()) == {"redeg", "disc"} and set(task.optimizers()) == {"g", "d"}
    before = task.model.syn.to_rgb.weight.detach().clone()
    stats = task.train_step(torch.rand(2, 3, 32, 32), torch.rand(2, 6, 128, 128), 1)
    assert set(stats) >= {"l1", "lpips", "gram", "gan", "contrast", "classic_recon", "loss_d"}
    assert all(math.isfinite(v) for v in stats.values())
    assert not torch.equal(before, task.model.syn.to_rgb.weight)
    assert task.model.pool_omegas().shape == (2, 16)
    assert json.loads(task.export_metadata()["config"])["name"] == "tiny"


def _pairs(root: Path, names: list[str], size: int = 160) -> tuple[Path, Path]:
    """HR size² and LR (size/4)² PNGs: the LR is a blurred, noisy box downscale of the HR."""
    gen = torch.Generator().manual_seed(1)
    hr = synth_hr(len(names), size, gen)
    lr = ClassicDegradation().sample(hr, gen).lr
    for name, h, x in zip(names, hr, lr):
        for folder, img in (("hr", h), ("lr", x)):
            arr = (img.permute(1, 2, 0).numpy()[..., ::-1] * 255 + 0.5).astype(np.uint8)
            write_image_file(root / folder / name, arr)
    return root / "lr", root / "hr"


def test_train_cli_validates_and_resumes(tmp_path: Path) -> None:
    lr_dir, hr_dir = _pairs(tmp_path, ["a.png", "b.png"])
    out = tmp_path / "run"
    base = ["train", "--model", "redeg", "--config", "tiny", "--lr-dir", str(lr_dir), "--hr-dir", str(hr_dir),
            "--out", str(out), "--batch", "2", "--patch", "128", "--ckpt-every", "1", "--device", "cpu"]
    res = runner.invoke(app, [*base, "--iters", "2", "--val-lr", str(lr_dir), "--val-hr", str(hr_dir)])
    assert res.exit_code == 0, res.output
    assert "val_lpips_own=" in res.output and "val_omega_same_deg=" in res.output
    assert (out / "validated" / "it_000002.safetensors").is_file()
    res = runner.invoke(app, [*base, "--iters", "3", "--resume"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["it"] == 3
    assert load_redeg(out / "model.safetensors").pool_omegas().shape[0] == 6
    for bad in (["--disjoint"], ["--loss", "bogus=1"], ["--patch", "96"]):
        res = runner.invoke(app, [*base, "--iters", "1", "--out", str(tmp_path / "x"), *bad])
        assert res.exit_code == 2 and "Traceback" not in res.output, (bad, res.output)
    res = runner.invoke(app, ["train", "--lr-dir", str(lr_dir), "--hr-dir", str(hr_dir), "--out", str(tmp_path / "y"),
                              "--pseudo-hr-dir", str(hr_dir)])
    assert res.exit_code == 2 and "pseudo-hr-dir" in res.output


@pytest.fixture()
def redeg_files(tmp_path: Path) -> dict[str, Path]:
    weights = tmp_path / "redeg.safetensors"
    save_redeg(_tiny(pool=4), weights)
    gen = torch.Generator().manual_seed(2)
    for i, img in enumerate(synth_hr(3, 64, gen)):
        arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        write_image_file(tmp_path / "hr" / f"h{i}.png", arr)
    for i, img in enumerate(synth_hr(2, 40, gen)):
        arr = (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        write_image_file(tmp_path / "real" / f"r{i}.png", arr)
    return {"w": weights, "hr": tmp_path / "hr", "real": tmp_path / "real", "tmp": tmp_path}


def test_sample_degradation_like_like_dir_and_latent(redeg_files: dict[str, Path], monkeypatch, tiny_weights) -> None:
    from sdtool.degrade.transfer import redeg_omega
    from sdtool.imageio import read_image

    f, w = redeg_files, str(redeg_files["w"])
    out = f["tmp"] / "plain"
    res = runner.invoke(app, ["sample-degradation", str(f["hr"]), str(out), "-m", "redeg", "-w", w, "--seed", "1",
                              "--save-latent"])
    assert res.exit_code == 0, res.output
    assert read_image(out / "h0.png").rgb.shape == (16, 16, 3) and np.load(out / "h0_latent.npy").shape == (16,)
    like = f["real"] / "r0.png"
    out = f["tmp"] / "like"
    res = runner.invoke(app, ["sample-degradation", str(f["hr"]), str(out), "-m", "redeg", "-w", w, "--like", str(like),
                              "--pseudo-hr", "bicubic", "--save-kernels"])
    assert res.exit_code == 0, res.output
    real = torch.from_numpy(read_image(like).rgb).permute(2, 0, 1)[None]
    expected = redeg_omega(load_redeg(f["w"]), real)[0].numpy()
    assert np.allclose(np.load(out / "h1_latent.npy"), expected, atol=1e-6)
    out = f["tmp"] / "pool"
    res = runner.invoke(app, ["sample-degradation", str(f["hr"]), str(out), "-m", "redeg", "-w", w, "--like-dir",
                              str(f["real"]), "-n", "4", "--pseudo-hr", "bicubic", "--save-latent", "--seed", "5"])
    assert res.exit_code == 0, res.output
    latents = {tuple(np.load(p).round(5)) for p in out.glob("*_latent.npy")}
    sources = {json.loads(p.read_text())["params"]["omega_from"] for p in out.glob("*.json")}
    assert sources == {"r0.png", "r1.png"} and len(latents) == 2  # 12 samples, each Ω one of the pool's two
    monkeypatch.setenv("SDTOOL_WEIGHTS", str(tiny_weights))  # the pseudo-HR from an SDFlow (here the tiny one)
    res = runner.invoke(app, ["sample-degradation", str(f["hr"] / "h0.png"), str(f["tmp"] / "sr.png"), "-m", "redeg",
                              "-w", w, "--like", str(like)])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("args", [
    ["-m", "pdm", "--like-dir", "REAL"], ["-m", "redeg", "--like-dir", "REAL", "--like", "REAL/r0.png"],
    ["-m", "classic", "--save-latent"], ["-m", "redeg", "--pseudo-hr", "esrgan", "--like", "REAL/r0.png"],
])
def test_sample_degradation_refusals(redeg_files: dict[str, Path], args: list[str]) -> None:
    args = [a.replace("REAL", str(redeg_files["real"])) for a in args]
    res = runner.invoke(app, ["sample-degradation", str(redeg_files["hr"]), str(redeg_files["tmp"] / "o"), *args])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output


def test_shipped_weights_are_disentangled() -> None:
    """The shipped model loads from its file alone, has a pool, and its Ω of synthetic contents follows the
    classic degradation more than the content."""
    from sdtool.resources import REDEG_WEIGHTS, weights_path

    model = load_redeg(weights_path(REDEG_WEIGHTS))
    assert model.config.name == "default" and model.pool_omegas().shape == (256, 64)
    same, diff = omega_distances(model, list(synth_hr(3, 128, torch.Generator().manual_seed(0))[:, None]))
    assert same < 0.5 * diff, (same, diff)
