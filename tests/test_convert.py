"""The converter for the authors' checkpoints, on their exact key layout (tests/data has every key and shape)."""

import json
import os
from pathlib import Path

import pytest
import torch

from sdtool.config import PRESETS
from sdtool.convert import OFFICIAL_FILES, convert_state, load_official_dir
from sdtool.errors import CheckpointError

SHAPES = Path(__file__).parent / "data" / "official_sdflow_state_dict_shapes.json"


def _official_random(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    files = {}
    for fname, keys in json.loads(SHAPES.read_text()).items():
        state = {}
        for key, shape in keys.items():
            leaf = key.rsplit(".", 1)[-1]
            if leaf == "u_mask":
                state[key] = torch.triu(torch.ones(shape), 1)
            elif leaf == "l_mask":
                state[key] = torch.tril(torch.ones(shape), -1)
            elif leaf == "l_eye":
                state[key] = torch.eye(shape[0])
            elif leaf == "initialized":
                state[key] = torch.tensor(1, dtype=torch.uint8)
            elif leaf == "w_p":
                state[key] = torch.eye(shape[0])[torch.randperm(shape[0], generator=g)]
            elif leaf == "s_sign":
                state[key] = torch.sign(torch.randn(shape, generator=g))
            else:
                state[key] = torch.randn(shape, generator=g) * 0.01
        files[fname.removesuffix(".pth")] = state
    return files


@pytest.fixture(scope="module")
def official():
    return _official_random()


def test_every_key_maps_and_config_is_paper(official):
    model, cfg = convert_state(official)
    paper = PRESETS["paper"]
    assert cfg.__class__(**{**cfg.__dict__, "name": "paper"}) == paper
    n_official = sum(len(s) for s in official.values())
    assert n_official == 1922
    ours = model.state_dict()
    # values land where they belong
    assert torch.equal(ours["deg_prior.means"], official["degnet"]["means"])
    assert torch.equal(
        ours["hr_flow.transforms.5.transforms.2.net.out.logs"],
        official["hrnet"]["blocks.0.steps.0.affine_coulping.net.conv3.logs"],
    )
    assert torch.equal(
        ours["hf_flow.flow.transforms.0.transforms.2.net.conv1.weight"],
        official["hrnet"]["blocks.1.split.conditional_flow.additional_flow_steps.0.affine_injector.net.conv1.conv2d.weight"],
    )


def test_missing_key_is_named(official):
    broken = {k: dict(v) for k, v in official.items()}
    del broken["degnet"]["deg_net.cond_net.2.bias"]
    with pytest.raises(CheckpointError, match="deg_flow.cond_net.reduce.bias"):
        convert_state(broken)


def test_wrong_shape_is_named(official):
    broken = {k: dict(v) for k, v in official.items()}
    broken["lrencoder"]["out_conv.3.weight"] = torch.zeros(3, 64, 3, 3)
    with pytest.raises(CheckpointError, match=r"lrencoder.pth: key 'out_conv.3.weight' has shape"):
        convert_state(broken)


def test_unexpected_key_is_named(official):
    broken = {k: dict(v) for k, v in official.items()}
    broken["hrnet"]["blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected key 'blocks.0.extra.weight'"):
        convert_state(broken)


def test_folder_of_pth_files_and_cli(official, tmp_path):
    from typer.testing import CliRunner

    from sdtool import load_model
    from sdtool.cli.app import app

    src = tmp_path / "official"
    src.mkdir()
    for stem in OFFICIAL_FILES:
        torch.save(official[stem], src / f"{stem}.pth")
    assert set(load_official_dir(src)) == set(OFFICIAL_FILES)
    out = tmp_path / "sdflow.safetensors"
    res = CliRunner().invoke(app, ["convert-official", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = load_model(out, device="cpu")
    assert m.config.hr_steps == (16, 16)
    # refuses to overwrite, and names a missing file
    res = CliRunner().invoke(app, ["convert-official", str(src), "-o", str(out)])
    assert res.exit_code == 2 and "already exists" in res.output
    (src / "degnet.pth").unlink()
    res = CliRunner().invoke(app, ["convert-official", str(src), "-o", str(tmp_path / "b.safetensors")])
    assert res.exit_code == 2 and "degnet.pth: missing" in res.output


def test_pickle_with_code_is_refused(tmp_path):
    src = tmp_path / "evil"
    src.mkdir()
    for stem in OFFICIAL_FILES:
        torch.save({"x": torch.zeros(1)}, src / f"{stem}.pth")
    torch.save({"x": os.getcwd}, src / "hrnet.pth")  # a callable needs full unpickling: weights_only refuses
    with pytest.raises(CheckpointError, match="hrnet.pth: cannot be read"):
        load_official_dir(src)
