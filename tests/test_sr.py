"""Feed-forward SR networks: checkpoints spandrel reads, deterministic upscaling through the inference core,
pairs from any degrader, mixes, and `train --model sr` through the runner (resume, NaN guard, validation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sdtool.api import upscale
from sdtool.cli.app import app
from sdtool.model.sr import SR_PRESETS, build_sr, export_state_dict, load_sr, save_sr
from tests.helpers import perturb, write_image_file

runner = CliRunner()


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    chans = [127 + 90 * np.sin(xx / (3 + k) + seed) * np.cos(yy / 4 - k) for k in range(3)]
    return np.clip(np.stack(chans, 2) + rng.normal(0, 5, (h, w, 3)), 0, 255).round().astype(np.uint8)


def _net(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return perturb(build_sr(SR_PRESETS[f"{arch}-tiny"]), 0.05, seed).eval()


@pytest.fixture(scope="module")
def sr_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sr") / "sr-tiny.safetensors"
    save_sr(_net("compact"), path, {"test": True})
    return path


# ------------------------------------------------------------------ checkpoints other tools read
@pytest.mark.parametrize("arch,name", [("compact", "RealESRGAN Compact"), ("rrdb", "ESRGAN")])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_spandrel_loads_the_export_and_its_output_equals_ours(tmp_path, arch, name, suffix):
    spandrel = pytest.importorskip("spandrel")
    net = _net(arch)
    save_sr(net, tmp_path / "ours.safetensors")
    out = export_state_dict(load_sr(tmp_path / "ours.safetensors"), tmp_path / f"export{suffix}")
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    ours = net.upscale(x)
    for path in (out, tmp_path / "ours.safetensors"):  # our own checkpoint is a state dict spandrel reads too
        desc = spandrel.ModelLoader("cpu").load_from_file(path).eval()
        assert desc.architecture.name == name and desc.scale == 4
        with torch.no_grad():
            theirs = desc(x).clamp(0, 1)
        assert torch.equal(theirs, ours)


def test_checkpoint_rebuilds_the_model_and_names_a_wrong_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    from sdtool.errors import CheckpointError

    net = _net("compact")
    save_sr(net, tmp_path / "a.safetensors", {"iterations": 3})
    again = load_sr(tmp_path / "a.safetensors")
    assert again.config == net.config and again.provenance == {"iterations": 3}
    x = torch.rand(2, 3, 5, 7)
    assert torch.equal(again.upscale(x), net.upscale(x))
    tensors = load_file(tmp_path / "a.safetensors")
    tensors["body.0.weight"] = tensors["body.0.weight"][:, :, :1].contiguous()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        meta = f.metadata()
    save_file(tensors, tmp_path / "b.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="body.0.weight"):
        load_sr(tmp_path / "b.safetensors")


def test_export_sr_command(tmp_path, sr_weights):
    res = runner.invoke(app, ["export-sr", str(sr_weights), str(tmp_path / "x.pth")])
    assert res.exit_code == 0, res.output
    assert "RealESRGAN Compact" in res.output
    res = runner.invoke(app, ["export-sr", str(sr_weights), str(tmp_path / "x.pth")])
    assert res.exit_code == 2 and "--overwrite" in res.output


# ------------------------------------------------------------------ upscale: deterministic models
def test_upscale_refuses_samples_and_temperature_for_a_deterministic_model(tmp_path, sr_weights):
    src = write_image_file(tmp_path / "a.png", _img(8, 8))
    for extra, flag in ((["--samples", "2"], "--samples 2: this model is deterministic"),
                        (["--temperature", "0.5"], "--temperature does not apply: this model is deterministic")):
        res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "-w", str(sr_weights), *extra])
        assert res.exit_code == 2 and flag in res.output, res.output
    assert not (tmp_path / "o.png").exists()
    res = runner.invoke(app, ["upscale", str(src), "-w", str(sr_weights)])  # beside the input, no temperature tag
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a_x4.png").is_file()


def test_upscale_with_sr_weights_equals_the_network_tiled_or_not(tmp_path, sr_weights):
    import imageio.v3 as iio

    img = _img(40, 36)
    src = write_image_file(tmp_path / "in" / "a.png", img)
    for tile in ("0", "16"):
        res = runner.invoke(app, ["upscale", str(src.parent), str(tmp_path / f"t{tile}"), "-w", str(sr_weights),
                                  "--tile", tile, "--tile-overlap", "12"])
        assert res.exit_code == 0, res.output
    with torch.no_grad():  # an SR network's default colour guard: wavelet at detail 1
        x = torch.from_numpy(img[..., ::-1] / 255.0).permute(2, 0, 1)[None].float()
        direct = upscale(x, model=load_sr(sr_weights))
    direct = (direct[0].permute(1, 2, 0).numpy() * 255).round()
    whole = iio.imread(tmp_path / "t0" / "a.png").astype(float)
    assert np.abs(whole - direct).max() <= 1  # write_image_file stores BGR with OpenCV: img[..., ::-1] is RGB
    # tiles are blended where they overlap: close to the whole image
    diff = np.abs(iio.imread(tmp_path / "t16" / "a.png").astype(float) - whole)
    assert diff.mean() < 0.5


def test_upscale_runs_any_spandrel_model_like_our_checkpoint(tmp_path, sr_weights):
    pytest.importorskip("spandrel")
    src = write_image_file(tmp_path / "a.png", _img(10, 12))
    pth = export_state_dict(load_sr(sr_weights), tmp_path / "other.pth")
    runs = {"ours": (sr_weights, "--color-fix", "none"), "spandrel": (pth,),  # spandrel models: no guard by default
            "ours-default": (sr_weights,), "ours-guard": (sr_weights, "--color-fix", "wavelet", "--detail", "1")}
    for out, (w, *extra) in runs.items():
        res = runner.invoke(app, ["upscale", str(src), str(tmp_path / f"{out}.png"), "-w", str(w), *extra])
        assert res.exit_code == 0, res.output
    assert (tmp_path / "ours.png").read_bytes() == (tmp_path / "spandrel.png").read_bytes()
    assert (tmp_path / "ours-default.png").read_bytes() == (tmp_path / "ours-guard.png").read_bytes()
    assert (tmp_path / "ours-default.png").read_bytes() != (tmp_path / "ours.png").read_bytes()


def test_upscale_model_name_and_weights_conflict(tmp_path, sr_weights):
    src = write_image_file(tmp_path / "a.png", _img(8, 8))
    res = runner.invoke(app, ["upscale", str(src), "-m", "sr-compact", "-w", str(sr_weights)])
    assert res.exit_code == 2 and "--model and --weights" in res.output
    res = runner.invoke(app, ["upscale", str(src), "-m", "nope"])
    assert res.exit_code == 2 and "sdflow, sr-compact" in res.output


# ------------------------------------------------------------------ mixes and pairs
def test_mix_parsing_and_draws():
    from sdtool.degrade.mix import parse_mix
    from sdtool.errors import OptionError

    mix = parse_mix("sdflow=3, sdflow+jpeg=1")
    assert mix.kinds == ("sdflow",) and [p.label for p in mix.parts] == ["sdflow", "sdflow+jpeg"]
    assert [p.weight for p in mix.parts] == [0.75, 0.25]
    draws = mix.choose(4000, torch.Generator().manual_seed(0))
    assert abs(np.mean(draws) - 0.25) < 0.03
    for bad, why in (("sdflow=x", "not a number"), ("foo=1", "not one of"), ("pdm+blur=1", "jpeg, noise"),
                     ("bicubic=0", "positive sum")):
        with pytest.raises(OptionError, match=why):
            parse_mix(bad)


def test_pairs_match_by_name_and_lr_is_a_quarter(tmp_path):
    from sdtool.resize import imresize_np

    write_image_file(tmp_path / "hr" / "a.png", _img(70, 66))
    write_image_file(tmp_path / "hr" / "sub" / "b.jpg", _img(40, 48, 1))
    write_image_file(tmp_path / "hr" / "tiny.png", _img(12, 12))
    out = tmp_path / "pairs"
    args = ["sample-degradation", str(tmp_path / "hr"), str(out), "--pairs", "-m", "bicubic", "--sub-image", "32",
            "--sub-step", "24", "--seed", "3"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    lr_names = sorted(p.relative_to(out / "LR").as_posix() for p in (out / "LR").rglob("*.png"))
    hr_names = sorted(p.relative_to(out / "HR").as_posix() for p in (out / "HR").rglob("*.png"))
    assert lr_names == hr_names
    # a: 70×66 in 32² pieces every 24 px, the last flush: rows 0, 24, 38 × cols 0, 24, 34; b: 40×48 → 2 × 2
    assert len([n for n in lr_names if n.startswith("a_p")]) == 9
    assert len([n for n in lr_names if n.startswith("sub/b_p")]) == 4
    assert not any("tiny" in n for n in lr_names)
    import imageio.v3 as iio

    hr = iio.imread(out / "HR" / "a_p008.png").astype(float)
    assert np.array_equal(hr, _img(70, 66)[38:70, 34:66, ::-1])
    lr = iio.imread(out / "LR" / "a_p008.png").astype(float)
    assert lr.shape == (8, 8, 3)
    assert np.abs(lr - np.clip(imresize_np(hr, 0.25), 0, 255)).max() <= 1
    res = runner.invoke(app, args)  # a rerun skips finished pairs
    assert res.exit_code == 0 and "0 done, 2 skipped" in res.output


def test_pairs_of_a_mix_with_jpeg_are_seeded(tmp_path):
    write_image_file(tmp_path / "hr" / "a.png", _img(32, 32))
    for run in ("one", "two"):
        res = runner.invoke(app, ["sample-degradation", str(tmp_path / "hr"), str(tmp_path / run), "--pairs", "-n", "3",
                                  "-m", "mix", "--mix", "classic=1,bicubic+jpeg=1", "--seed", "5"])
        assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / "one" / "LR").iterdir())
    assert names == ["a_s00.png", "a_s01.png", "a_s02.png"]
    for n in names:
        assert (tmp_path / "one" / "LR" / n).read_bytes() == (tmp_path / "two" / "LR" / n).read_bytes()
    res = runner.invoke(app, ["sample-degradation", str(tmp_path / "hr"), str(tmp_path / "x"), "--pairs", "-m",
                              "classic",
                              "--mix", "classic=1"])
    assert res.exit_code == 2 and "--mix applies to --model mix" in res.output


def test_batch_degrader_mixes_parts_per_image():
    from sdtool.degrade.mix import parse_mix
    from sdtool.resize import imresize
    from sdtool.train.sr_data import BatchDegrader

    hr = torch.from_numpy(np.stack([_img(32, 32, s) for s in range(6)])).permute(0, 3, 1, 2).float() / 255
    deg = BatchDegrader(parse_mix("bicubic=1,classic+noise+jpeg=1"), {}, 0.8)
    lr = deg(hr, torch.Generator().manual_seed(0))
    assert lr.shape == (6, 3, 8, 8) and 0 <= float(lr.min()) and float(lr.max()) <= 1
    choice = parse_mix("bicubic=1,classic+noise+jpeg=1").choose(6, torch.Generator().manual_seed(0))
    bic = imresize(hr, 0.25).clamp(0, 1)
    for i, c in enumerate(choice):
        assert torch.allclose(lr[i], bic[i], atol=1e-6) == (c == 0)


# ------------------------------------------------------------------ training
def _hr_folder(root: Path) -> Path:
    for i in range(3):
        write_image_file(root / "hr" / f"s{i}.png", _img(48, 48, i))
    return root / "hr"


def _sr_opts(tmp_path: Path, **kw):
    from sdtool.train.launch import TrainOptions

    base = dict(lr_dir=None, hr_dir=_hr_folder(tmp_path), out_dir=tmp_path / "run", model="sr", config="tiny",
                degradation="mix", mix="bicubic=1,classic+jpeg=1", iters=6, batch=2, patch=32, lr=1e-3,
                device="cpu", ckpt_every=3, log_every=1, image_loss_start=3)
    base.update(kw)
    return TrainOptions.flat(**base)


def test_train_sr_resume_is_exact_and_exports_an_sr_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from sdtool.train.launch import train

    class Killed(Exception):
        pass

    def kill_at_4(rec: dict) -> None:
        if rec.get("type") == "train" and rec["it"] == 4:
            raise Killed

    train(_sr_opts(tmp_path / "a"))
    with pytest.raises(Killed):
        train(_sr_opts(tmp_path / "b"), on_log=kill_at_4)
    train(_sr_opts(tmp_path / "b", resume=True))
    a = load_file(tmp_path / "a" / "run" / "model.safetensors")
    b = load_file(tmp_path / "b" / "run" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(x) for x in (tmp_path / "a" / "run" / "log.jsonl").read_text().splitlines()]
    assert "gan" not in log[2] and {"l1", "perceptual", "gan", "d"} <= set(log[3])  # L1 phase, then the GAN phase
    model = load_sr(tmp_path / "a" / "run" / "model.safetensors")
    assert model.config.name == "compact-tiny" and model.provenance["iterations"] == 6


def test_train_sr_on_made_pairs_with_validation(tmp_path):
    from sdtool.train.launch import train

    hr = _hr_folder(tmp_path)
    assert runner.invoke(app, ["sample-degradation", str(hr), str(tmp_path / "pairs"), "--pairs", "-m", "classic",
                               "-n", "2", "--seed", "0"]).exit_code == 0
    opts = _sr_opts(tmp_path, hr_dir=None, pairs=tmp_path / "pairs", degradation="sdflow", mix=None,
                    val_lr=tmp_path / "pairs" / "LR", val_hr=tmp_path / "pairs" / "HR", iters=2, image_loss_start=2)
    result = train(opts)
    assert set(result.validation) == {"val_psnr_rgb", "val_lpips", "val_color_err"}
    assert (tmp_path / "run" / "validated" / "it_000002.safetensors").is_file()


def test_sr_step_with_a_nan_batch_is_skipped_unchanged():
    from sdtool.train.sr_task import SRLossWeights, SRTask
    from sdtool.train.task import NonFiniteLoss

    net = _net("compact")
    task = SRTask(net, SRLossWeights(gan_start=0))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lr = torch.rand(2, 3, 8, 8)
    lr[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLoss, match="l1"):
        task.train_step(lr, torch.rand(2, 3, 32, 32), 1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_train_sr_option_errors(tmp_path):
    base = ["train", "--model", "sr", "--out", str(tmp_path / "r"), "--config", "tiny"]
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "--hr-dir or --pairs" in res.output
    hr = _hr_folder(tmp_path)
    res = runner.invoke(app, [*base, "--hr-dir", str(hr), "--lr-dir", str(hr)])
    assert res.exit_code == 2 and "--lr-dir: not used by --model sr" in res.output
    res = runner.invoke(app, [*base, "--hr-dir", str(hr), "--degradation", "mix"])
    assert res.exit_code == 2 and "--mix is needed" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--hr-dir", str(hr), "--degradation", "pdm"])
    assert res.exit_code == 2 and "--degradation: not used by --model sdflow" in res.output


def test_benchmark_scores_an_sr_checkpoint_once_without_downscaling(tmp_path, sr_weights):
    import imageio.v3 as iio

    from sdtool.resize import imresize_np

    for n in ("a.png", "b.png"):
        hr = _img(32, 32, len(n))
        for sub, img in (("test_HR", hr), ("test_LR", np.clip(imresize_np(hr.astype(float), 0.25), 0, 255).round())):
            (tmp_path / "d" / sub).mkdir(parents=True, exist_ok=True)
            iio.imwrite(tmp_path / "d" / sub / n, img.astype(np.uint8))
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "d"), "-w", str(sr_weights), "-n", "2", "-t", "0.3",
                              "-t", "0.6", "-o", str(tmp_path / "r.json"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r.json").read_text())
    s = rep["summary"]["sr-tiny"]
    assert list(rep["summary"]) == ["sr-tiny"] and "down_lpips_real" not in s and "diversity" not in s
