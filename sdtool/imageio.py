"""Read and write images for `sdtool upscale` / `sdtool downscale` without losing what the file was.

Decoding and encoding go through OpenCV (16-bit PNG/TIFF, alpha, every format we accept). Pillow (a
dependency of `imageio`) only peeks at the header (EXIF orientation, ICC profile, frame count; grayscale,
which OpenCV expands to BGRA with alpha) and writes 8-bit gray+alpha, which OpenCV cannot encode.

Contract:
    read_image(path) -> LoadedImage(rgb, alpha, info, notes)
        rgb:   numpy float32 H×W×3 in [0, 1] (gray files are replicated to three channels)
        alpha: numpy float32 H×W in [0, 1], or None
        info:  ImageInfo (mode "gray"/"rgb", bit depth, format, EXIF orientation that was applied, metadata)
        notes: e.g. that an animation or multi-page file had more frames than the first, which is used
    write_image(path, rgb, alpha, info) restores the mode, bit depth, alpha, ICC profile and EXIF of `info` as
    far as the output format allows (`sdtool.metadata`), and writes atomically (the one writer, `sdtool.files`).

Gray output is the BT.601 luminance 0.299 R + 0.587 G + 0.114 B of the model's RGB output (the same
weights as OpenCV's RGB2GRAY); for a gray input the model output is nearly gray, so this is close to
the channel average, but it is the standard choice for genuinely coloured pixels.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from sdtool.errors import ImageError
from sdtool.files import write_bytes_atomic
from sdtool.metadata import Metadata, embed_metadata, read_metadata
from sdtool.quiet import quiet_stderr
from sdtool.tiff import encode_tiff_with_alpha, read_rgba8_tiff

PathLike = Union[str, "os.PathLike[str]"]

# Suffix (lower case) -> format name. The keys are also the files folder discovery picks up.
IMAGE_SUFFIXES: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".jpe": "jpeg",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".bmp": "bmp",
}

# What each format can hold: bit depths and whether it carries an alpha channel / a gray mode.
_DEPTHS: dict[str, tuple[int, ...]] = {
    "png": (8, 16),
    "tiff": (8, 16, 32),
    "jpeg": (8,),
    "webp": (8,),
    "bmp": (8,),
}
_HAS_ALPHA = {"png", "tiff", "webp", "bmp"}
_HAS_GRAY = {"png", "tiff", "jpeg", "bmp"}  # libwebp has no gray mode

_GRAY_PIL_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_EXIF_ORIENTATION = 0x0112

JPEG_QUALITY = 95
WEBP_QUALITY = 95

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601, RGB order


@dataclass(frozen=True)
class ImageInfo:
    """What a file held, so that the output can be written the same way.

    mode: "gray" or "rgb"; bit_depth: 8, 16 (integer samples) or 32 (float TIFF); format: "png", "jpeg",
    "webp", "tiff" or "bmp"; has_alpha: the file had an alpha channel; orientation: the EXIF orientation
    tag (1..8, 1 = none) that was applied while reading, so pixels are upright; height/width: upright size;
    metadata: the ICC profile and EXIF (orientation reset) that outputs keep (`sdtool.metadata`).
    """

    mode: str
    bit_depth: int
    format: str
    has_alpha: bool
    orientation: int
    height: int
    width: int
    metadata: Metadata = Metadata()


@dataclass(frozen=True)
class LoadedImage:
    """rgb: float32 H×W×3 in [0, 1]; alpha: float32 H×W in [0, 1] or None; info: see ImageInfo; notes: what the
    reader did that the user should hear of (only the first frame of an animation or multi-page file used)."""

    rgb: np.ndarray
    alpha: Optional[np.ndarray]
    info: ImageInfo
    notes: tuple[str, ...] = ()


def is_image_path(path: PathLike) -> bool:
    """True when the suffix names a format we read (the file itself is not opened)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def format_of(path: PathLike) -> str:
    """Format name from the suffix; raises ImageError for a suffix we cannot write."""
    suffix = Path(path).suffix.lower()
    try:
        return IMAGE_SUFFIXES[suffix]
    except KeyError:
        known = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ImageError(f"{path}: unsupported image type {suffix or '(no suffix)'!r}; use one of {known}") from None


# ----------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class _Header:
    """What Pillow reads from a file's header without decoding the pixels."""

    mode: Optional[str] = None
    orientation: int = 1
    size: Optional[tuple[int, int]] = None  # (width, height)
    frames: int = 1
    metadata: Metadata = Metadata()


def _frames(im: "object") -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - a broken frame table: the first frame is still what we decode
        return 1


def _peek_header(data: bytes, max_pixels: Optional[int] = None) -> _Header:
    """Mode, EXIF orientation 1..8, size, frame count and metadata, without decoding the pixels.

    An image over max_pixels gets its mode and size only: Pillow's getexif loads a PNG's pixels to look for an
    eXIf chunk after them, which for a decompression bomb means allocating all of its claimed pixels."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with imageio
        return _Header()
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read here; our own limit applies (read_image)
    try:
        with Image.open(io.BytesIO(data)) as im:
            size = (int(im.size[0]), int(im.size[1]))
            if max_pixels is not None and size[0] * size[1] > max_pixels:
                return _Header(im.mode, 1, size)
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
            except Exception:  # a broken EXIF block must not make a readable image unreadable
                orientation = 1
            return _Header(im.mode, orientation if 1 <= orientation <= 8 else 1, size, _frames(im), read_metadata(im))
    except Exception:
        return _Header()
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _pixels(n: int) -> str:
    """A pixel count as people read it: "16,384 pixels", "40,000,000,000 pixels (40000.0 MP)"."""
    return f"{n:,} pixels" + (f" ({n / 1e6:.1f} MP)" if n >= 1_000_000 else "")


def _check_pixels(path: Path, width: int, height: int, max_pixels: Optional[int]) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"{path}: {width}×{height} = {_pixels(width * height)}, over the limit of "
                         f"{_pixels(max_pixels)} (raise {{max_pixels}} to process it)", ("max_pixels",))


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an H×W[×C] array stored with EXIF `orientation` upright (the same maps as Pillow's
    ImageOps.exif_transpose)."""
    if orientation == 2:
        out = arr[:, ::-1]
    elif orientation == 3:
        out = arr[::-1, ::-1]
    elif orientation == 4:
        out = arr[::-1]
    elif orientation == 5:
        out = arr.swapaxes(0, 1)
    elif orientation == 6:
        out = np.rot90(arr, -1)
    elif orientation == 7:
        out = np.rot90(arr, 2).swapaxes(0, 1)
    elif orientation == 8:
        out = np.rot90(arr, 1)
    else:
        out = arr
    return np.ascontiguousarray(out)


def _to_float(arr: np.ndarray, path: PathLike) -> tuple[np.ndarray, int]:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 8
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0, 16
    if arr.dtype == np.float32 or arr.dtype == np.float64:
        return np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0), 32
    raise ImageError(f"{path}: unsupported sample type {arr.dtype} (8-bit, 16-bit or float images only)")


def read_image(path: PathLike, max_pixels: Optional[int] = None) -> LoadedImage:
    """Decode an image file; EXIF orientation applied; see the module docstring for the contract.

    max_pixels: refuse (ImageError) an image with more pixels, from its header, before decoding.
    Raises ImageError (naming the file) when it cannot be read or decoded. Decoder warnings (libpng,
    libtiff) are kept off the terminal; a failed decode names the first of them."""
    path = Path(path)
    fmt = IMAGE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ImageError(f"{path}: not an image file we read (suffix {path.suffix or 'missing'})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not data:
        raise ImageError(f"{path}: empty file")
    header = _peek_header(data, max_pixels)
    if header.size is not None:
        _check_pixels(path, *header.size, max_pixels)
    orientation = header.orientation
    arr = _decode(data, path, fmt, max_pixels)
    gray = arr.shape[2] in (1, 2) or (header.mode in _GRAY_PIL_MODES)
    color, alpha_raw = _split_channels(arr, gray, path)
    color_f, depth = _to_float(color, path)
    color_f = apply_orientation(color_f, orientation)
    rgb = np.ascontiguousarray(np.repeat(color_f, 3, axis=2) if color_f.shape[2] == 1 else color_f)
    alpha: Optional[np.ndarray] = None
    if alpha_raw is not None:
        alpha = apply_orientation(_to_float(alpha_raw, path)[0], orientation)
    info = ImageInfo(mode="gray" if gray else "rgb", bit_depth=depth, format=fmt, has_alpha=alpha is not None,
                     orientation=orientation, height=rgb.shape[0], width=rgb.shape[1], metadata=header.metadata)
    notes = (f"{header.frames} frames (animated or multi-page): only the first is used",) if header.frames > 1 else ()
    return LoadedImage(rgb=rgb, alpha=alpha, info=info, notes=notes)


def _decode(data: bytes, path: Path, fmt: str, max_pixels: Optional[int]) -> np.ndarray:
    """OpenCV decode (H×W×C, C ≥ 1) with its warnings caught; 8-bit RGBA TIFF through `read_rgba8_tiff`."""
    import cv2

    with quiet_stderr() as said:
        try:
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            arr = None
    if arr is None or arr.size == 0:
        why = f": {said[0]}" if said else ""
        raise ImageError(f"{path}: cannot decode (corrupt or not a {fmt.upper()} image){why}")
    _check_pixels(path, arr.shape[1], arr.shape[0], max_pixels)
    if fmt == "tiff" and arr.ndim == 3 and arr.shape[2] == 4 and arr.dtype == np.uint8:
        arr = read_rgba8_tiff(data, arr)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _split_channels(arr: np.ndarray, gray: bool, path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """OpenCV's channels (gray, gray+alpha, BGR, BGRA) → (colour H×W×1 or RGB H×W×3, alpha H×W or None)."""
    channels = arr.shape[2]
    if channels == 1:
        return arr[:, :, :1], None
    if channels == 2:
        return arr[:, :, :1], arr[:, :, 1]
    if channels in (3, 4):
        color = arr[:, :, :1] if gray else arr[:, :, 2::-1]  # BGR -> RGB
        return color, (arr[:, :, 3] if channels == 4 else None)
    raise ImageError(f"{path}: unsupported channel count {channels}")


# ----------------------------------------------------------------------------------------- writing
def image_tensor(rgb: np.ndarray) -> Any:
    """An H×W×3 image in [0, 1] (what `read_image` gives) as the float32 1×3×H×W CPU tensor the models take: the
    one image-to-tensor step of the package."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0).contiguous()


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an H×W×3 float array → H×W float32."""
    r, g, b = LUMA_WEIGHTS
    return (rgb[..., 0] * r + rgb[..., 1] * g + rgb[..., 2] * b).astype(np.float32)


def quantize(x: np.ndarray, depth: int) -> np.ndarray:
    """[0, 1] float → rounded integers of `depth` bits (or clipped float32 for 32), in place on one temporary (no
    extra full-size copies). uint8/uint16 input: returned as it is in its own depth, rescaled to the other."""
    if x.dtype in (np.uint8, np.uint16):
        want = np.uint8 if depth == 8 else np.uint16 if depth == 16 else None
        if x.dtype == want:
            return x
        x = x.astype(np.float32) / np.iinfo(x.dtype).max
    if depth == 32:
        tmp = np.array(x, dtype=np.float32, copy=True)
        np.nan_to_num(tmp, copy=False)
        return np.clip(tmp, 0.0, 1.0, out=tmp)
    peak = 255.0 if depth == 8 else 65535.0
    tmp = np.multiply(x, peak, dtype=np.float32)
    np.nan_to_num(tmp, copy=False)
    tmp += 0.5
    np.clip(tmp, 0.0, peak, out=tmp)
    return tmp.astype(np.uint8 if depth == 8 else np.uint16)


def output_info(info: ImageInfo, fmt: str, height: int, width: int) -> ImageInfo:
    """What will actually be written in format `fmt`: the input's mode, depth and alpha where the
    format holds them, otherwise the nearest it does (JPEG: 8-bit, no alpha; WebP: no gray)."""
    depths = _DEPTHS[fmt]
    depth = info.bit_depth if info.bit_depth in depths else (16 if info.bit_depth == 32 and 16 in depths else 8)
    mode = info.mode if (info.mode == "rgb" or fmt in _HAS_GRAY) else "rgb"
    has_alpha = info.has_alpha and fmt in _HAS_ALPHA
    if mode == "gray" and has_alpha and fmt not in ("png", "tiff"):
        mode = "rgb"  # only PNG/TIFF have gray+alpha (written through Pillow, 8-bit)
    if mode == "gray" and has_alpha:
        depth = 8  # Pillow writes gray+alpha ("LA") at 8 bits only
    return replace(info, format=fmt, bit_depth=depth, mode=mode, has_alpha=has_alpha, height=height, width=width)


def encode_image(rgb: np.ndarray, alpha: Optional[np.ndarray], info: ImageInfo,
                 quality: Optional[int] = None) -> bytes | memoryview:
    """Encode RGB (H×W×3 float in [0, 1], or uint8/uint16) and alpha (H×W or None) as `info` says (use
    `output_info` first); quality: JPEG / WebP quality 1-100 (default JPEG_QUALITY / WEBP_QUALITY). Returns the
    encoded file (bytes-like)."""
    import cv2

    fmt = info.format
    if info.mode == "gray":
        if rgb.dtype in (np.uint8, np.uint16):  # luma needs [0, 1] floats
            rgb = rgb.astype(np.float32) / np.iinfo(rgb.dtype).max
        color = quantize(luminance(rgb), info.bit_depth)[:, :, None]
    else:
        color = quantize(rgb, info.bit_depth)[:, :, ::-1]  # RGB -> BGR
    if info.has_alpha and alpha is not None:
        a = quantize(alpha, info.bit_depth)[:, :, None]
        if fmt == "tiff" and info.bit_depth in (8, 16):  # with the ExtraSamples tag OpenCV leaves out
            color_rgb = color if info.mode == "gray" else color[:, :, ::-1]
            return encode_tiff_with_alpha(np.concatenate([color_rgb, a], axis=2))
        if info.mode == "gray":
            return _encode_gray_alpha(color[:, :, 0], a[:, :, 0], fmt)
        arr = np.concatenate([color, a], axis=2)
    else:
        arr = color[:, :, 0] if info.mode == "gray" else color
    arr = np.ascontiguousarray(arr)
    ext = {"jpeg": ".jpg", "tiff": ".tiff"}.get(fmt, "." + fmt)
    params: list[int] = []
    if fmt == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality or JPEG_QUALITY]
    elif fmt == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality or WEBP_QUALITY]
    try:
        ok, buf = cv2.imencode(ext, arr, params)
    except cv2.error as exc:
        raise ImageError(f"cannot encode {fmt.upper()}: {exc}") from None
    if not ok:
        raise ImageError(f"cannot encode {fmt.upper()}")
    return buf.data  # a memoryview, no copy: an encoded 100+ MP photo is hundreds of MB


def _encode_gray_alpha(gray: np.ndarray, alpha: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    im = Image.fromarray(np.stack([gray, alpha], axis=2), "LA")
    bio = io.BytesIO()
    im.save(bio, "PNG" if fmt == "png" else "TIFF")
    return bio.getvalue()


def write_rgb8_png(path: PathLike, rgb: np.ndarray) -> None:
    """Write an H×W×3 uint8 RGB array (a sheet, a cached output) as PNG, atomically; WriteError when the file
    system refuses."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:  # pragma: no cover - only for invalid arrays
        raise ImageError(f"{path}: cannot encode PNG")
    write_bytes_atomic(path, buf.data)


def write_image(path: PathLike, rgb: np.ndarray, alpha: Optional[np.ndarray], info: ImageInfo,
                quality: Optional[int] = None) -> ImageInfo:
    """Write float RGB H×W×3 in [0, 1] (or uint8 / uint16 RGB already quantised; + alpha H×W) to `path` (format
    from its suffix), restoring the mode / bit depth / alpha of the input `info` as far as the format allows;
    quality: JPEG / WebP quality (1-100, default 95). Atomic. Returns what was written. Raises ImageError on an
    unsupported suffix or an encoding failure, WriteError when the file system refuses (full, read-only, name
    too long)."""
    path = Path(path)
    fmt = format_of(path)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"{path}: expected an H×W×3 array, got shape {tuple(rgb.shape)}")
    out_info = output_info(info, fmt, rgb.shape[0], rgb.shape[1])
    try:
        data = encode_image(rgb, alpha, out_info, quality)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None
    write_bytes_atomic(path, embed_metadata(data, fmt, info.metadata, mode=out_info.mode, width=out_info.width,
                                            height=out_info.height, has_alpha=out_info.has_alpha))
    return out_info


def image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) of an image file as `read_image` returns it (EXIF orientation applied), from its header;
    ImageError when the header cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    header = _peek_header(data)
    if header.size is None:
        raise ImageError(f"{path}: not a readable image header")
    w, h = header.size
    return (w, h) if header.orientation in (5, 6, 7, 8) else (h, w)  # 5-8 turn the image by a quarter
