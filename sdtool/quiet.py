"""Keep C libraries' warnings (libpng's "iCCP: known incorrect sRGB profile", libtiff's tag notes) off the
terminal: they bypass Python and would land between our one-line messages."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 while the block runs; yields a list that receives the lines written."""
    said: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to hide
        yield said
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            said.extend(_tidy(line) for line in text.splitlines() if line.strip())


def _tidy(line: str) -> str:
    """OpenCV's "[ WARN:0@0.3] global grfmt_png.cpp:793 readFromStreamOrBuffer PNG input buffer is incomplete"
    → "PNG input buffer is incomplete"."""
    m = re.match(r"^\[\s*\w+:[^\]]*\]\s+global\s+\S+:\d+\s+\S+\s+(.*)$", line.strip())
    return m.group(1) if m else line.strip()
