"""A hostile folder through upscale, downscale and sample-degradation: no traceback, documented exit codes,
inputs untouched, and nothing in the output folder but complete, decodable images."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
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


def hostile_folder(root: Path) -> dict[str, bool]:
    """Writes the corpus; returns {relative name: whether it is a good image that must produce an output}."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 18, 3), dtype=np.uint8))
    good_png = _save(rgb, "PNG")
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
        assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None, f"undecodable output {p}"


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
    assert "bomb.png: 200000×200000" in res.output and "over the limit" in res.output
    for bad in ("zero.png", "truncated.png", "text.png"):
        assert bad in res.output
    # A rerun skips what exists and writes nothing new.
    stamp = {p.name: sha256_of(p) for p in out.iterdir() if p.is_file()}
    again = runner.invoke(app, [*command, str(src), str(out), "--seed", "2", *extra])
    assert again.exit_code == 1 and "Traceback" not in again.output
    assert {p.name: sha256_of(p) for p in out.iterdir() if p.is_file()} == stamp
