"""`sdtool upscale` / `sdtool downscale` end to end with a saved tiny checkpoint: exit codes, messages, files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sdtool.checkpoint import save_model
from sdtool.cli.app import app
from sdtool.config import PRESETS
from sdtool.model.sdflow import SDFlow
from tests.helpers import sha256_of, write_image_file

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_model(SDFlow(PRESETS["tiny"]).eval(), path)
    return path


def _img(h: int, w: int, c: int = 3) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [127 + 100 * np.sin(xx / 3 + k) * np.cos(yy / 4 - k) for k in range(c)]
    return np.round(np.stack(chans, axis=2) if c > 1 else chans[0]).astype(np.uint8)




def test_folder_with_corrupt_file_exits_1_and_does_the_rest(tmp_path: Path, weights: Path) -> None:
    write_image_file(tmp_path / "in" / "a.png", _img(8, 8))
    write_image_file(tmp_path / "in" / "b" / "c.jpg", _img(8, 6))
    (tmp_path / "in" / "b" / "broken.png").write_bytes(b"nope")
    (tmp_path / "in" / "notes.txt").write_text("x")
    sums = {p: sha256_of(p) for p in (tmp_path / "in").rglob("*") if p.is_file()}
    res = runner.invoke(app, ["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "-w", str(weights), "--seed",
                              "1"])
    assert res.exit_code == 1, res.output
    assert "broken.png" in res.output and "cannot decode" in res.output
    assert "notes.txt" in res.output and "skipped" in res.output
    assert "upscale: 2 done, 0 skipped, 1 failed" in res.output
    assert cv2.imread(str(tmp_path / "out" / "a.png")).shape == (32, 32, 3)
    assert cv2.imread(str(tmp_path / "out" / "b" / "c.jpg")).shape == (32, 24, 3)
    assert all(sha256_of(p) == s for p, s in sums.items())  # inputs unchanged

    again = runner.invoke(app, ["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "-w", str(weights),
                                "--seed", "1", "--skip-existing"])
    assert "0 done, 2 skipped, 1 failed" in again.output and again.exit_code == 1


def test_all_good_exits_0_and_seed_reproduces(tmp_path: Path, weights: Path) -> None:
    src = write_image_file(tmp_path / "hr.png", _img(24, 20))
    for out in ("o1.png", "o2.png"):
        res = runner.invoke(app, ["downscale", str(src), str(tmp_path / out), "-w", str(weights), "--seed", "4",
                                  "--temperature", "0.8", "--component", "1", "--tile", "0"])
        assert res.exit_code == 0, res.output
        assert "1 done, 0 skipped, 0 failed" in res.output and "seed 4" in res.output
    assert sha256_of(tmp_path / "o1.png") == sha256_of(tmp_path / "o2.png")
    assert cv2.imread(str(tmp_path / "o1.png")).shape == (6, 5, 3)


def test_optional_out_writes_beside_input_and_a_rerun_skips(tmp_path: Path, weights: Path) -> None:
    src = write_image_file(tmp_path / "photo.png", _img(6, 6))
    from sdtool.config import DEFAULT_SR_TEMPERATURE as t

    out = tmp_path / f"photo_x4_t{t:g}.png"  # named by the default temperature
    res = runner.invoke(app, ["upscale", str(src), "-w", str(weights), "--seed", "1"])
    assert res.exit_code == 0 and "1 done" in res.output, res.output
    first = sha256_of(out)
    res = runner.invoke(app, ["upscale", str(src), "-w", str(weights), "--seed", "2"])  # the one rule: skip
    assert res.exit_code == 0 and "0 done, 1 skipped" in res.output, res.output
    assert f"notice: {src}: skipped, {out} exists (use --overwrite to replace)" in res.output  # names the output
    assert sha256_of(out) == first and sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", out.name]
    res = runner.invoke(app, ["upscale", str(src), "-w", str(weights), "--seed", "2", "--overwrite"])
    assert res.exit_code == 0 and "1 done" in res.output and sha256_of(out) != first
    res = runner.invoke(app, ["upscale", str(src), "-w", str(weights), "--samples", "2", "-t", "0"])
    assert res.exit_code == 0
    assert (tmp_path / "photo_x4_t0_s00.png").exists() and (tmp_path / "photo_x4_t0_s01.png").exists()


def test_missing_weights_names_the_file(tmp_path: Path) -> None:
    src = write_image_file(tmp_path / "a.png", _img(6, 6))
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "--weights",
                              str(tmp_path / "gone.safetensors")])
    assert res.exit_code == 2  # bad --weights: usage, nothing done
    assert "gone.safetensors" in res.output
    assert not (tmp_path / "o.png").exists()
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "--weights", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder" in res.output
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "--weights", str(trunc)])
    assert res.exit_code == 2 and "trunc.safetensors" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("args", [
    ["upscale", "{d}"],                              # folder without OUT
    ["upscale", "{d}/nothing.png", "{d}/o.png"],     # missing input
    ["upscale", "{f}", "{d}/o.png", "--component", "1"],  # downscale-only option
    ["downscale", "{f}", "{d}/o.png", "--component", "99"],
    ["upscale", "{f}", "{d}/o.png", "--device", "tpu"],
    ["upscale", "{f}", "{d}/o.png", "--samples", "0"],
])
def test_bad_usage_exits_2(tmp_path: Path, weights: Path, args: list[str]) -> None:
    f = write_image_file(tmp_path / "x.png", _img(8, 8))
    argv = [a.format(d=tmp_path, f=f) for a in args] + ["-w", str(weights)]
    res = runner.invoke(app, argv)
    assert res.exit_code == 2, res.output


def test_help_documents_naming_and_tiling() -> None:
    res = runner.invoke(app, ["downscale", "--help"])
    assert res.exit_code == 0
    for word in ("--component", "--tile", "--overwrite", "_s00", "torchrun"):
        assert word in res.output
