import os

import pytest
import torch

# Small models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP threads that
# spin-wait for each other made single tests up to 100x slower: one thread keeps the suite fast and stable.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def tiny_model():
    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow

    torch.manual_seed(0)
    return SDFlow(PRESETS["tiny"]).eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """The seeded `tiny` SDFlow saved as a checkpoint, for CLI runs and subprocesses."""
    from sdtool.checkpoint import save_model
    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_model(SDFlow(PRESETS["tiny"]).eval(), path)
    return path
