"""Every command in the README runs as written.

The `sdtool` lines of the README's fenced bash blocks (continuation lines joined, comments dropped, `a && b`
split) and its Python block run in a temporary folder laid out as they expect, on tiny files made here. The
mapping from what the README assumes to what this test provides:

  examples/face.png                  a 48x48 centre crop of the repository's own example image (same mode and
                                     depth; the whole image costs the shipped model ~4 CPU-s more)
  photo.jpg, hr.png, real_lr.png     tiny generated images
  in/a/b.png, hr/, real_lr/          folders of tiny generated images
  data/drealsr, data/realsr-crops,   tiny x4 pairs in test_HR/ + test_LR/ (RealSR validation names for realsr,
  data/drealsr-crops-dev             the split the README uses), never a data folder outside
  their_outputs/, runs/<tool>-<set>  "another tool's" x4 outputs: the pairs' HR images, named as the LR ones
  sdflow_ckpts/                      the authors' four .pth files with random values of the right shapes
  sdtool train … --config lite       run as `--config tiny --iters 2 --batch 1 --patch 32` (the same code path,
                                     seconds instead of an hour)

Lines that are not `sdtool` commands must be in NOT_RUN_HERE with the reason (and where they are checked).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from sdtool.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

NOT_RUN_HERE = {
    "pip install": ".ci/run installs the checkout this way",
    "python -m pytest": "this is the test run itself (.ci/run runs it)",
    "python scripts/ncnn_sr.py": "runs other projects' models from their ncnn wheels, which are no dependency",
    "python scripts/downstream_sr.py": "trains five SR networks (about an hour on 2 CPU cores); tests/test_sr.py "
                                       "runs its parts (pairs, SR training, benchmark of SR networks)",
}
TRAIN_SUBSTITUTION = ("--config lite", "--config tiny --iters 2 --batch 1 --patch 32")
# What the README's comments promise, checked after the command that promises it.
PROMISED = {
    "sdtool upscale examples/face.png": ["examples/face_x4_t0.4.png"],
    "sdtool upscale photo.jpg": ["photo_x4_t0.4.jpg"],
    "sdtool upscale in/ out/ --samples 5 --seed 1": [f"out/a/b_s0{k}.png" for k in range(5)],
    "sdtool upscale in/ out/ --outscale 2": ["out/a/b_sr.jpg"],
    "sdtool downscale hr.png --temperature 0.8": ["hr_x0.25_t0.8.png"],
    "sdtool train --lr-dir": ["runs/mine/model.safetensors"],
    "sdtool train --model sr": ["runs/sr/model.safetensors"],
    "sdtool convert-official": ["sdflow-official.safetensors"],
    "sdtool upscale photo.jpg --model sr-compact": ["photo_x4.jpg"],
    "sdtool export-sr": ["mine.pth"],
}


def _bash_lines(text: str) -> list[str]:
    """The commands of the fenced bash blocks, one string each."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            parts: list[list[str]] = [[]]
            for word in words:
                if word == "&&":
                    parts.append([])
                else:
                    parts[-1].append(word)
            lines += [shlex.join(part) for part in parts if part]
    return lines


def _commands() -> list[str]:
    return [c for c in _bash_lines(README.read_text()) if c.startswith("sdtool ")]


def _image(path: Path, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    wave = 80 * np.sin(9 * xx + rng.uniform(0, 3)) * np.cos(7 * yy)
    img = np.clip(128 + wave[..., None] + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    _write(path, img)
    return img


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def _pairs(root: Path, names: list[str], outputs: list[Path]) -> None:
    for i, name in enumerate(names):
        hr = _image(root / "test_HR" / name, 64, 64, seed=i)
        _write(root / "test_LR" / name, cv2.resize(hr, (16, 16), interpolation=cv2.INTER_AREA))
        for folder in outputs:
            _write(folder / name, hr)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding every file the README's commands read."""
    import torch

    from tests.test_convert import _official_random

    w = tmp_path_factory.mktemp("readme")
    (w / "examples").mkdir()
    face = cv2.imread(str(ROOT / "examples" / "face.png"), cv2.IMREAD_UNCHANGED)
    top, left = (face.shape[0] - 48) // 2, (face.shape[1] - 48) // 2
    _write(w / "examples" / "face.png", face[top:top + 48, left:left + 48])
    for name, size in (("photo.jpg", 24), ("hr.png", 32), ("real_lr.png", 16), ("in/a/b.png", 12),
                       ("hr/x.png", 32), ("hr/y.png", 40), ("real_lr/p.png", 16), ("real_lr/q.png", 12)):
        _image(w / name, size, size, seed=len(name))
    _pairs(w / "data" / "drealsr", ["d1.png", "d2.png"], [w / "their_outputs"])
    _pairs(w / "data" / "realsr-crops", ["Canon_041_LR4.png", "Nikon_050_LR4.png"],
           [w / "runs" / "realesrgan-realsr", w / "runs" / "realsrdf2k-realsr"])
    _pairs(w / "data" / "drealsr-crops-dev", ["d1.png", "d2.png"],
           [w / "runs" / "realesrgan-drealsr", w / "runs" / "realsrdf2k-drealsr"])
    from sdtool.model.sr import SR_PRESETS, build_sr, export_state_dict

    torch.manual_seed(0)  # another tool's x4 model (ESRGAN layout, tiny) for `upscale -w any.pth`
    export_state_dict(build_sr(SR_PRESETS["rrdb-tiny"]), w / "RealESRGAN_x4plus.pth")
    (w / "sdflow_ckpts").mkdir()
    for stem, state in _official_random().items():
        torch.save(state, w / "sdflow_ckpts" / f"{stem}.pth")
    return w


def test_the_readme_has_commands_and_every_other_line_is_accounted_for() -> None:
    lines = _bash_lines(README.read_text())
    assert len(_commands()) >= 10
    for line in lines:
        if not line.startswith("sdtool "):
            assert any(line.startswith(p) for p in NOT_RUN_HERE), f"README line neither run nor exempted: {line}"


@pytest.mark.parametrize("command", _commands(), ids=lambda c: c[:60])
def test_readme_command_runs_as_written(command: str, world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(world)
    monkeypatch.delenv("SDTOOL_WEIGHTS", raising=False)  # the README means the shipped weights
    run = command
    if command.startswith("sdtool train"):  # the tiny test size, given or not
        old, new = TRAIN_SUBSTITUTION
        run = command.replace(old, new) if old in command else f"{command} {new}"
    res = CliRunner().invoke(app, shlex.split(run)[1:])
    assert res.exit_code == 0, f"{command}\n{res.output}"
    assert " 0 failed" in res.output or not re.search(r"\d+ failed", res.output)
    for prefix, files in PROMISED.items():
        if command.startswith(prefix):
            assert all((world / f).is_file() for f in files), (command, files)


def test_readme_python_block_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert block is not None
    _image(tmp_path / "in" / "a.png", 12, 12)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SDTOOL_WEIGHTS", raising=False)
    scope: dict = {}
    exec(compile(block.group(1), "README.md (python)", "exec"), scope)
    assert scope["sr"].shape == (1, 3, 256, 256) and scope["lr"].shape == (1, 3, 64, 64)
    assert len(scope["result"].done) == 1 and (tmp_path / "out" / "a_s01.png").is_file()
