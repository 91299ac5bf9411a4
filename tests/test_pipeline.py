"""sdtool.infer.pipeline with the tiny SDFlow: formats, naming, skip-existing, seeds, tiling, errors, rank split."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from sdtool.config import PRESETS
from sdtool.errors import UsageError
from sdtool.model.sdflow import SDFlow
from sdtool.infer.pipeline import ProgressEvent, process_images, sample_suffixes
from sdtool.seeds import file_seed
from tests.helpers import sha256_of, write_image_file

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def tiny() -> SDFlow:
    torch.manual_seed(0)
    return SDFlow(PRESETS["tiny"]).eval()


def _img(h: int, w: int, c: int, dtype: type = np.uint8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [0.5 + 0.4 * np.sin(xx / 3 + k) * np.cos(yy / 4 - k) for k in range(c)]
    arr = np.stack(chans, axis=2) if c > 1 else chans[0]
    return np.round(arr * (255 if dtype == np.uint8 else 65535)).astype(dtype)




def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()}


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


# (relative path, array) covering every format and mode
FOLDER = {
    "rgb8.png": _img(12, 10, 3),
    "sub/gray16.png": _img(9, 11, 1, np.uint16),
    "sub/rgba.png": _img(8, 8, 4),
    "sub/deep/rgba16.tiff": _img(10, 7, 4, np.uint16),
    "photo.jpg": _img(16, 12, 3),
    "web.webp": _img(8, 12, 4),
    "gray.bmp": _img(7, 9, 1),
}


def _make_folder(root: Path) -> Path:
    for rel, arr in FOLDER.items():
        write_image_file(root / rel, arr)
    (root / "readme.txt").write_text("not an image")
    (root / "sub" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


@pytest.mark.parametrize("task,factor", [("upscale", 4.0), ("downscale", 0.25)])
def test_folder_round_trip_keeps_mode_depth_alpha(tmp_path: Path, tiny: SDFlow, task: str, factor: float) -> None:
    src = _make_folder(tmp_path / "in")
    before = _tree(src)
    events: list[ProgressEvent] = []
    res = process_images(src, tmp_path / "out", task=task, model=tiny, seed=1, progress=events.append)
    assert _tree(src) == before  # inputs never modified
    assert sorted(o.source.name for o in res.done) == sorted(Path(r).name for r in FOLDER)
    assert [o.source.name for o in res.failed] == ["corrupt.png"]
    assert "corrupt.png" in res.failed[0].error
    assert any("readme.txt" in n for n in res.notices)
    assert [e.kind for e in events].count("file_end") == len(FOLDER) + 1
    for rel, arr in FOLDER.items():
        out = cv2.imread(str(tmp_path / "out" / rel), cv2.IMREAD_UNCHANGED)
        h, w = arr.shape[:2]
        assert out.shape[:2] == (math.ceil(h * factor), math.ceil(w * factor)), rel
        assert out.dtype == arr.dtype, rel
        assert out.ndim == arr.ndim and (out.ndim == 2 or out.shape[2] == arr.shape[2]), rel
    assert not (tmp_path / "out" / "readme.txt").exists()
    leftovers = [p for p in (tmp_path / "out").rglob("*.tmp")]
    assert leftovers == []


def test_alpha_is_resized_not_modelled(tmp_path: Path, tiny: SDFlow) -> None:
    arr = _img(8, 8, 4)
    arr[..., 3] = 0
    arr[:4, :, 3] = 255
    write_image_file(tmp_path / "a.png", arr)
    process_images(tmp_path / "a.png", tmp_path / "b.png", model=tiny, seed=0)
    out = cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_UNCHANGED)
    ref = cv2.resize(arr[..., 3].astype(np.float32) / 255, (32, 32), interpolation=cv2.INTER_CUBIC)
    assert np.abs(out[..., 3] / 255.0 - np.clip(ref, 0, 1)).max() <= 1 / 255 + 1e-6


def test_sample_naming_and_seed_reproducibility(tmp_path: Path, tiny: SDFlow) -> None:
    assert sample_suffixes(1) == [""] and sample_suffixes(3) == ["_s00", "_s01", "_s02"]
    assert sample_suffixes(101)[-1] == "_s100"
    write_image_file(tmp_path / "in" / "a" / "b.png", _img(10, 10, 3))
    process_images(tmp_path / "in", tmp_path / "o1", model=tiny, samples=3, seed=5, temperature=0.8)
    process_images(tmp_path / "in", tmp_path / "o2", model=tiny, samples=3, seed=5, temperature=0.8)
    names = sorted(p.name for p in (tmp_path / "o1" / "a").iterdir())
    assert names == ["b_s00.png", "b_s01.png", "b_s02.png"]
    assert _tree(tmp_path / "o1") == _tree(tmp_path / "o2")  # fixed seed: same samples twice
    s0, s1 = (cv2.imread(str(tmp_path / "o1" / "a" / n)) for n in names[:2])
    assert not np.array_equal(s0, s1)  # samples differ from each other
    process_images(tmp_path / "in", tmp_path / "o3", model=tiny, samples=1, seed=6)
    assert sha256_of(tmp_path / "o3" / "a" / "b.png") != sha256_of(tmp_path / "o1" / "a" / "b_s00.png")


def test_sample_does_not_depend_on_other_files(tmp_path: Path, tiny: SDFlow) -> None:
    write_image_file(tmp_path / "one" / "x.png", _img(10, 12, 3))
    write_image_file(tmp_path / "two" / "x.png", _img(10, 12, 3))
    write_image_file(tmp_path / "two" / "a_first.png", _img(6, 6, 3))
    for name in ("one", "two"):
        process_images(tmp_path / name, tmp_path / f"out_{name}", task="downscale", model=tiny, seed=9, samples=2)
    for k in ("s00", "s01"):
        assert sha256_of(tmp_path / "out_one" / f"x_{k}.png") == sha256_of(tmp_path / "out_two" / f"x_{k}.png")
    assert file_seed(9, Path("x.png")) != file_seed(9, Path("y.png"))


def test_skip_existing_resumes(tmp_path: Path, tiny: SDFlow) -> None:
    for name in ("a.png", "b.png", "c.png"):
        write_image_file(tmp_path / "in" / name, _img(8, 8, 3))
    first = process_images(tmp_path / "in", tmp_path / "out", model=tiny, seed=2)
    assert len(first.done) == 3
    kept = sha256_of(tmp_path / "out" / "a.png")
    (tmp_path / "out" / "b.png").unlink()
    second = process_images(tmp_path / "in", tmp_path / "out", model=tiny, seed=5)  # skipping is the default
    assert sorted(o.source.name for o in second.skipped) == ["a.png", "c.png"]
    assert "overwrite" in second.skipped[0].notes[0]
    assert [o.source.name for o in second.done] == ["b.png"]
    assert sha256_of(tmp_path / "out" / "a.png") == kept
    third = process_images(tmp_path / "in", tmp_path / "out", model=None, weights=tmp_path / "absent.safetensors",
                           seed=2)
    assert len(third.skipped) == 3 and not third.done  # nothing to do: the model is not even loaded
    fourth = process_images(tmp_path / "in", tmp_path / "out", model=tiny, seed=5, temperature=0.8, overwrite=True)
    assert len(fourth.done) == 3 and sha256_of(tmp_path / "out" / "a.png") != kept


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_tiling_does_not_change_the_sample(tmp_path: Path, tiny: SDFlow, temperature: float) -> None:
    # Measured: PSNR (peak 65535) between the 16-bit PNG written untiled (--tile 0) and tiled (--tile 24),
    # same seed, so the same global noise; x4 upscale of a 40×52 image.
    write_image_file(tmp_path / "in.png", _img(40, 52, 3, np.uint16))
    common = dict(model=tiny, seed=11, temperature=temperature)
    process_images(tmp_path / "in.png", tmp_path / "full.png", tile=0, **common)
    process_images(tmp_path / "in.png", tmp_path / "tiled.png", tile=24, tile_overlap=8, **common)
    full = cv2.imread(str(tmp_path / "full.png"), cv2.IMREAD_UNCHANGED)
    tiled = cv2.imread(str(tmp_path / "tiled.png"), cv2.IMREAD_UNCHANGED)
    assert full.shape == tiled.shape == (160, 208, 3)
    assert psnr(full, tiled, 65535.0) >= 40.0


def test_downscale_tiling_does_not_change_the_sample(tmp_path: Path, tiny: SDFlow) -> None:
    write_image_file(tmp_path / "in.png", _img(150, 131, 3, np.uint16))
    common = dict(task="downscale", model=tiny, seed=11, temperature=0.8)
    process_images(tmp_path / "in.png", tmp_path / "full.png", tile=0, **common)
    process_images(tmp_path / "in.png", tmp_path / "tiled.png", tile=64, tile_overlap=16, **common)
    full = cv2.imread(str(tmp_path / "full.png"), cv2.IMREAD_UNCHANGED)
    tiled = cv2.imread(str(tmp_path / "tiled.png"), cv2.IMREAD_UNCHANGED)
    assert full.shape == (38, 33, 3)
    assert psnr(full, tiled, 65535.0) >= 40.0


@pytest.mark.parametrize("task,size,expected", [
    ("upscale", (1, 1), (4, 4)), ("upscale", (3, 2), (12, 8)), ("downscale", (1, 1), (1, 1)),
    ("downscale", (3, 5), (1, 2)), ("downscale", (13, 7), (4, 2)),
])
def test_tiny_and_odd_sizes(tmp_path: Path, tiny: SDFlow, task: str, size: tuple[int, int],
                            expected: tuple[int, int]) -> None:
    write_image_file(tmp_path / "t.png", _img(*size, 3))
    res = process_images(tmp_path / "t.png", tmp_path / "o.png", task=task, model=tiny, seed=0)
    assert res.ok, res.failed
    assert cv2.imread(str(tmp_path / "o.png")).shape[:2] == expected


def test_default_name_beside_input_is_skipped_when_it_exists(tmp_path: Path, tiny: SDFlow) -> None:
    src = write_image_file(tmp_path / "hr.png", _img(16, 16, 3))
    r1 = process_images(src, task="downscale", model=tiny, seed=0, temperature=0.8)
    r2 = process_images(src, task="downscale", model=tiny, seed=0, temperature=0.8)
    assert r1.done[0].outputs == [tmp_path / "hr_x0.25_t0.8.png"]
    assert not r2.done and r2.skipped[0].outputs == [tmp_path / "hr_x0.25_t0.8.png"]
    r3 = process_images(src, task="upscale", model=tiny, seed=0, samples=2, temperature=0.5)
    assert r3.done[0].outputs == [tmp_path / "hr_x4_t0.5_s00.png", tmp_path / "hr_x4_t0.5_s01.png"]
    r4 = process_images(src, task="downscale", model=tiny, seed=0, component=2)
    assert r4.done[0].outputs == [tmp_path / "hr_x0.25_t0.8_c2.png"]
    first = sha256_of(tmp_path / "hr_x0.25_t0.8_c2.png")
    r5 = process_images(src, task="downscale", model=tiny, seed=1, component=2, overwrite=True)
    assert r5.done[0].outputs == [tmp_path / "hr_x0.25_t0.8_c2.png"]  # --overwrite: the same name, replaced
    assert sha256_of(tmp_path / "hr_x0.25_t0.8_c2.png") != first


def test_single_file_to_folder_and_refuses_to_overwrite_input(tmp_path: Path, tiny: SDFlow) -> None:
    src = write_image_file(tmp_path / "p.jpg", _img(8, 8, 3))
    res = process_images(src, tmp_path / "outdir", model=tiny, seed=0)
    assert res.done[0].outputs == [tmp_path / "outdir" / "p.jpg"]
    before = sha256_of(src)
    with pytest.raises(UsageError, match="input"):
        process_images(src, src, model=tiny, seed=0)
    assert sha256_of(src) == before


def test_component_changes_downscale_and_is_checked(tmp_path: Path, tiny: SDFlow) -> None:
    src = write_image_file(tmp_path / "h.png", _img(32, 32, 3))
    outs = []
    for k in (0, 3):
        process_images(src, tmp_path / f"c{k}.png", task="downscale", model=tiny, seed=0, component=k)
        outs.append(sha256_of(tmp_path / f"c{k}.png"))
    assert outs[0] != outs[1]
    with pytest.raises(UsageError, match="component"):
        process_images(src, tmp_path / "c9.png", task="downscale", model=tiny, component=9)
    with pytest.raises(UsageError, match="downscale only"):
        process_images(src, tmp_path / "u.png", model=tiny, component=1)


def test_usage_errors(tmp_path: Path, tiny: SDFlow) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(UsageError, match="OUT is required"):
        process_images(tmp_path / "d", model=tiny)
    with pytest.raises(UsageError, match="no such file"):
        process_images(tmp_path / "missing.png", model=tiny)
    with pytest.raises(UsageError, match="temperature"):
        process_images(tmp_path / "d", tmp_path / "o", model=tiny, temperature=-1)
    with pytest.raises(UsageError, match="^tile "):
        process_images(tmp_path / "d", tmp_path / "o", model=tiny, tile=4)


def test_ranks_split_files_round_robin(tmp_path: Path, tiny: SDFlow, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        write_image_file(tmp_path / "in" / f"f{i}.png", _img(6, 6, 3))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    res = process_images(tmp_path / "in", tmp_path / "out", model=tiny, seed=0)
    assert [o.source.name for o in res.done] == ["f1.png", "f3.png"]
    assert (res.rank, res.world_size) == (1, 2)
    # a rank's output equals the single-process output for the same file
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    process_images(tmp_path / "in", tmp_path / "all", model=tiny, seed=0)
    assert sha256_of(tmp_path / "out" / "f3.png") == sha256_of(tmp_path / "all" / "f3.png")


def test_output_folder_inside_input_is_not_reprocessed(tmp_path: Path, tiny: SDFlow) -> None:
    write_image_file(tmp_path / "in" / "a.png", _img(6, 6, 3))
    process_images(tmp_path / "in", tmp_path / "in" / "sr", model=tiny, seed=0)
    res = process_images(tmp_path / "in", tmp_path / "in" / "sr", model=tiny, seed=0, overwrite=True)
    assert [o.source.name for o in res.done] == ["a.png"]  # not in/sr/a.png, our own earlier output


def test_mixed_precision_wraps_only_cnn_parts(tiny: SDFlow) -> None:
    torch.manual_seed(0)
    model = SDFlow(PRESETS["tiny"]).eval()
    x = torch.rand(1, 3, 16, 16)
    noise = torch.randn(model.upscale_noise_shape(1, 16, 16))
    ref = model.upscale(x, temperature=0.5, noise=noise)
    # HF condition net, deg condition net (and the one inside it), content extractor; never a flow layer.
    assert model.set_compute_dtype(torch.bfloat16) == 4  # CPU bf16 autocast stands in for CUDA here
    assert all(getattr(m, "compute_dtype", None) is None for m in model.hr_flow.modules())
    out = model.upscale(x, temperature=0.5, noise=noise)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert 10 * math.log10(1 / float(((out - ref) ** 2).mean())) > 30
    assert not torch.equal(out, ref)  # it did run in bf16
    model.set_compute_dtype(None)
    assert torch.equal(model.upscale(x, temperature=0.5, noise=noise), ref)


def test_exif_orientation_applied(tmp_path: Path, tiny: SDFlow) -> None:
    im = Image.fromarray(_img(8, 12, 3), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: upright is 12 high, 8 wide
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    process_images(tmp_path / "o.jpg", tmp_path / "up.png", model=tiny, seed=0)
    assert cv2.imread(str(tmp_path / "up.png")).shape[:2] == (48, 32)


def test_output_depth_canvas_equals_quantised_float_sample(tiny: SDFlow) -> None:
    """sample(depth=8/16) keeps the image in the written bit depth; same pixels as rounding the float sample."""
    import numpy as np

    from sdtool.imageio import quantize
    from sdtool.infer.sampling import Tiling, draw, sample

    x = torch.rand(1, 3, 30, 26, generator=torch.Generator().manual_seed(3))
    _, noise = draw(tiny, "upscale", 30, 26, torch.Generator().manual_seed(1))
    for tile in (0, 12):
        ref, _ = sample(tiny, "upscale", x, noise, temperature=0.6, tiling=Tiling(tile, 4), color_fix="wavelet")
        for depth, dtype in ((8, np.uint8), (16, np.uint16)):
            arr, _ = sample(tiny, "upscale", x, noise, temperature=0.6, tiling=Tiling(tile, 4), color_fix="wavelet",
                            depth=depth)
            assert arr.dtype == dtype and arr.shape == (120, 104, 3)
            want = quantize(ref[0].permute(1, 2, 0).numpy(), depth)
            assert np.abs(arr.astype(int) - want.astype(int)).max() <= 1
