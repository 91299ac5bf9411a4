import os

import pytest
import torch

# Small deterministic CPU runs: one thread keeps timings stable on 2-core CI machines.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_model():
    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow

    torch.manual_seed(0)
    return SDFlow(PRESETS["tiny"]).eval()
