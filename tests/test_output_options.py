"""What people who upscale photos expect from Real-ESRGAN's CLI: --outscale, --suffix, --ext, --quality."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sdtool.cli.app import app
from sdtool.resize import resize_image
from tests.helpers import write_image_file

runner = CliRunner()


def _photo(h: int, w: int, c: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = np.stack([127 + 90 * np.sin(xx / 3 + k) * np.cos(yy / 4 - k) for k in range(c)], axis=2)
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def _up(args: list[str], weights: Path) -> str:
    res = runner.invoke(app, ["upscale", *args, "-w", str(weights), "--seed", "3"])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("scale,size", [(2, (12, 10)), (3.5, (21, 18)), (1, (6, 5)), (6, (36, 30))])
def test_outscale_resizes_the_x4_result(tmp_path: Path, tiny_weights: Path, scale: float, size: tuple) -> None:
    src = write_image_file(tmp_path / "p.png", _photo(6, 5))
    _up([str(src), str(tmp_path / "o.png"), "--outscale", str(scale)], tiny_weights)
    _up([str(src), str(tmp_path / "x4.png")], tiny_weights)
    out, x4 = cv2.imread(str(tmp_path / "o.png")), cv2.imread(str(tmp_path / "x4.png"))
    assert out.shape[:2] == size  # each side round(side × S)
    # The same sample as the x4 output, resized (area below 4, Lanczos above), as Real-ESRGAN does.
    assert np.array_equal(out, resize_image(x4, *size))


def test_outscale_names_the_output_and_keeps_alpha(tmp_path: Path, tiny_weights: Path) -> None:
    rgba = np.dstack([_photo(8, 6), np.full((8, 6), 200, np.uint8)])
    src = write_image_file(tmp_path / "photo.png", rgba)
    _up([str(src), "--outscale", "2", "-t", "0"], tiny_weights)
    out = cv2.imread(str(tmp_path / "photo_x2_t0.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (16, 12, 4) and np.all(np.abs(out[:, :, 3].astype(int) - 200) <= 1)


@pytest.mark.parametrize("args", [["--outscale", "0"], ["--outscale", "nan"], ["--outscale", "17"],
                                  ["--ext", "gif"], ["--suffix", "a/b"], ["--quality", "0"]])
def test_bad_values_exit_2(tmp_path: Path, tiny_weights: Path, args: list[str]) -> None:
    src = write_image_file(tmp_path / "p.png", _photo(6, 6))
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "out") + "/", "-w", str(tiny_weights), *args])
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "out").exists()


def test_outscale_is_upscale_only(tmp_path: Path, tiny_weights: Path) -> None:
    src = write_image_file(tmp_path / "p.png", _photo(8, 8))
    res = runner.invoke(app, ["downscale", str(src), str(tmp_path / "o.png"), "-w", str(tiny_weights),
                              "--outscale", "2"])
    assert res.exit_code == 2  # no such option on downscale


def test_suffix_and_ext_for_a_folder(tmp_path: Path, tiny_weights: Path) -> None:
    write_image_file(tmp_path / "in" / "a.png", _photo(6, 6))
    write_image_file(tmp_path / "in" / "sub" / "b.jpg", _photo(5, 7))
    _up([str(tmp_path / "in"), str(tmp_path / "out"), "--suffix", "out", "--ext", "webp", "--samples", "2"],
        tiny_weights)
    names = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert names == ["a_out_s00.webp", "a_out_s01.webp", "sub/b_out_s00.webp", "sub/b_out_s01.webp"]
    assert cv2.imread(str(tmp_path / "out" / "sub" / "b_out_s01.webp")).shape == (20, 28, 3)
    again = runner.invoke(app, ["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "-w", str(tiny_weights),
                                "--suffix", "out", "--ext", "webp", "--samples", "2"])
    assert "0 done, 2 skipped" in again.output  # the rerun finds the renamed outputs


def test_suffix_beside_the_input_replaces_the_tag(tmp_path: Path, tiny_weights: Path) -> None:
    src = write_image_file(tmp_path / "photo.jpg", _photo(6, 6))
    _up([str(src), "--suffix", "sr", "--ext", "png"], tiny_weights)
    assert (tmp_path / "photo_sr.png").is_file()
    _up([str(src), "--ext", "PNG"], tiny_weights)
    assert (tmp_path / "photo_x4_t0.4.png").is_file()


def test_suffix_and_ext_refused_when_out_names_a_file(tmp_path: Path, tiny_weights: Path) -> None:
    src = write_image_file(tmp_path / "p.png", _photo(6, 6))
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "-w", str(tiny_weights), "--ext", "jpg"])
    assert res.exit_code == 2 and "OUT names a file; --suffix and --ext apply" in res.output
    res = runner.invoke(app, ["upscale", str(src), "-w", str(tiny_weights), "--suffix", "", "--ext", "png"])
    assert res.exit_code == 2 and "replace the input" in res.output


@pytest.mark.parametrize("ext", ["jpg", "webp"])
def test_quality_sets_jpeg_and_webp_compression(tmp_path: Path, tiny_weights: Path, ext: str) -> None:
    src = write_image_file(tmp_path / "p.png", _photo(16, 16))
    sizes = {}
    for q in (30, 95):
        out = tmp_path / f"q{q}.{ext}"
        _up([str(src), str(out), "--quality", str(q)], tiny_weights)
        sizes[q] = out.stat().st_size
    default = tmp_path / f"default.{ext}"
    _up([str(src), str(default)], tiny_weights)
    assert sizes[30] < 0.7 * sizes[95]
    assert default.read_bytes() == (tmp_path / f"q95.{ext}").read_bytes()  # 95 is the default


def test_downscale_takes_suffix_ext_quality(tmp_path: Path, tiny_weights: Path) -> None:
    write_image_file(tmp_path / "hr" / "a.png", _photo(16, 16))
    res = runner.invoke(app, ["downscale", str(tmp_path / "hr"), str(tmp_path / "lr"), "-w", str(tiny_weights),
                              "--suffix", "lr", "--ext", "jpg", "--quality", "90"])
    assert res.exit_code == 0, res.output
    assert cv2.imread(str(tmp_path / "lr" / "a_lr.jpg")).shape == (4, 4, 3)
