"""The one padder: an image padded at the bottom and right to a multiple of a size, with a minimum.

Mirror padding, as numpy's "reflect" (period 2(n−1), repeated when the pad is longer than the image) and, for an
image one pixel high or wide, numpy's "symmetric" on both axes (a 1-pixel side has nothing to reflect). Torch only,
on the tensor's device, so the model (`SDFlow`) and the tiled sampler (`sdtool.infer`) pad alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def padded_size(n: int, mult: int, minimum: int) -> int:
    """A side of n pixels padded to a multiple of `mult` and at least `minimum` (what `pad_to` gives)."""
    return max(minimum, math.ceil(n / mult) * mult)


def _mirror(x: Tensor, pad: int, dim: int, symmetric: bool) -> Tensor:
    """x with `pad` mirrored pixels appended along `dim` (2 or 3), however long the pad."""
    while pad > 0:
        n = x.shape[dim]
        take = min(pad, n if symmetric else n - 1)
        if symmetric:  # the edge pixel repeated, then the rest backwards
            tail = x.narrow(dim, n - take, take).flip(dim)
        else:  # the edge pixel not repeated
            tail = x.narrow(dim, n - 1 - take, take).flip(dim)
        x = torch.cat([x, tail], dim=dim)
        pad -= take
    return x


def pad_to(x: Tensor, mult: int, minimum: int) -> Tensor:
    """Pad B×C×h×w bottom/right so that h and w are multiples of `mult` and at least `minimum` (see the module)."""
    h, w = x.shape[2:]
    th, tw = padded_size(h, mult, minimum), padded_size(w, mult, minimum)
    if (th, tw) == (h, w):
        return x
    symmetric = min(h, w) == 1
    if not symmetric and th - h < h and tw - w < w:
        return F.pad(x, (0, tw - w, 0, th - h), mode="reflect")  # one pass: the common case
    return _mirror(_mirror(x, th - h, 2, symmetric), tw - w, 3, symmetric)
