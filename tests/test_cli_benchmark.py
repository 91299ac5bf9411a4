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
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path), "-m", "bicubic", "--no-model", "-o", str(tmp_path / "r.json")])
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
