"""The standard-normal noise of one sample, drawn per fixed block so that any part of it can be made alone.

A sample's latent noise (45 × h × w for x4 SR of an h × w image, 12 × H/8 × W/8 for downscaling) grows with the
image; drawn whole it was the largest buffer of a run on a big photo. A `NoiseField` holds only a seed: block
(i, j) of `BLOCK` × `BLOCK` noise pixels is drawn from its own generator, seeded from (seed, i, j), so a tile
makes just the noise it covers, and a tiled run sees exactly the noise an untiled one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BLOCK = 64  # noise pixels per block side: big enough that drawing stays cheap, small enough for small tiles


def _block_seed(seed: int, by: int, bx: int) -> int:
    """A generator seed for block (by, bx): a fixed mix of the three numbers (same in every process)."""
    m = (1 << 63) - 1
    h = (seed * 0x9E3779B97F4A7C15 + by * 0xC2B2AE3D27D4EB4F + bx * 0x165667B19E3779F9) & m
    h ^= h >> 29
    return (h * 0xBF58476D1CE4E5B9) & m


@dataclass(frozen=True)
class NoiseField:
    """Standard-normal noise of shape 1 × channels × height × width, made block by block from `seed`."""

    seed: int
    channels: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, self.channels, self.height, self.width)

    def _block(self, by: int, bx: int) -> Tensor:
        g = torch.Generator().manual_seed(_block_seed(self.seed, by, bx))
        return torch.randn(self.channels, BLOCK, BLOCK, generator=g)

    def cut(self, y0: int, x0: int, h: int, w: int) -> Tensor:
        """Noise rows [y0, y0 + h) and columns [x0, x0 + w) as a 1×C×h×w tensor (must lie inside the field)."""
        if y0 < 0 or x0 < 0 or y0 + h > self.height or x0 + w > self.width:
            raise ValueError(f"noise region ({y0}, {x0}) {h}×{w} outside the {self.height}×{self.width} field")
        out = torch.empty(1, self.channels, h, w)
        for by in range(y0 // BLOCK, (y0 + h - 1) // BLOCK + 1):
            for bx in range(x0 // BLOCK, (x0 + w - 1) // BLOCK + 1):
                block = self._block(by, bx)
                ya, yb = max(y0, by * BLOCK), min(y0 + h, (by + 1) * BLOCK)
                xa, xb = max(x0, bx * BLOCK), min(x0 + w, (bx + 1) * BLOCK)
                out[0, :, ya - y0: yb - y0, xa - x0: xb - x0] = block[:, ya - by * BLOCK: yb - by * BLOCK,
                                                                      xa - bx * BLOCK: xb - bx * BLOCK]
        return out

    def full(self) -> Tensor:
        """The whole field as one tensor."""
        return self.cut(0, 0, self.height, self.width)


def draw_seed(generator: torch.Generator) -> int:
    """A 62-bit field seed drawn from `generator` (one draw per sample keeps samples independent of each other)."""
    return int(torch.randint(0, 1 << 62, (1,), generator=generator))
