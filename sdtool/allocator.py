"""Let the C allocator keep freed memory for reuse (glibc): fewer page faults for large tensors.

glibc serves an allocation above its mmap threshold (128 KiB, raised as large blocks are freed, at most 32 MiB)
with fresh pages from the kernel and gives them back on free. PyTorch on the CPU allocates and frees an
activation-sized buffer for nearly every operation, so each one is faulted in and zeroed by the kernel again:
`sdtool upscale` of a 384² image took 1.2–1.4 million page faults and 3.4–3.9 of its 13 CPU-seconds in the kernel.
With mmap off and a 1 GiB trim threshold the freed pages stay in the heap and are reused: 1.3× faster there, 1.5×
on a folder of photos, at a higher peak RSS (README "Speed and memory").
"""

from __future__ import annotations

import ctypes
import os

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # free heap above this is still returned to the kernel
ENV = "SDTOOL_MALLOC"  # "system": leave the allocator as it is


def is_glibc() -> bool:
    """Whether this process runs on glibc (asked of the C library itself, not guessed from the executable)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name (other C libraries)
        return False


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep up to 1 GiB of freed memory; process-wide, for
    programs that run PyTorch on the CPU (sdtool's command line calls it at start). True if applied; False on
    other C libraries or platforms, or with SDTOOL_MALLOC=system."""
    if os.environ.get(ENV, "").strip().lower() == "system" or not is_glibc():
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. The trim threshold first: with it, even a refused mmap setting helps.
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_MAX, 0))
