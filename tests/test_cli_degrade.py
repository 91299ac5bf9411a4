"""`sdtool sample-degradation`: files, side outputs, sheet, seeds, transfer and exit codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sdtool.cli.app import app
from sdtool.infer.sample_degradation import DegradeOptions, SDFlowSampler, sample_degradation
from sdtool.imageio import read_image
from sdtool.checkpoint import save_model as save_pdm
from sdtool.model.pdm import PDM, PDM_PRESETS

runner = CliRunner()


def _png(path: Path, h: int, w: int, seed: int) -> None:
    import cv2

    rng = np.random.default_rng(seed)
    img = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST))


@pytest.fixture()
def hr_dir(tmp_path: Path) -> Path:
    d = tmp_path / "hr"
    _png(d / "a.png", 64, 48, 0)
    _png(d / "sub" / "b.png", 37, 50, 1)
    (d / "notes.txt").write_text("not an image")
    return d


def test_classic_folder_outputs_sheet_and_seeds(hr_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["sample-degradation", str(hr_dir), str(out), "--model", "classic", "-n", "2",
                              "--seed", "3", "--save-kernels", "--save-noise", "--sheet", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0, res.output
    for name in ["a_s00.png", "a_s01.png", "a_s00_kernel.png", "a_s00_kernel.npy", "a_s01_noise.npy",
                 "a_s01_noise.png", "a_s00.json", "sub/b_s01.png"]:
        assert (out / name).is_file(), name
    assert read_image(out / "a_s00.png").rgb.shape == (16, 12, 3)
    assert read_image(out / "sub/b_s00.png").rgb.shape == (10, 13, 3)
    k = np.load(out / "a_s00_kernel.npy")
    assert k.shape == (21, 21) and abs(float(k.sum()) - 1) < 1e-4
    assert (tmp_path / "sheet.png").is_file()
    first = read_image(out / "a_s00.png").rgb
    assert not np.array_equal(first, read_image(out / "a_s01.png").rgb)
    out2, out3 = tmp_path / "out2", tmp_path / "out3"
    assert runner.invoke(app, ["sample-degradation", str(hr_dir), str(out2), "-n", "2", "--seed", "3"]).exit_code == 0
    assert runner.invoke(app, ["sample-degradation", str(hr_dir), str(out3), "-n", "2", "--seed", "4"]).exit_code == 0
    assert np.array_equal(first, read_image(out2 / "a_s00.png").rgb)
    assert not np.array_equal(first, read_image(out3 / "a_s00.png").rgb)


def test_exit_codes(hr_dir: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["sample-degradation", str(tmp_path / "missing"), str(tmp_path / "o")]).exit_code == 2
    # pdm without --weights uses the shipped PDM weights
    res = runner.invoke(app, ["sample-degradation", str(hr_dir / "a.png"), str(tmp_path / "pdm.png"), "--model", "pdm"])
    assert res.exit_code == 0, res.output
    assert read_image(tmp_path / "pdm.png").rgb.shape == (16, 12, 3)
    assert runner.invoke(app, ["sample-degradation", str(hr_dir), str(tmp_path / "o"), "--model",
                               "nope"]).exit_code == 2
    assert runner.invoke(app, ["sample-degradation", str(hr_dir), str(tmp_path / "o"), "--sigma", "3,1"]).exit_code == 2
    (hr_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    res = runner.invoke(app, ["sample-degradation", str(hr_dir), str(tmp_path / "o2")])
    assert res.exit_code == 1 and "broken.png" in res.output
    assert (tmp_path / "o2" / "a.png").is_file()  # the other files went on
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    res = runner.invoke(app, ["sample-degradation", str(hr_dir / "a.png"), str(tmp_path / "o3.png"), "--model", "pdm",
                              "--weights", str(bad)])
    assert res.exit_code == 2  # bad --weights


def test_pdm_weights_and_transfer(hr_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    pdm = PDM(PDM_PRESETS["tiny"])
    w = tmp_path / "pdm.safetensors"
    save_pdm(pdm, w)
    real = tmp_path / "real_lr.png"
    _png(real, 24, 24, 5)
    out = tmp_path / "o"
    res = runner.invoke(app, ["sample-degradation", str(hr_dir / "a.png"), str(out), "--model", "pdm", "--weights",
                              str(w), "--seed", "1", "--save-kernels", "--save-noise", "--like", str(real)])
    assert res.exit_code == 0, res.output
    assert (out / "a.png").is_file() and (out / "a_noise.npy").is_file()
    assert np.load(out / "a_noise.npy").shape == (16, 12, 3)
    classic = runner.invoke(app, ["sample-degradation", str(hr_dir), str(tmp_path / "x"), "--model", "classic",
                                  "--like", str(real)])
    assert classic.exit_code == 2 and "--like needs --model sdflow, pdm or redeg" in classic.output


def test_like_alone_transfers_with_sdflow(hr_dir: Path, tmp_path: Path, tiny_weights: Path) -> None:
    real = tmp_path / "real_lr.png"
    _png(real, 24, 24, 5)
    res = runner.invoke(app, ["sample-degradation", str(hr_dir / "a.png"), str(tmp_path / "o") + "/", "--like",
                              str(real), "-w", str(tiny_weights), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "sample-degradation (sdflow): 1 done" in res.output and (tmp_path / "o" / "a.png").is_file()


def test_sdflow_sampling_and_transfer(hr_dir: Path, tmp_path: Path) -> None:
    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow

    torch.manual_seed(0)
    m = SDFlow(PRESETS["tiny"]).eval()
    opts = DegradeOptions(model="sdflow", samples=2, save_kernels=True)
    res = sample_degradation(hr_dir, tmp_path / "s", options=opts, seed=0, sampler=SDFlowSampler(m, opts))
    assert not res.failed and len(res.done) == 2
    lat = np.load(tmp_path / "s" / "a_s00_latent.npy")
    assert lat.shape == (12, 8, 6)
    assert read_image(tmp_path / "s" / "a_s01.png").rgb.shape == (16, 12, 3)
    real = tmp_path / "real.png"
    _png(real, 32, 32, 9)
    opts2 = DegradeOptions(model="sdflow", like=real)
    res = sample_degradation(hr_dir / "a.png", tmp_path / "t.png", options=opts2, seed=0,
                             sampler=SDFlowSampler(m, opts2))
    assert not res.failed and (tmp_path / "t.png").is_file()
