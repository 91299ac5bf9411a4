"""Checkpoints: bit-exact round trip, clear errors for missing, truncated, foreign or mismatched files."""

import pytest
import torch

from sdtool import load_model
from sdtool.checkpoint import save_model
from sdtool.config import PRESETS
from sdtool.errors import CheckpointError
from sdtool.model.sdflow import SDFlow
from tests.helpers import perturb


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = perturb(SDFlow(PRESETS["tiny"]), 0.05).eval()
    path = tmp_path / "m.safetensors"
    save_model(m, path, provenance={"note": "test"})
    return m, path


def test_round_trip_bit_exact(saved):
    m, path = saved
    m2 = load_model(path, device="cpu")
    assert m2.config == m.config
    s1, s2 = m.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert m2.provenance == {"note": "test"}
    x = torch.rand(1, 3, 6, 6)
    assert torch.equal(m.upscale(x, 0.0), m2.upscale(x, 0.0))
    assert not m2.training


def test_actnorm_state_survives(saved):
    _, path = saved
    m2 = load_model(path, device="cpu")
    flags = [b for n, b in m2.named_buffers() if n.endswith("initialized")]
    assert flags and all(int(f) == 1 for f in flags)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nope.safetensors", device="cpu")


def test_truncated_file(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.safetensors.*truncated"):
        load_model(bad, device="cpu")


def test_not_safetensors(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match="x.safetensors"):
        load_model(bad, device="cpu")


def test_foreign_safetensors(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"a": torch.zeros(2)}, str(p))
    with pytest.raises(CheckpointError, match="foreign.safetensors: expected an sdtool SDFlow checkpoint"):
        load_model(p, device="cpu")


def _rewritten(path, out, edit):
    """A copy of checkpoint `path` at `out` (metadata kept) whose tensors `edit` has changed."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    edit(tensors)
    save_file(tensors, str(out), metadata=meta)
    return out


def test_wrong_shape(saved, tmp_path):
    p = _rewritten(saved[1], tmp_path / "shape.safetensors", lambda t: t.update({"deg_prior.means": torch.zeros(7)}))
    with pytest.raises(CheckpointError, match=r"n_gaussian is 4, the file holds 7 \('deg_prior.means' is \(7,\)\)"):
        load_model(p, device="cpu")


def test_missing_key(saved, tmp_path):
    p = _rewritten(saved[1], tmp_path / "missing.safetensors", lambda t: t.pop("deg_prior.log_stds"))
    with pytest.raises(CheckpointError, match="missing key.*deg_prior.log_stds"):
        load_model(p, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_on_cuda(saved):
    m, path = saved
    m2 = load_model(path, device="cuda")
    assert m2.device.type == "cuda"
    x = torch.rand(1, 3, 8, 8)
    assert (m2.upscale(x.cuda(), 0.0).cpu() - m.upscale(x, 0.0)).abs().max() < 1e-3


def test_bad_device_is_usage_error(saved):
    from sdtool.errors import UsageError

    _, path = saved
    with pytest.raises(UsageError):
        load_model(path, device="tpu")
