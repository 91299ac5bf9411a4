"""`sdtool benchmark` command line: options, files, table, exit codes."""

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from typer.testing import CliRunner

from sdtool.cli.app import app
from sdtool.resize import imresize_np, quantize

runner = CliRunner()


def _dataset(root: Path, names: list[str], side: int = 64) -> None:
    rng = np.random.default_rng(0)
    for n in names:
        yy, xx = np.mgrid[0:side, 0:side] / side
        wave = (80 * np.sin(9 * xx + rng.uniform(0, 3)) * np.cos(7 * yy))[..., None]
        hr = np.clip(128 + wave + rng.normal(0, 4, (side, side, 3)), 0, 255).round()
        lr = quantize(imresize_np(hr, 0.25))
        for sub, img in (("test_HR", hr), ("test_LR", lr)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            iio.imwrite(root / sub / n, img.astype(np.uint8))


def test_bicubic_only_writes_json_csv_and_table(tmp_path):
    _dataset(tmp_path / "realsr", ["Canon_041_LR4.png", "Canon_012_LR4.png", "Nikon_050_LR4.png"])
    hr_only = tmp_path / "realsr" / "test_HR" / "Canon_045_LR4.png"  # an HR image without its LR
    hr_only.write_bytes((tmp_path / "realsr" / "test_HR" / "Canon_041_LR4.png").read_bytes())
    out = tmp_path / "rep" / "report.json"
    res = runner.invoke(app, ["benchmark", "--dataset", "realsr", "--data-root", str(tmp_path), "--split", "val",
                              "--method", "bicubic", "--no-model", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert list(rep["summary"]) == ["bicubic"]
    assert set(rep["summary"]["bicubic"]) >= {"psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "lpips", "niqe", "lr_psnr"}
    assert [r["image"] for r in rep["per_image"]["bicubic"]] == ["Canon_041_LR4", "Nikon_050_LR4"]
    # The LR is the exact bicubic /4 of the HR: the downscaling PSNR is infinite (JSON null).
    assert rep["summary"]["bicubic"]["down_psnr_real"] is None
    assert rep["settings"]["dataset"] == "realsr" and rep["settings"]["pairs"] == 2
    assert (tmp_path / "rep" / "report.csv").read_text().count("\n") == 1 + 3
    assert "bicubic" in res.output and "PSNR-Y" in res.output and "report.json" in res.output
    assert f"notice: {hr_only}: no LR image with a matching name; left out" in res.output


def test_default_model_beside_bicubic(tmp_path, monkeypatch, tiny_model):
    from sdtool.checkpoint import save_model

    save_model(tiny_model, tmp_path / "mini.safetensors")
    monkeypatch.setenv("SDTOOL_WEIGHTS", str(tmp_path / "mini.safetensors"))
    _dataset(tmp_path / "pairs", ["a.png"])
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["benchmark", "-d", "pairs", "-m", "bicubic", "--device", "cpu", "-t", "0.3",
                              "--no-downscale", "--seed", "1"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "benchmark-pairs.json").read_text())
    assert list(rep["summary"]) == ["bicubic", "mini"]
    assert rep["methods"]["mini"]["temperature"] == 0.3 and rep["settings"]["seed"] == 1
    assert "down_psnr_real" not in rep["summary"]["mini"]
    assert (tmp_path / "benchmark-pairs.csv").exists()


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["--dataset", "drealsr", "--method", "bicubic", "--no-model"], 1, "Put the DRealSR"),
        (["--dataset", "PAIRS", "--method", "lanczos", "--no-model"], 2, "unknown method"),
        (["--dataset", "PAIRS", "--no-model"], 2, "nothing to benchmark"),
        (["--dataset", "PAIRS", "--split", "val", "--method", "bicubic", "--no-model"], 2, "Canon_NNN"),
        (["--dataset", "PAIRS", "--weights", "MISSING.safetensors"], 2, "no such checkpoint"),
    ],
)
def test_errors_are_one_line_with_exit_codes(tmp_path, monkeypatch, args, code, needle):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SDTOOL_DATA", raising=False)
    _dataset(tmp_path / "pairs", ["a.png"])
    args = [a.replace("PAIRS", str(tmp_path / "pairs")).replace("MISSING", str(tmp_path / "missing")) for a in args]
    res = runner.invoke(app, ["benchmark", *args])
    assert res.exit_code == code, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_mismatched_pair_is_refused(tmp_path):
    _dataset(tmp_path, ["a.png"])
    iio.imwrite(tmp_path / "test_LR" / "a.png", np.zeros((15, 16, 3), np.uint8))
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path), "-m", "bicubic", "--no-model", "-o",
                              str(tmp_path / "r.json")])
    assert res.exit_code == 1
    assert "a: HR 64×64 is not 4× LR 16×15" in res.output


def test_sr_dir_scores_another_tools_outputs_like_the_builtin_method(tmp_path):
    _dataset(tmp_path / "d", ["a.png", "b.png"])
    outs = tmp_path / "other"
    outs.mkdir()
    for n in ("a", "b"):  # another tool's bicubic outputs, named with its own tag
        lr = iio.imread(tmp_path / "d" / "test_LR" / f"{n}.png").astype(np.float64)
        iio.imwrite(outs / f"{n}_out.png", quantize(imresize_np(lr, 4.0)).astype(np.uint8))
    rep_path = tmp_path / "r.json"
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "d"), "--method", "bicubic", "--no-model",
                              "--sr-dir", f"bic2={outs}", "-o", str(rep_path)])
    assert res.exit_code == 0, res.output
    rep = json.loads(rep_path.read_text())
    a, b = rep["summary"]["bicubic"], rep["summary"]["bic2"]
    for key in ("psnr_rgb", "psnr_y", "ssim_y", "lpips", "color_err"):
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    assert "bic2" in res.output and rep["methods"]["bic2"]["folder"] == str(outs)


def test_sr_dir_errors_name_the_folder_or_file(tmp_path):
    _dataset(tmp_path / "d", ["a.png", "b.png"])
    base = ["benchmark", "-d", str(tmp_path / "d"), "--no-model", "-o", str(tmp_path / "r.json")]
    res = runner.invoke(app, [*base, "--sr-dir", f"x={tmp_path / 'absent'}"])
    assert res.exit_code == 2 and "absent: no such folder" in res.output
    part = tmp_path / "part"
    part.mkdir()
    iio.imwrite(part / "a.png", np.zeros((64, 64, 3), np.uint8))
    res = runner.invoke(app, [*base, "--sr-dir", f"x={part}"])
    assert res.exit_code == 2 and "no output for b" in res.output
    iio.imwrite(part / "b.png", np.zeros((60, 64, 3), np.uint8))  # wrong size
    res = runner.invoke(app, [*base, "--sr-dir", f"x={part}"])
    assert res.exit_code == 1 and "b.png" in res.output and "expected the HR size 64×64" in res.output
    res = runner.invoke(app, [*base, "--sr-dir", "nodir"])
    assert res.exit_code == 2 and "NAME=DIR" in res.output


def test_model_outputs_are_saved_and_rescored(tmp_path, tiny_model):
    from sdtool.checkpoint import save_model

    _dataset(tmp_path / "d", ["a.png"])
    w = tmp_path / "tiny.safetensors"
    save_model(tiny_model, w)
    rep_path = tmp_path / "r.json"
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "d"), "-w", str(w), "--no-downscale",
                              "--save-sr", str(tmp_path / "sr"), "-o", str(rep_path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    saved = tmp_path / "sr" / "tiny" / "a.png"
    assert iio.imread(saved).shape == (64, 64, 3)
    rep = json.loads(rep_path.read_text())
    assert rep["methods"]["tiny"]["color_fix"] == "wavelet"  # upscale's default
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "d"), "--no-model", "--sr-dir",
                              f"again={tmp_path / 'sr' / 'tiny'}", "-o", str(rep_path)])
    assert res.exit_code == 0, res.output
    again = json.loads(rep_path.read_text())["summary"]["again"]
    assert again["psnr_rgb"] == pytest.approx(rep["summary"]["tiny"]["psnr_rgb"], abs=1e-9)


def _rrdbnet_state(nf: int = 8, gc: int = 32, seed: int = 0) -> dict:
    """A small random ESRGAN/Real-ESRGAN RRDBNet x4 state dict (one RRDB) in the original key layout."""
    import torch

    g = torch.Generator().manual_seed(seed)
    sd = {}

    def conv(name: str, cin: int, cout: int) -> None:
        sd[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        sd[f"{name}.bias"] = torch.zeros(cout)

    conv("conv_first", 3, nf)
    for r in (1, 2, 3):
        for c in range(1, 6):
            conv(f"body.0.rdb{r}.conv{c}", nf + (c - 1) * gc, gc if c < 5 else nf)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, nf, nf)
    conv("conv_last", nf, 3)
    return sd


def test_baseline_checkpoint_of_another_architecture(tmp_path):
    pytest.importorskip("spandrel")
    import torch

    _dataset(tmp_path / "d", ["a.png", "b.png"], side=64)
    ckpt = tmp_path / "RealESRGAN_tiny.pth"
    torch.save(_rrdbnet_state(), ckpt)
    rep_path = tmp_path / "r.json"
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "d"), "--no-model", "--baseline", str(ckpt),
                              "--method", "bicubic", "-o", str(rep_path), "--device", "cpu", "--save-sr",
                              str(tmp_path / "sr")])
    assert res.exit_code == 0, res.output
    rep = json.loads(rep_path.read_text())
    info = rep["methods"]["RealESRGAN_tiny"]
    assert info["kind"] == "baseline" and info["architecture"] == "ESRGAN"
    s = rep["summary"]["RealESRGAN_tiny"]
    assert 0 < s["lpips"] <= 1 and s["psnr_rgb"] < rep["summary"]["bicubic"]["psnr_rgb"]  # random weights
    # the same outputs as running the network directly
    from spandrel import ModelLoader

    net = ModelLoader("cpu").load_from_file(ckpt).eval()
    lr = iio.imread(tmp_path / "d" / "test_LR" / "a.png")
    with torch.no_grad():
        direct = net(torch.from_numpy(lr / 255.0).permute(2, 0, 1)[None].float())[0]
    direct = (direct.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(iio.imread(tmp_path / "sr" / "RealESRGAN_tiny" / "a.png").astype(float) - direct).max() <= 1


def test_baseline_errors(tmp_path):
    _dataset(tmp_path / "d", ["a.png"])
    base = ["benchmark", "-d", str(tmp_path / "d"), "--no-model", "-o", str(tmp_path / "r.json")]
    res = runner.invoke(app, [*base, "--baseline", str(tmp_path / "none.pth")])
    assert res.exit_code == 2 and "none.pth: no such file" in res.output
    (tmp_path / "junk.pth").write_bytes(b"junk")
    res = runner.invoke(app, [*base, "--baseline", str(tmp_path / "junk.pth")])
    assert res.exit_code == 2 and "junk.pth" in res.output and "Traceback" not in res.output


def test_cache_resumes_and_sheet(tmp_path, monkeypatch):
    from sdtool.benchmark import run as bench_run

    _dataset(tmp_path / "d", ["a.png", "b.png", "c.png"])
    outs = tmp_path / "other"
    outs.mkdir()
    for n in ("a", "b", "c"):
        iio.imwrite(outs / f"{n}.png", np.full((64, 64, 3), 128, np.uint8))
    rep_path = tmp_path / "r.json"
    args = ["benchmark", "-d", str(tmp_path / "d"), "--method", "bicubic", "--no-model", "--sr-dir", f"flat={outs}",
            "-o", str(rep_path), "--sheet", str(tmp_path / "sheet.png"), "--sheet-count", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    first = json.loads(rep_path.read_text())["summary"]
    sheet = iio.imread(tmp_path / "sheet.png")
    assert sheet.shape[0] == 2 * (16 + 64 + 4) and sheet.shape[2] == 3  # two rows of labelled 64-px crops
    assert sheet.shape[1] == 3 * (64 + 2)  # HR | bicubic (with its LPIPS) | flat
    calls = []
    real = bench_run.score_pair
    monkeypatch.setattr(bench_run, "score_pair", lambda *a, **k: calls.append(a[1].name) or real(*a, **k))
    (rep_path.with_name("r.cache") / "flat" / "b.json").unlink()  # as if stopped before b was scored
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert calls == ["b"]  # only what was missing
    assert json.loads(rep_path.read_text())["summary"] == first


def test_niqe_input_option(tmp_path):
    _dataset(tmp_path / "d", ["a.png"], side=200)
    reps = {}
    for mode in ("gray", "y"):
        path = tmp_path / f"{mode}.json"
        res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "d"), "-m", "bicubic", "--no-model",
                                  "--niqe-input", mode, "-o", str(path), "--no-downscale"])
        assert res.exit_code == 0, res.output
        reps[mode] = json.loads(path.read_text())
    assert reps["y"]["settings"]["niqe_input"] == "y"
    assert reps["gray"]["summary"]["bicubic"]["niqe"] != reps["y"]["summary"]["bicubic"]["niqe"]
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "d"), "-m", "bicubic", "--no-model",
                              "--niqe-input", "luma", "-o", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "gray or y" in res.output
