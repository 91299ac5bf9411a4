"""The one padder against numpy's mirror modes, for every small size and a pad longer than the image."""

import numpy as np
import pytest
import torch

from sdtool.padding import pad_to, padded_size


@pytest.mark.parametrize("mult,minimum", [(1, 2), (8, 16), (2, 2), (1, 8), (3, 13)])
def test_pad_to_matches_numpy_reflect_and_symmetric(mult, minimum):
    g = torch.Generator().manual_seed(0)
    for h in range(1, 8):
        for w in range(1, 8):
            x = torch.rand(1, 2, h, w, generator=g)
            th, tw = padded_size(h, mult, minimum), padded_size(w, mult, minimum)
            mode = "symmetric" if min(h, w) == 1 else "reflect"  # a 1-px side has nothing to reflect
            want = np.pad(x.numpy(), ((0, 0), (0, 0), (0, th - h), (0, tw - w)), mode=mode)
            got = pad_to(x, mult, minimum)
            assert got.shape == (1, 2, th, tw) and np.array_equal(got.numpy(), want), (h, w, mult, minimum)


def test_pad_to_leaves_a_fitting_image_alone():
    x = torch.rand(1, 3, 16, 24)
    assert pad_to(x, 8, 16) is x
