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


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory):
    """A tiny training run of 2 iterations, checkpointed: (data folder, run folder). Tests copy it before changing
    it."""
    import numpy as np
    from typer.testing import CliRunner

    from sdtool.cli.app import app
    from tests.helpers import train_args, write_image_file

    d = tmp_path_factory.mktemp("saved")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_image_file(d / "lr" / f"{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        write_image_file(d / "hr" / f"{i}.png", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    res = CliRunner().invoke(app, train_args(d, d / "run", "--iters", "2"))
    assert res.exit_code == 0, res.output
    return d, d / "run"
