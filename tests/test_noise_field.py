"""Per-block noise fields (infer/noise.py): any region is made alone, equal to the same region of the whole."""

from __future__ import annotations

import torch

from sdtool.infer.noise import BLOCK, NoiseField, draw_seed


def test_any_cut_equals_the_same_region_of_the_whole_field():
    f = NoiseField(seed=123, channels=5, height=2 * BLOCK + 17, width=BLOCK + 3)
    whole = f.full()
    assert whole.shape == (1, 5, 2 * BLOCK + 17, BLOCK + 3)
    for y0, x0, h, w in [(0, 0, 1, 1), (BLOCK - 2, BLOCK - 1, 5, 4), (10, 0, 2 * BLOCK, BLOCK + 3), (2 * BLOCK + 16,
                                                                                                     BLOCK + 2, 1, 1)]:
        assert torch.equal(f.cut(y0, x0, h, w), whole[:, :, y0: y0 + h, x0: x0 + w])


def test_fields_are_standard_normal_and_seeds_differ():
    a = NoiseField(1, 45, 200, 150).full()
    b = NoiseField(2, 45, 200, 150).full()
    assert abs(a.mean().item()) < 0.01 and abs(a.std().item() - 1) < 0.01
    assert not torch.equal(a, b)
    # Blocks are not copies of each other.
    assert not torch.equal(a[:, :, :BLOCK, :BLOCK], a[:, :, BLOCK: 2 * BLOCK, :BLOCK])
    # A field's content does not depend on its size: a bigger field of the same seed extends it.
    assert torch.equal(NoiseField(1, 45, 300, 300).cut(0, 0, 200, 150), a)


def test_regions_outside_are_refused_and_seeds_are_drawn_in_order():
    f = NoiseField(0, 3, 10, 10)
    try:
        f.cut(5, 5, 6, 1)
    except ValueError as exc:
        assert "outside" in str(exc)
    else:
        raise AssertionError("no error")
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert [draw_seed(g1) for _ in range(3)] == [draw_seed(g2) for _ in range(3)]
