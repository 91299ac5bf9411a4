"""TIFF with alpha, written and read so that colours survive the round trip.

OpenCV writes 4-channel TIFFs without the ExtraSamples tag (other readers then guess what the fourth
channel is) and reads 8-bit RGBA TIFFs through libtiff's RGBA interface, which multiplies the colours by
alpha. So TIFFs with alpha are written here (baseline TIFF 6.0, one Deflate strip, ExtraSamples = 2,
"unassociated alpha") and 8-bit ones are read through Pillow, which keeps straight colours.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

_SHORT, _LONG = 3, 4
_DEFLATE = 8
_UNASSOCIATED_ALPHA = 2


def encode_tiff_with_alpha(arr: np.ndarray) -> bytes:
    """arr: H×W×2 (gray, alpha) or H×W×4 (R, G, B, alpha), uint8 or uint16 → TIFF file bytes."""
    if arr.ndim != 3 or arr.shape[2] not in (2, 4) or arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected H×W×2 or H×W×4 uint8/uint16, got {arr.shape} {arr.dtype}")
    h, w, c = arr.shape
    bits = 8 * arr.dtype.itemsize
    strip = zlib.compress(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes(), 6)
    bits_at = 8  # BitsPerSample values, when they do not fit in the entry
    data_at = bits_at + 2 * c
    ifd_at = data_at + len(strip) + (data_at + len(strip)) % 2
    bits_value = struct.pack(f"<{c}H", *([bits] * c))
    entries = [
        (256, _LONG, 1, struct.pack("<I", w)),
        (257, _LONG, 1, struct.pack("<I", h)),
        (258, _SHORT, c, bits_value if c <= 2 else struct.pack("<I", bits_at)),
        (259, _SHORT, 1, struct.pack("<HH", _DEFLATE, 0)),
        (262, _SHORT, 1, struct.pack("<HH", 2 if c == 4 else 1, 0)),  # RGB / BlackIsZero
        (273, _LONG, 1, struct.pack("<I", data_at)),
        (277, _SHORT, 1, struct.pack("<HH", c, 0)),
        (278, _LONG, 1, struct.pack("<I", h)),
        (279, _LONG, 1, struct.pack("<I", len(strip))),
        (284, _SHORT, 1, struct.pack("<HH", 1, 0)),  # chunky
        (338, _SHORT, 1, struct.pack("<HH", _UNASSOCIATED_ALPHA, 0)),
    ]
    out = io.BytesIO()
    out.write(b"II" + struct.pack("<HI", 42, ifd_at))
    out.write(bits_value if c > 2 else b"\0" * (2 * c))
    out.write(strip)
    if out.tell() % 2:
        out.write(b"\0")
    out.write(struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        out.write(struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0"))
    out.write(struct.pack("<I", 0))  # no further IFD
    return out.getvalue()


def read_rgba8_tiff(data: bytes, fallback: np.ndarray) -> np.ndarray:
    """An 8-bit RGBA TIFF as OpenCV would give it (H×W×4 BGRA uint8) but with straight, not
    alpha-multiplied, colours; `fallback` (OpenCV's decode) when Pillow cannot read it."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            if im.mode != "RGBA":
                return fallback
            rgba = np.asarray(im)
    except Exception:  # noqa: BLE001 - OpenCV's decode is still a usable picture
        return fallback
    if rgba.shape[:2] != fallback.shape[:2]:
        return fallback
    return np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]])
