"""Training: the loss goes down, kill + resume is exact, NaN batches are skipped, torchrun with 2 processes works."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdtool.train.launch import TrainOptions, train


def _make_folders(root: Path, n: int = 3, lr_size: int = 16) -> tuple[Path, Path]:
    import cv2

    rng = np.random.default_rng(0)
    lr_dir, hr_dir = root / "lr", root / "hr"
    lr_dir.mkdir(parents=True)
    hr_dir.mkdir(parents=True)
    yy, xx = np.mgrid[0:4 * lr_size, 0:4 * lr_size]
    for i in range(n):
        # smooth structured HR images and blurry, noisy LR images of other scenes
        hr = np.stack([np.sin(xx / (5 + i) + c) * np.cos(yy / (7 + c)) for c in range(3)], -1) * 100 + 128
        cv2.imwrite(str(hr_dir / f"s{i}.png"), hr.clip(0, 255).astype(np.uint8))
        lr = cv2.resize(hr, (lr_size, lr_size), interpolation=cv2.INTER_AREA) + rng.normal(0, 8, (lr_size, lr_size, 3))
        cv2.imwrite(str(lr_dir / f"s{i}.png"), lr.clip(0, 255).astype(np.uint8))
    return lr_dir, hr_dir


def _opts(tmp_path, lr_dir, hr_dir, **kw):
    base = dict(lr_dir=lr_dir, hr_dir=hr_dir, out_dir=tmp_path / "run", config="tiny", iters=6, batch=2, patch=32,
                lr=1e-3, device="cpu", ckpt_every=3, log_every=1, image_loss_start=3)
    base.update(kw)
    return TrainOptions.flat(**base)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_loss_goes_down(tmp_path):
    lr_dir, hr_dir = _make_folders(tmp_path)
    # 12 iterations: the mean NLL of the last 5 is ~1.15 below the first 5's (~1.4 after 20, 2.1 after 40), the
    # bound is 0.5. NLL every step here (the default is every 2nd, see test_train_speed): 12 NLL updates.
    train(_opts(tmp_path, lr_dir, hr_dir, iters=12, ckpt_every=12, image_loss_start=10_000, loss=("nll_every=1",)))
    recs = [r for r in _log(tmp_path / "run") if r["type"] == "train"]
    first = np.mean([r["nll_hr"] + r["nll_lr"] for r in recs[:5]])
    last = np.mean([r["nll_hr"] + r["nll_lr"] for r in recs[-5:]])
    assert last < first - 0.5, (first, last)
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_kill_and_resume_is_exact(tmp_path):
    lr_dir, hr_dir = _make_folders(tmp_path)
    # 4 iterations, a checkpoint at 2, killed at 3, image losses after iteration 2: as before (6, 3, 4, after 3),
    # the resumed part is where the image losses start.
    run = dict(iters=4, ckpt_every=2, image_loss_start=2)
    train(_opts(tmp_path, lr_dir, hr_dir, out_dir=tmp_path / "straight", **run))

    class Killed(Exception):
        pass

    def kill_at_3(rec):
        if rec.get("type") == "train" and rec["it"] == 3:
            raise Killed

    with pytest.raises(Killed):
        train(_opts(tmp_path, lr_dir, hr_dir, out_dir=tmp_path / "killed", **run), on_log=kill_at_3)
    state = torch.load(tmp_path / "killed" / "state.pt", weights_only=True)
    assert state["it"] == 2
    # without --resume the run folder is protected
    from sdtool.errors import UsageError

    with pytest.raises(UsageError, match="resume"):
        train(_opts(tmp_path, lr_dir, hr_dir, out_dir=tmp_path / "killed", **run))
    train(_opts(tmp_path, lr_dir, hr_dir, out_dir=tmp_path / "killed", resume=True, **run))
    a = _weights(tmp_path / "straight" / "model.safetensors")
    b = _weights(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    sb = torch.load(tmp_path / "killed" / "state.pt", weights_only=True)
    for name in sa["modules"]:
        assert all(torch.equal(sa["modules"][name][k], sb["modules"][name][k]) for k in sa["modules"][name])


def test_nan_batch_is_skipped(tmp_path):
    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow
    from sdtool.train.config import LossWeights, RunSettings
    from sdtool.train.runner import Runner
    from sdtool.train.sdflow_task import SDFlowTask

    torch.manual_seed(0)
    task = SDFlowTask(SDFlow(PRESETS["tiny"]), LossWeights(), lr=1e-3)

    def sampler(it):
        g = torch.Generator().manual_seed(it)
        lr, hr = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 32, 32, generator=g)
        if it == 2:
            lr[0, 0, 0, 0] = float("nan")
        return lr, hr

    snapshots = {}

    def on_log(rec):
        snapshots[rec["it"]] = {k: v.clone() for k, v in task.model.state_dict().items()}

    runner = Runner(task, sampler, RunSettings(out_dir=tmp_path / "nan", iters=3, ckpt_every=3, log_every=1),
                    on_log=on_log)
    result = runner.run()
    assert result.skipped == 1
    skips = [r for r in _log(tmp_path / "nan") if r["type"] == "skip"]
    assert len(skips) == 1 and skips[0]["it"] == 2 and "non-finite" in skips[0]["reason"]
    # the skipped step changed no weight; the others did
    s1, s2, s3 = snapshots[1], snapshots[2], snapshots[3]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert any(not torch.equal(s2[k], s3[k]) for k in s2)
    assert all(torch.isfinite(v.float()).all() for v in s3.values())


def test_torchrun_two_processes_gloo(tmp_path, monkeypatch):
    """torchrun starts two `python -m sdtool train` processes that train together over gloo. The launcher is
    torchrun's own entry point (`python -m torch.distributed.run`), run here in a thread: its process would only
    import torch once more (~4 CPU-s), and off the main thread it leaves this process's signal handlers alone."""
    import threading

    from torch.distributed.run import main as torchrun

    lr_dir, hr_dir = _make_folders(tmp_path)
    out = tmp_path / "ddp"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the launcher sets this one in its own environment for its workers: recorded here so it is undone after
    monkeypatch.setenv("TORCHELASTIC_SIGNALS_TO_HANDLE", "")
    args = ["--nproc-per-node", "2", "--master-port", "29533",
            "-m", "sdtool", "train", "--lr-dir", str(lr_dir), "--hr-dir", str(hr_dir), "--out", str(out),
            "--config", "tiny", "--iters", "3", "--batch", "1", "--patch", "32", "--device", "cpu", "--ckpt-every", "3"]
    failed: list[BaseException] = []

    def launch():
        try:
            torchrun(args)
        except BaseException as e:  # a failed worker: torchrun raises ChildFailedError naming it
            failed.append(e)

    launcher = threading.Thread(target=launch, name="torchrun")
    launcher.start()
    launcher.join(timeout=300)
    assert not launcher.is_alive() and not failed, failed
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "settings.json").read_text())["extra"]["world_size"] == 2


def test_cli_train_and_use_weights(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from sdtool import load_model
    from sdtool.cli import progress
    from sdtool.cli.app import app

    monkeypatch.setattr(progress, "MIN_GAP_S", 0.0)  # a line at every tenth however fast (stderr is no terminal)
    lr_dir, hr_dir = _make_folders(tmp_path)
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["train", "--lr-dir", str(lr_dir), "--hr-dir", str(hr_dir), "--out", str(out),
                                   "--config", "tiny", "--iters", "2", "--batch", "1", "--patch", "32",
                                   "--log-every", "1", "--device", "cpu", "--val-lr", str(lr_dir),
                                   "--val-hr", str(hr_dir)])
    assert res.exit_code == 0, res.output
    assert "validation: val_psnr_rgb=" in res.output
    assert "train: 2/2 it (100%)" in res.output and "ETA 0s, loss " in res.output  # plain progress lines
    m = load_model(out / "model.safetensors", device="cpu")
    assert m.upscale(torch.rand(1, 3, 8, 8), 0.8).shape == (1, 3, 32, 32)
    # The validated state is kept beside the run and equals the final weights (validation ran at the end).
    snap = load_model(out / "validated" / "it_000002.safetensors", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(snap.state_dict().values(), m.state_dict().values()))
    res = CliRunner().invoke(app, ["train", "--lr-dir", str(tmp_path / "nope"), "--hr-dir", str(hr_dir), "--out",
                                   str(out / "x")])
    assert res.exit_code == 2 and "nope: no such folder" in res.output


def test_loss_overrides_parse_and_refuse():
    from sdtool.errors import UsageError
    from sdtool.train.launch import parse_loss_overrides

    assert parse_loss_overrides(["cycle_l1=0.25", "ds-mode-l1=8"]) == {"cycle_l1": 0.25, "ds_mode_l1": 8.0}
    with pytest.raises(UsageError, match="image_loss_start"):
        parse_loss_overrides(["image-loss-start=5"])
    with pytest.raises(UsageError, match="nope=1"):
        parse_loss_overrides(["nope=1"])
    with pytest.raises(UsageError, match="not a number"):
        parse_loss_overrides(["cycle_l1=abc"])
    with pytest.raises(UsageError, match="NAME=VALUE"):
        parse_loss_overrides(["cycle_l1"])


def test_cycle_loss_trains_the_upscaling_path():
    """HR → own LR sample → extractor → SR: positive, reaches the extractor and the HF flow, never the
    degradation flow (its LR sample is detached); all-zero weights switch it off."""
    import dataclasses

    from sdtool.config import get_config
    from sdtool.model.sdflow import SDFlow
    from sdtool.train.config import LossWeights
    from sdtool.train.sdflow_task import SDFlowTask

    torch.manual_seed(0)
    model = SDFlow(get_config("tiny"))
    task = SDFlowTask(model, LossWeights(), perceptual=None)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.train()
        model.hr_log_prob(y), model.lr_log_prob(torch.rand(2, 3, 8, 8) * 2 - 1)  # ActNorm data init
    zc_hr, _, _ = model.hr_latents(y)
    ds = model.lr_from_content(zc_hr.detach())
    loss = task._cycle_loss(y, zc_hr, task._sr_samples(zc_hr, zc_hr, ds, g))
    assert loss.ndim == 0 and float(loss.detach()) > 0
    loss.backward()
    def grad(mod):
        return sum(float(p.grad.abs().sum()) for p in mod.parameters() if p.grad is not None)
    assert grad(model.extractor) > 0 and grad(model.hf_flow) > 0
    assert grad(model.deg_flow) == 0
    off = SDFlowTask(model, dataclasses.replace(LossWeights(), cycle_l1=0, cycle_perceptual=0, cycle_latent=0))
    assert float(off._cycle_loss(y, zc_hr, off._sr_samples(zc_hr, zc_hr, ds, g))) == 0.0


def test_freeze_keeps_parts_fixed_and_names_are_checked(tmp_path):
    """A downscaling-only phase: SR parts frozen, SR image terms off; only the LR side moves."""
    from sdtool.api import load_model
    from sdtool.errors import UsageError

    lr_dir, hr_dir = _make_folders(tmp_path)
    train(_opts(tmp_path, lr_dir, hr_dir, iters=3, ckpt_every=3, out_dir=tmp_path / "base"))
    init = tmp_path / "base" / "model.safetensors"
    frozen = ("hr_flow", "hf_flow", "extractor")
    train(_opts(tmp_path, lr_dir, hr_dir, iters=4, ckpt_every=4, out_dir=tmp_path / "ds", init=init,
                image_loss_start=1, freeze=frozen, loss=("image_sr=0",)))
    before, after = load_model(init, device="cpu"), load_model(tmp_path / "ds" / "model.safetensors", device="cpu")
    for name in frozen:
        for (k, a), b in zip(getattr(before, name).state_dict().items(), getattr(after, name).state_dict().values()):
            assert torch.equal(a, b), f"{name}.{k} changed"
    moved = [not torch.equal(a, b) for a, b in zip(before.lr_flow.state_dict().values(),
                                                   after.lr_flow.state_dict().values())]
    assert any(moved)
    with pytest.raises(UsageError, match="^freeze 'decoder'"):
        train(_opts(tmp_path, lr_dir, hr_dir, out_dir=tmp_path / "bad", init=init, freeze=("decoder",)))


def test_ds_target_blur_auto_is_estimated_and_stored(tmp_path):
    from safetensors import safe_open

    from sdtool.errors import UsageError

    lr_dir, hr_dir = _make_folders(tmp_path)
    train(_opts(tmp_path, lr_dir, hr_dir, iters=2, ckpt_every=2, ds_target_blur="auto"))
    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as f:
        weights = json.loads(f.metadata()["loss_weights"])
    assert 0.0 < weights["ds_target_blur"] <= 2.0  # the LR folder is area-downscaled and blurrier than bicubic
    with pytest.raises(UsageError, match="ds_target_blur 'soft'"):
        train(_opts(tmp_path, lr_dir, hr_dir, out_dir=tmp_path / "bad", ds_target_blur="soft"))


def test_chroma_blur_and_mode_l1_are_stored_and_act(tmp_path):
    from safetensors import safe_open

    from sdtool.errors import UsageError

    lr_dir, hr_dir = _make_folders(tmp_path)
    runs = {}
    for mode in (0.0, 5.0):
        out = tmp_path / f"run{mode}"
        train(_opts(tmp_path, lr_dir, hr_dir, out_dir=out, iters=1, ckpt_every=1, image_loss_start=0,
                    ds_target_blur="0.5", ds_chroma_blur="auto", loss=(f"ds_mode_l1={mode}",)))
        with safe_open(str(out / "model.safetensors"), "pt") as f:
            weights = json.loads(f.metadata()["loss_weights"])
        assert weights["ds_target_blur"] == 0.5 and 0.0 <= weights["ds_target_chroma_blur"] <= 3.0
        assert weights["ds_mode_l1"] == mode
        runs[mode] = [r for r in _log(out) if r.get("type") == "train"][0]["image"]
    # Same weights and draws at iteration 1: the difference is 5 × the mode's L1 distance, > 0.
    assert runs[5.0] > runs[0.0] + 1e-4
    with pytest.raises(UsageError, match="ds_chroma_blur 'soft'"):
        train(_opts(tmp_path, lr_dir, hr_dir, out_dir=tmp_path / "bad", ds_chroma_blur="soft"))


def test_image_loss_start_is_set_one_way_and_options_split_once(tmp_path):
    """image_loss_start has its own option (refused inside `loss`); schedule fields live in RunSettings only."""
    import dataclasses

    from sdtool.errors import OptionError
    from sdtool.train.launch import loss_weights

    o = TrainOptions.flat(lr_dir=tmp_path, hr_dir=tmp_path, out_dir=tmp_path / "r", iters=7, lr=2e-4,
                          image_loss_start=5, loss=("cycle_l1=0.25",))
    assert o.run.iters == 7 and o.run.lr == 2e-4 and not hasattr(o, "iters")
    w = dataclasses.replace(loss_weights(o), ds_target_blur=0.5)  # as train applies what it measured
    assert (w.image_loss_start, w.cycle_l1, w.ds_target_blur) == (5, 0.25, 0.5)
    bad = TrainOptions.flat(lr_dir=tmp_path, hr_dir=tmp_path, out_dir=tmp_path / "r", loss=("image_loss_start=3",))
    with pytest.raises(OptionError) as exc:
        loss_weights(bad)
    rendered = exc.value.render(lambda n: "--" + n.replace("_", "-"))
    assert rendered == "--loss 'image_loss_start=3': set it with --image-loss-start"


def test_lattice_term_reaches_the_hf_and_hr_flows_and_temperatures_span_the_range():
    """The lattice term trains the decoding path (HF and HR flows) and is logged; sr_temperature_min draws
    per-sample temperatures in [min, sample_temperature], and < 0 keeps them all at sample_temperature."""
    import dataclasses

    from sdtool.config import get_config
    from sdtool.model.sdflow import SDFlow
    from sdtool.train.config import LossWeights
    from sdtool.train.sdflow_task import SDFlowTask

    torch.manual_seed(0)
    model = SDFlow(get_config("tiny"))
    w = dataclasses.replace(LossWeights(), lattice=10.0, sr_temperature_min=0.0, sample_temperature=0.8)
    task = SDFlowTask(model, w, perceptual=None)
    g = torch.Generator().manual_seed(0)
    taus = task._temperatures(400, g).flatten()
    assert 0 <= float(taus.min()) < 0.05 and 0.75 < float(taus.max()) <= 0.8
    off = SDFlowTask(model, LossWeights(), perceptual=None)
    assert torch.equal(off._temperatures(3, g).flatten(), torch.full((3,), 0.8))
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        model.train()
        model.hr_log_prob(y), model.lr_log_prob(torch.rand(2, 3, 8, 8) * 2 - 1)  # ActNorm data init
    zc_hr, _, _ = model.hr_latents(y)
    sr = task._sr_samples(zc_hr, zc_hr, model.lr_from_content(zc_hr.detach()), g)
    loss = task._lattice_loss(y, sr)
    assert float(loss.detach()) > 0 and task.last_lattice == pytest.approx(float(loss.detach()) / 10)
    loss.backward()
    def grad(mod):
        return sum(float(p.grad.abs().sum()) for p in mod.parameters() if p.grad is not None)
    assert grad(model.hf_flow) > 0 and grad(model.hr_flow) > 0
    assert float(off._lattice_loss(y, sr)) == 0.0  # weight 0 by default: off
