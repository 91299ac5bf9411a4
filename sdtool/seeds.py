"""The one seed rule of the package: every random stream is seeded from a hash of what it belongs to.

  inference  sample k of an image file depends only on (seed, the file's name relative to the input root, k,
             the image): one CPU `torch.Generator` per file, seeded with `file_seed(seed, rel)`, draws the
             randomness of its samples in order (`sdtool.infer.sampling.draw`). `upscale`, `downscale`,
             `sample-degradation`, `make-pairs` and `benchmark` (the LR file of each pair for SR, its HR file for
             downscaling) follow it, so `upscale x.png --seed S` reproduces what `benchmark --seed S` drew for x.
  training   `stable_seed(what, seed, step, …)`: the same in every process, so a resumed run draws what an
             uninterrupted one would.
No seed given: `resolve_seed` picks one at random (reported, so the run can be repeated).
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import PurePath
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    import torch

_MASK = (1 << 63) - 1


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") & _MASK


def resolve_seed(seed: Optional[int]) -> int:
    """`seed`, or a random 31-bit one when None."""
    return secrets.randbits(31) if seed is None else int(seed)


def file_seed(seed: int, rel: PurePath) -> int:
    """The seed of a file's generator: from the base seed and its path relative to the input root (posix), so its
    samples do not depend on which other files are in the run."""
    # surrogateescape: a name that is not UTF-8 (bytes from another system) seeds by its bytes
    return _hash(f"{seed}\0{rel.as_posix()}".encode("utf-8", "surrogateescape"))


def file_generator(seed: int, rel: PurePath) -> "torch.Generator":
    """The CPU generator that draws the samples of the file `rel`, in order (see the module docstring)."""
    import torch

    return torch.Generator().manual_seed(file_seed(seed, rel))


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from `parts` that is the same in every process (Python's hash() of a string is not)."""
    return _hash(repr(parts).encode())
