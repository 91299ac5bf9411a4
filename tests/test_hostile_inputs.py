"""A hostile folder through upscale, downscale and sample-degradation: no traceback, documented exit codes,
inputs untouched, and nothing in the output folder but complete, decodable images."""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sdtool.cli.app import app
from tests.helpers import sha256_of

runner = CliRunner()


def _png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR that claims a huge image, with a few bytes of pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _frames(fmt: str, **kw) -> bytes:
    """A three-frame animation (PNG, WebP) or three-page TIFF; the first frame is mid-grey."""
    frames = [Image.fromarray(np.full((12, 10, 3), v, np.uint8)) for v in (128, 20, 240)]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)


MULTI_FRAME = ("anim.png", "anim.webp", "pages.tiff")
LONG_NAMES = ("n" * 246 + ".png", "m" * 231 + ".png")  # 250 and 235 bytes: legal, too long for a prefix + suffix


@functools.lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """An sRGB ICC profile (made once: its header holds the time it was made)."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def hostile_folder(root: Path) -> dict[str, bool]:
    """Writes the corpus; returns {relative name: whether it is a good image that must produce an output}."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 18, 3), dtype=np.uint8))
    good_png = _save(rgb, "PNG")
    icc = srgb_profile()
    files: dict[str, tuple[bytes, bool]] = {
        "zero.png": (b"", False),
        "truncated.png": (good_png[: len(good_png) // 2], False),
        "text.png": (b"this is not an image\n" * 20, False),
        "bomb.png": (_png_header_bomb(200_000, 200_000), False),
        "cmyk.jpg": (_save(rgb.convert("CMYK"), "JPEG"), True),
        "palette.png": (_save(rgb.convert("P"), "PNG"), True),
        "gray16.png": (_save(Image.fromarray(rng.integers(0, 65535, (9, 11), dtype=np.uint16)), "PNG"), True),
        "rgba.png": (_save(Image.fromarray(rng.integers(0, 255, (8, 8, 4), dtype=np.uint8), "RGBA"), "PNG"), True),
        "rgba.tiff": (_save(Image.fromarray(rng.integers(0, 255, (8, 8, 4), dtype=np.uint8), "RGBA"), "TIFF"), True),
        "one.png": (_save(Image.fromarray(np.full((1, 1, 3), 77, np.uint8)), "PNG"), True),
        "odd.png": (_save(Image.fromarray(rng.integers(0, 255, (3, 5, 3), dtype=np.uint8)), "PNG"), True),
        "notes.txt": (b"not an image file at all", False),
        "anim.png": (_frames("PNG"), True),
        "anim.webp": (_frames("WEBP", lossless=True), True),
        "pages.tiff": (_frames("TIFF"), True),
        "icc.jpg": (_save(rgb, "JPEG", icc_profile=icc), True),
        "icc.png": (_save(rgb, "PNG", icc_profile=icc), True),
        LONG_NAMES[0]: (good_png, True),
        LONG_NAMES[1]: (good_png, True),
        os.fsdecode(b"\xff\xfe not utf-8.png"): (good_png, True),  # a name from another system's encoding
    }
    exif = Image.Exif()
    exif[0x0112] = 6
    files["rotated.jpg"] = (_save(rgb, "JPEG", exif=exif.tobytes()), True)
    for name, (data, _) in files.items():
        (root / name).write_bytes(data)
    (root / "loop.png").symlink_to(root / "loop.png")
    return {name: good for name, (data, good) in files.items() if name != "notes.txt"}


def _inputs(root: Path) -> dict[str, str]:
    return {p.name: sha256_of(p) for p in root.iterdir() if p.is_file() and not p.is_symlink()}


def _assert_clean_outputs(out: Path) -> None:
    import cv2

    for p in out.rglob("*"):
        if p.is_dir():
            continue
        assert not p.name.startswith("."), f"hidden leftover {p}"
        if p.suffix in (".json", ".npy"):
            continue
        data = np.frombuffer(p.read_bytes(), np.uint8)  # cv2.imread cannot open a name that is not UTF-8
        assert cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is not None, f"undecodable output {p}"


@pytest.mark.parametrize("command", [
    ["upscale"], ["downscale"], ["sample-degradation", "--model", "classic"], ["sample-degradation", "--model", "pdm"],
    ["sample-degradation", "--model", "redeg"],
])
def test_hostile_folder(tmp_path, tiny_weights, command):
    src = tmp_path / "in"
    src.mkdir()
    expected = hostile_folder(src)
    before = _inputs(src)
    out = tmp_path / "out"
    extra = ["-w", str(tiny_weights)] if command[0] != "sample-degradation" else []
    res = runner.invoke(app, [*command, str(src), str(out), "--seed", "1", *extra])
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 1, res.output  # some files failed, the others went on
    assert _inputs(src) == before
    _assert_clean_outputs(out)
    for name, good in expected.items():
        assert (out / name).exists() == good, (name, res.output)
    assert "bomb.png: 200000×200000 = 40,000,000,000 pixels" in res.output and "over the limit" in res.output
    for bad in ("zero.png", "truncated.png", "text.png"):
        assert bad in res.output
    for name in MULTI_FRAME:
        assert f"{name}: 3 frames (animated or multi-page): only the first is used" in res.output, res.output
    for name in ("icc.jpg", "icc.png"):  # the colour profile travels with the pixels
        with Image.open(out / name) as im:
            assert im.info.get("icc_profile") == srgb_profile(), name
    assert res.output.count("error:") == 4  # zero, truncated, text, bomb: one line each
    # A rerun skips what exists and writes nothing new.
    stamp = {p.name: sha256_of(p) for p in out.iterdir() if p.is_file()}
    again = runner.invoke(app, [*command, str(src), str(out), "--seed", "2", *extra])
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert {p.name: sha256_of(p) for p in out.iterdir() if p.is_file()} == stamp


def test_an_output_name_the_file_system_cannot_store_fails_that_file_alone(tmp_path, tiny_weights):
    src = tmp_path / "in"
    rng = np.random.default_rng(1)
    names = ["a.png", "n" * 248 + ".png", "z.png"]  # with --samples 2 the middle one's outputs need 256 bytes
    for name in names:
        (src / name).parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(src / name)
    out = tmp_path / "out"
    res = runner.invoke(app, ["upscale", str(src), str(out), "-n", "2", "--seed", "1", "-w", str(tiny_weights)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.count("error:") == 1 and "file name too long" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["a_s00.png", "a_s01.png", "z_s00.png", "z_s01.png"]


def _weights_with(path: Path, tiny_weights: Path, config: dict | None = None, fill: float | None = None) -> Path:
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tiny_weights), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(tiny_weights))
    if config is not None:
        meta["config"] = json.dumps({**json.loads(meta["config"]), **config})
    if fill is not None:
        key = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 1)
        tensors[key] = tensors[key].clone().view(-1).index_fill_(0, torch.tensor([0]), fill).view(tensors[key].shape)
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("config, fill, needle", [
    ({"enc_blocks": 1e9}, None, "enc_blocks must be an integer"),
    ({"hr_steps": [1_000_000_000, 2]}, None, "hr_steps must be 2 integers"),
    ({"lr_steps": 1_000_000_000}, None, "lr_steps must be an integer in 1..256"),
    ({"hidden": 1_000_000_000}, None, "hidden must be an integer"),
    ({"hidden": 1.5}, None, "hidden must be an integer"),
    ({"cond_channels": -5}, None, "cond_channels must be an integer"),
    ({"enc_blocks": 200}, None, "enc_blocks is 200, the file holds 2 (extractor.trunk.N)"),
    ({"hidden": 64}, None, "hidden is 64, the file holds 8"),
    (None, float("nan"), "NaN or infinite"),
    (None, float("inf"), "NaN or infinite"),
])
def test_bad_weights_exit_2_before_any_model_is_built(tmp_path, tiny_weights, monkeypatch, config, fill, needle):
    import time

    from sdtool.model.sdflow import SDFlow

    bad = _weights_with(tmp_path / "bad.safetensors", tiny_weights, config, fill)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(tmp_path / f"{i}.png")

    def never(*_a, **_k):
        raise AssertionError("a model was built for weights that do not fit")

    monkeypatch.setattr(SDFlow, "__init__", never)
    t0 = time.perf_counter()
    res = runner.invoke(app, ["upscale", str(tmp_path), str(tmp_path / "out"), "-w", str(bad), "--device", "cpu"])
    assert time.perf_counter() - t0 < 2
    assert res.exit_code == 2 and needle in res.output, res.output
    assert res.output.count("error:") == 1 and "Traceback" not in res.output  # once for the run, not per file


@pytest.mark.parametrize("make, needle", [
    (lambda t: (t * 255).to(torch.uint8), "{x} is a uint8 tensor"),
    (lambda t: t * 255, "found 0..255 (0..255 images: divide by 255)"),
    (lambda t: t - 0.5, "must hold values in [0, 1], found -0.5..0.5"),
    (lambda t: t.index_fill(3, torch.tensor([0]), float("nan")), "{x} holds NaN or infinite values"),
    (lambda t: t.index_fill(3, torch.tensor([0]), float("inf")), "{x} holds NaN or infinite values"),
    (lambda t: t[0], "got shape (3, 4, 4) (one C×H×W image? add the batch dimension: {x}[None])"),
    (lambda t: t[:, :1], "got shape (1, 1, 4, 4) (gray"),
    (lambda t: torch.cat([t, t[:, :1]], 1), "got shape (1, 4, 4, 4) (RGBA"),
    (lambda t: t.new_zeros(6, 5, 3), "(an H×W×C image? use {x}.permute(2, 0, 1)[None])"),
    (lambda t: t.new_zeros(1, 6, 5, 3), "(channels last? use {x}.permute(0, 3, 1, 2))"),
    (lambda t: t[0].permute(1, 2, 0).numpy(), "got ndarray"),
    (lambda t: t[:, :, :0, :0], "{x} is empty (shape (1, 3, 0, 0))"),
])
def test_api_inputs_are_checked_in_one_place(tiny_model, make, needle):
    from sdtool.errors import InputError

    x = make(torch.linspace(0, 1, 48).reshape(1, 3, 4, 4))
    for op, name in ((tiny_model.upscale, "x"), (tiny_model.downscale, "y")):
        with pytest.raises(InputError) as info:
            op(x)
        assert needle.format(x=name) in str(info.value)


@pytest.mark.parametrize("temperature, needle", [
    (float("nan"), "must be a finite number"), (-1, "must be >= 0"), (1e9, "must be at most 4"),
])
def test_api_and_cli_refuse_the_same_temperatures(tmp_path, tiny_model, tiny_weights, temperature, needle):
    from sdtool.errors import OptionError

    for op in (tiny_model.upscale, tiny_model.downscale):
        with pytest.raises(OptionError, match=f"^temperature {needle}"):
            op(torch.rand(1, 3, 8, 8), temperature=temperature)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    for command in ("upscale", "downscale", "sample-degradation"):
        extra = ["-w", str(tiny_weights)] if command != "sample-degradation" else []
        res = runner.invoke(app, [command, str(tmp_path / "a.png"), str(tmp_path / "o/"), "-t", str(temperature),
                                  *extra])
        assert res.exit_code == 2 and f"error: --temperature {needle}" in res.output, res.output


def test_samples_are_bounded_and_max_pixels_counts_pixels(tmp_path, tiny_weights):
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(tmp_path / "a.png")
    res = runner.invoke(app, ["upscale", str(tmp_path / "a.png"), str(tmp_path / "o/"), "-n", "100000",
                              "-w", str(tiny_weights)])
    assert res.exit_code == 2 and "--samples must be in 1..1000, got 100000" in res.output
    assert not (tmp_path / "o").exists()
    res = runner.invoke(app, ["downscale", str(tmp_path / "a.png"), str(tmp_path / "o/"), "--max-pixels", "100",
                              "-w", str(tiny_weights)])
    assert res.exit_code == 1
    assert "128×128 = 16,384 pixels, over the limit of 100 pixels (raise --max-pixels to process it)" in res.output


def test_bad_weights_are_refused_without_loading_torch(tmp_path, tiny_weights):
    import subprocess
    import sys

    bad = _weights_with(tmp_path / "bad.safetensors", tiny_weights, {"enc_blocks": 10**9})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    code = ("import sys\nfrom sdtool.cli.app import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, "upscale", str(tmp_path / "a.png"), str(tmp_path / "o/"), "-w",
                           str(bad)], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], (done.stdout, done.stderr)  # fast and small: no torch, no model
    assert "enc_blocks must be an integer" in done.stderr
