"""sdtool.imageio: every format × mode round-trips with the right size, mode, bit depth and alpha."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from sdtool.errors import ImageError
from sdtool.imageio import apply_orientation, is_image_path, output_info, read_image, write_image

RNG = np.random.default_rng(1234)


def _rand(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    hi = 256 if dtype == np.uint8 else 65536
    return RNG.integers(0, hi, shape, dtype=np.int64).astype(dtype)


def _smooth(h: int, w: int, c: int, dtype: type) -> np.ndarray:
    """Smooth content so that lossy codecs (JPEG/WebP) stay close to the original."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    chans = [0.5 + 0.4 * np.sin(xx / 5 + k) * np.cos(yy / 7 - k) for k in range(c)]
    arr = np.stack(chans, axis=2) if c > 1 else chans[0]
    scale = 255 if dtype == np.uint8 else 65535
    return np.round(arr * scale).astype(dtype)


# (suffix, cv2 array factory, expected mode, depth, alpha, lossless)
CASES = [
    (".png", lambda: _rand((13, 17, 3), np.uint8), "rgb", 8, False, True),
    (".png", lambda: _rand((13, 17), np.uint8), "gray", 8, False, True),
    (".png", lambda: _rand((13, 17, 4), np.uint8), "rgb", 8, True, True),
    (".png", lambda: _rand((13, 17, 3), np.uint16), "rgb", 16, False, True),
    (".png", lambda: _rand((13, 17), np.uint16), "gray", 16, False, True),
    (".png", lambda: _rand((13, 17, 4), np.uint16), "rgb", 16, True, True),
    (".tiff", lambda: _rand((11, 9, 3), np.uint8), "rgb", 8, False, True),
    (".tif", lambda: _rand((11, 9, 3), np.uint16), "rgb", 16, False, True),
    (".tiff", lambda: _rand((11, 9), np.uint16), "gray", 16, False, True),
    (".tiff", lambda: _rand((11, 9, 4), np.uint16), "rgb", 16, True, True),
    (".bmp", lambda: _rand((10, 6, 3), np.uint8), "rgb", 8, False, True),
    (".bmp", lambda: _rand((10, 6), np.uint8), "gray", 8, False, True),
    (".jpg", lambda: _smooth(24, 32, 3, np.uint8), "rgb", 8, False, False),
    (".jpeg", lambda: _smooth(24, 32, 1, np.uint8), "gray", 8, False, False),
    (".webp", lambda: _smooth(24, 32, 3, np.uint8), "rgb", 8, False, False),
    (".webp", lambda: _smooth(24, 32, 4, np.uint8), "rgb", 8, True, False),
]


@pytest.mark.parametrize("suffix,make,mode,depth,alpha,lossless", CASES)
def test_round_trip(tmp_path: Path, suffix: str, make, mode: str, depth: int, alpha: bool, lossless: bool) -> None:
    arr = make()
    src = tmp_path / f"in{suffix}"
    assert cv2.imwrite(str(src), arr)
    img = read_image(src)
    assert img.info.mode == mode
    assert img.info.bit_depth == depth
    assert img.info.has_alpha == alpha and (img.alpha is not None) == alpha
    assert img.rgb.shape == (arr.shape[0], arr.shape[1], 3) and img.rgb.dtype == np.float32
    assert 0.0 <= img.rgb.min() and img.rgb.max() <= 1.0
    if mode == "gray":
        assert np.array_equal(img.rgb[..., 0], img.rgb[..., 2])

    dst = tmp_path / f"out{suffix}"
    written = write_image(dst, img.rgb, img.alpha, img.info)
    assert (written.mode, written.bit_depth, written.has_alpha) == (mode, depth, alpha)
    back = cv2.imread(str(dst), cv2.IMREAD_UNCHANGED)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    if lossless:
        assert np.array_equal(back, arr)
    else:
        assert np.abs(back.astype(float) - arr.astype(float)).mean() < 3.0
    again = read_image(dst)
    assert (again.info.mode, again.info.bit_depth, again.info.has_alpha) == (mode, depth, alpha)


def test_gray_alpha_png_stays_gray(tmp_path: Path) -> None:
    la = _rand((9, 8, 2), np.uint8)
    src = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(src)
    img = read_image(src)
    assert img.info.mode == "gray" and img.info.has_alpha
    assert np.allclose(img.alpha, la[..., 1] / 255.0)
    dst = tmp_path / "la_out.png"
    write_image(dst, img.rgb, img.alpha, img.info)
    with Image.open(dst) as im:
        assert im.mode == "LA"
        assert np.array_equal(np.asarray(im), la)


def test_float_tiff_reads_as_32_bit(tmp_path: Path) -> None:
    arr = RNG.random((5, 6, 3)).astype(np.float32)
    src = tmp_path / "f.tiff"
    cv2.imwrite(str(src), arr)
    img = read_image(src)
    assert img.info.bit_depth == 32
    assert np.allclose(img.rgb, arr[..., ::-1], atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    arr = _smooth(12, 20, 3, np.uint8)
    arr[:3, :5] = (255, 0, 0)  # a corner marker makes every orientation distinguishable
    im = Image.fromarray(arr, "RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "o.jpg"
    im.save(src, quality=100, exif=exif)
    img = read_image(src)
    assert img.info.orientation == orientation
    with Image.open(src) as ref_im:
        ref = np.asarray(ImageOps.exif_transpose(ref_im).convert("RGB")).astype(np.float32) / 255
    assert img.rgb.shape == ref.shape
    assert np.abs(img.rgb - ref).max() < 3 / 255
    expected_hw = (20, 12) if orientation >= 5 else (12, 20)
    assert (img.info.height, img.info.width) == expected_hw


def test_apply_orientation_on_arrays() -> None:
    a = np.arange(6).reshape(2, 3)
    assert np.array_equal(apply_orientation(a, 6), np.array([[3, 0], [4, 1], [5, 2]]))  # 90° clockwise
    assert np.array_equal(apply_orientation(a, 8), np.array([[2, 5], [1, 4], [0, 3]]))
    assert np.array_equal(apply_orientation(a, 3), a[::-1, ::-1])


def test_corrupt_and_missing_files_raise_image_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(ImageError, match="bad.png"):
        read_image(bad)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(empty)
    with pytest.raises(ImageError, match="cannot read"):
        read_image(tmp_path / "missing.png")
    truncated = tmp_path / "trunc.png"
    ok, buf = cv2.imencode(".png", _rand((40, 40, 3), np.uint8))
    truncated.write_bytes(buf.tobytes()[:60])
    with pytest.raises(ImageError):
        read_image(truncated)


def test_an_image_over_max_pixels_is_refused_from_its_header_alone(tmp_path: Path, monkeypatch) -> None:
    """A PNG that claims 40 gigapixels is refused without Pillow loading (allocating) its pixels."""
    from PIL import ImageFile

    from tests.test_hostile_inputs import _png_header_bomb

    (tmp_path / "bomb.png").write_bytes(_png_header_bomb(200_000, 200_000))

    loads = []

    def no_load(self):  # recorded, as the header reader catches what a broken file raises
        loads.append(self.size)
        raise OSError("pixels not loaded in this test")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    with pytest.raises(ImageError, match="200000×200000 = 40,000,000,000 pixels"):
        read_image(tmp_path / "bomb.png", max_pixels=10**8)
    assert loads == []


def test_write_is_atomic_and_rejects_unknown_suffix(tmp_path: Path) -> None:
    rgb = RNG.random((4, 5, 3)).astype(np.float32)
    info = read_image(_save(tmp_path / "x.png", _rand((4, 5, 3), np.uint8))).info
    write_image(tmp_path / "sub" / "y.png", rgb, None, info)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["y.png"]  # no temp file left behind
    with pytest.raises(ImageError, match="unsupported image type"):
        write_image(tmp_path / "y.gif", rgb, None, info)
    assert not (tmp_path / "y.gif").exists()


def test_output_info_downgrades_to_what_the_format_holds(tmp_path: Path) -> None:
    info = read_image(_save(tmp_path / "a.png", _rand((4, 4, 4), np.uint16))).info
    jpg = output_info(info, "jpeg", 8, 8)
    assert (jpg.bit_depth, jpg.has_alpha, jpg.mode) == (8, False, "rgb")
    assert output_info(info, "tiff", 8, 8).bit_depth == 16
    gray = read_image(_save(tmp_path / "g.png", _rand((4, 4), np.uint8))).info
    assert output_info(gray, "webp", 4, 4).mode == "rgb"  # WebP has no gray mode
    assert is_image_path("a/B.JPG") and not is_image_path("notes.txt")


def test_jpeg_quality_is_95(tmp_path: Path) -> None:
    arr = _rand((32, 32, 3), np.uint8)
    img = read_image(_save(tmp_path / "n.png", arr))
    write_image(tmp_path / "n.jpg", img.rgb, None, img.info)
    ok, ref = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert (tmp_path / "n.jpg").read_bytes() == ref.tobytes()


def _save(path: Path, arr: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), arr)
    return path



def test_icc_profile_and_exif_are_kept_with_the_orientation_reset(tmp_path):
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: read upright
    exif[0x010F] = "Canon"
    exif.get_ifd(0x8769)[0xA002] = 18  # pixel width: no longer true after x4, dropped
    src = tmp_path / "in.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 18, 3), dtype=np.uint8)).save(
        src, exif=exif.tobytes(), icc_profile=icc)
    img = read_image(src)
    for name in ("o.png", "o.jpg", "o.webp", "o.tiff", "o16.png"):
        info = replace(img.info, bit_depth=16) if name == "o16.png" else img.info
        write_image(tmp_path / name, img.rgb, img.alpha, info)
        with Image.open(tmp_path / name) as im:
            assert im.info.get("icc_profile") == icc and im.size == (20, 18), name
            if name != "o.tiff":  # TIFF keeps the profile only
                e = im.getexif()
                assert e.get(0x0112) == 1 and e.get(0x010F) == "Canon" and 0xA002 not in e.get_ifd(0x8769), name
        assert cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED).shape[:2] == (18, 20), name
    gray_icc = icc[:16] + b"GRAY" + icc[20:]  # a gray profile cannot describe the RGB WebP a gray PNG becomes
    Image.fromarray(np.full((6, 6), 90, np.uint8), "L").save(tmp_path / "g.png", icc_profile=gray_icc)
    gray = read_image(tmp_path / "g.png")
    for name, kept in (("g_out.png", True), ("g_out.webp", False)):
        write_image(tmp_path / name, gray.rgb, gray.alpha, gray.info)
        with Image.open(tmp_path / name) as im:
            assert (im.info.get("icc_profile") == gray_icc) == kept, name
