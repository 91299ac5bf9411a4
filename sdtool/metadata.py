"""What an image file says besides its pixels, kept from input to output: the ICC colour profile (without it a
wide-gamut photo shifts colour) and EXIF (camera, date, exposure).

EXIF is kept with its orientation reset to 1, because outputs are written upright, and without the pixel-size
tags (PixelXDimension / PixelYDimension), which no longer hold. The encoded output (OpenCV's or Pillow's bytes)
gets the metadata inserted at the byte level, with no re-encoding and no copy of the pixels:
  PNG   iCCP and eXIf chunks after IHDR;
  JPEG  APP1 "Exif" and APP2 "ICC_PROFILE" segments after SOI (and JFIF's APP0);
  WebP  the extended format (VP8X) with ICCP and EXIF chunks;
  TIFF  the ICC profile (tag 34675) in a rewritten first IFD; EXIF is not kept in TIFF;
  BMP   nothing (OpenCV writes the header version without a profile).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Optional, Union

Buffer = Union[bytes, bytearray, memoryview]

_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_PIXEL_SIZE_TAGS = (0xA002, 0xA003)
_JPEG_SEGMENT_MAX = 65533  # bytes of a JPEG segment's payload after its length field
_ICC_CHUNK = _JPEG_SEGMENT_MAX - 14  # "ICC_PROFILE\0" + sequence number + count
_TIFF_ICC_TAG = 34675


@dataclass(frozen=True)
class Metadata:
    """icc: the ICC profile as stored; exif: a TIFF-structured EXIF block (no "Exif\\0\\0" prefix) ready for the
    output, orientation 1. Either may be None."""

    icc: Optional[bytes] = None
    exif: Optional[bytes] = None


def read_metadata(im: Any) -> Metadata:
    """The ICC profile and EXIF of an opened Pillow image (header only); a broken EXIF block is dropped."""
    icc = im.info.get("icc_profile") or None
    return Metadata(icc=bytes(icc) if icc else None, exif=_upright_exif(im))


def _upright_exif(im: Any) -> Optional[bytes]:
    try:
        exif = im.getexif()
        if not len(exif):
            return None
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
        sub = exif.get_ifd(_EXIF_IFD)
        for tag in _PIXEL_SIZE_TAGS:
            sub.pop(tag, None)
        raw = exif.tobytes()
    except Exception:  # noqa: BLE001 - EXIF from the wild is often malformed; the image is still good
        return None
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


def _icc_fits(icc: bytes, mode: str) -> bool:
    """An ICC profile describes one colour space (header bytes 16..20): "RGB " or "GRAY" must be the output's.
    A gray profile on an RGB output (WebP has no gray) or a CMYK one (CMYK JPEG in, RGB out) is dropped."""
    return icc[16:20] == (b"GRAY" if mode == "gray" else b"RGB ")


def embed_metadata(data: Buffer, fmt: str, meta: Metadata, *, mode: str, width: int, height: int,
                   has_alpha: bool = False) -> list[Buffer]:
    """The encoded file `data` of format `fmt` (mode "rgb" or "gray", width × height) with `meta` inserted, as
    buffers to write one after the other."""
    if meta.icc is not None and not _icc_fits(meta.icc, mode):
        meta = Metadata(exif=meta.exif)
    if meta.icc is None and meta.exif is None:
        return [data]
    view = memoryview(data).cast("B")
    if fmt == "png":
        return _png(view, meta)
    if fmt == "jpeg":
        return _jpeg(view, meta)
    if fmt == "webp":
        return _webp(view, meta, width, height, has_alpha)
    if fmt == "tiff" and meta.icc is not None:
        return _tiff(view, meta.icc)
    return [data]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(view: memoryview, meta: Metadata) -> list[Buffer]:
    end_of_ihdr = 8 + 8 + struct.unpack(">I", view[8:12])[0] + 4  # signature, IHDR (length, type, data, CRC)
    extra = b""
    if meta.icc is not None:
        extra += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(meta.icc))
    if meta.exif is not None:
        extra += _png_chunk(b"eXIf", meta.exif)
    return [view[:end_of_ihdr], extra, view[end_of_ihdr:]]


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _jpeg(view: memoryview, meta: Metadata) -> list[Buffer]:
    at = 2  # after SOI; after JFIF's APP0 when there is one (it must come first)
    if bytes(view[2:4]) == b"\xff\xe0":
        at = 4 + struct.unpack(">H", view[4:6])[0]
    extra = b""
    if meta.exif is not None and len(meta.exif) + 6 <= _JPEG_SEGMENT_MAX:
        extra += _jpeg_segment(0xE1, b"Exif\x00\x00" + meta.exif)
    if meta.icc is not None:
        parts = [meta.icc[i: i + _ICC_CHUNK] for i in range(0, len(meta.icc), _ICC_CHUNK)]
        if len(parts) <= 255:
            for n, part in enumerate(parts, 1):
                extra += _jpeg_segment(0xE2, b"ICC_PROFILE\x00" + bytes([n, len(parts)]) + part)
    return [view[:at], extra, view[at:]]


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")


def _webp(view: memoryview, meta: Metadata, width: int, height: int, has_alpha: bool) -> list[Buffer]:
    """Simple (VP8 / VP8L) or extended (VP8X) WebP → extended, with ICCP after VP8X and EXIF at the end."""
    flags = (0x20 if meta.icc is not None else 0) | (0x08 if meta.exif is not None else 0)
    if bytes(view[12:16]) == b"VP8X":
        vp8x = bytearray(view[12:30])
        vp8x[8] |= flags
        body = view[30:]
    else:
        flags |= 0x10 if has_alpha else 0
        vp8x = bytearray(_riff_chunk(b"VP8X", struct.pack("<I", flags) + (width - 1).to_bytes(3, "little")
                                     + (height - 1).to_bytes(3, "little")))
        body = view[12:]
    icc = _riff_chunk(b"ICCP", meta.icc) if meta.icc is not None else b""
    exif = _riff_chunk(b"EXIF", meta.exif) if meta.exif is not None else b""
    size = 4 + len(vp8x) + len(icc) + len(body) + len(exif)
    return [b"RIFF" + struct.pack("<I", size) + b"WEBP", bytes(vp8x), icc, body, exif]


def _tiff(view: memoryview, icc: bytes) -> list[Buffer]:
    """Classic TIFF (either byte order): a copy of the first IFD with the ICC tag added, after the file; the
    header points at it. Other TIFFs (BigTIFF) are returned as they are."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(view[:2]))
    if order is None or struct.unpack(order + "H", view[2:4])[0] != 42:
        return [view]
    ifd_at = struct.unpack(order + "I", view[4:8])[0]
    count = struct.unpack(order + "H", view[ifd_at: ifd_at + 2])[0]
    entries = [bytes(view[ifd_at + 2 + 12 * i: ifd_at + 14 + 12 * i]) for i in range(count)]
    next_ifd = bytes(view[ifd_at + 2 + 12 * count: ifd_at + 6 + 12 * count])
    if any(struct.unpack(order + "H", e[:2])[0] == _TIFF_ICC_TAG for e in entries):
        return [view]
    pad = b"\x00" * (len(view) % 2)
    icc_at = len(view) + len(pad)
    icc_pad = b"\x00" * (len(icc) % 2)
    entries.append(struct.pack(order + "HHII", _TIFF_ICC_TAG, 7, len(icc), icc_at))  # 7: UNDEFINED bytes
    entries.sort(key=lambda e: struct.unpack(order + "H", e[:2])[0])
    new_ifd = struct.pack(order + "H", len(entries)) + b"".join(entries) + next_ifd
    header = bytes(view[:4]) + struct.pack(order + "I", icc_at + len(icc) + len(icc_pad))
    return [header, view[8:], pad, icc, icc_pad, new_ifd]
