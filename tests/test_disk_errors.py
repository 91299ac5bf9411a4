"""Full disks and read-only folders, on small tmpfs mounts (root only; skipped elsewhere): every file the
system refuses fails with one line, the other files go on, and nothing partial or hidden is left."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sdtool.cli.app import app
from tests.helpers import train_args, write_image_file

runner = CliRunner()


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) → a fresh tmpfs of that size under tmp_path; unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(folder: Path, leave_kb: int = 0) -> None:
    """Fill the file system of `folder` up to `leave_kb` KiB free."""
    free = shutil.disk_usage(folder).free // 1024 - leave_kb
    if free > 0:
        with open(folder / "filler", "wb") as f:
            f.write(b"\0" * free * 1024)


def _hidden(root: Path) -> list[str]:
    return [p.name for p in root.rglob(".*")]


def _images(folder: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        write_image_file(folder / f"{i}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    return folder


@pytest.mark.parametrize("leave_kb", [0, 40])  # no room for a claim; room for claims but not for the outputs
def test_a_full_disk_fails_each_file_in_one_line(tmpfs, tiny_weights, leave_kb):
    fs = tmpfs("1m")
    src = _images(fs / "in", 3, 64)
    _fill(fs, leave_kb)
    res = runner.invoke(app, ["upscale", str(src), str(fs / "out"), "-w", str(tiny_weights), "--device", "cpu"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.count("error:") == 3 and res.output.count("No space left on device") == 3, res.output
    assert not _hidden(fs) and not [p for p in (fs / "out").rglob("*") if p.is_file()]


def test_no_out_beside_an_input_in_a_read_only_folder(tmpfs, tiny_weights):
    fs = tmpfs("1m")
    src = _images(fs, 1, 8) / "0.png"
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    res = runner.invoke(app, ["upscale", str(src), "-w", str(tiny_weights), "--device", "cpu"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.count("error:") == 1 and "0_x4_t0.4.png: cannot write: Read-only file system" in res.output


def test_training_on_a_disk_that_fills_up_keeps_the_last_checkpoint(tmpfs, saved_run):
    fs = tmpfs("80m")
    run = Path(shutil.copytree(saved_run[1], fs / "run"))
    checkpoint = [run / "model.safetensors", run / "state.pt"]
    kept = [hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoint]
    _fill(fs, leave_kb=200)  # room for log lines, not for a checkpoint
    res = runner.invoke(app, train_args(saved_run[0], run, "--iters", "3", "--resume"))
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.count("error:") == 1 and "No space left on device" in res.output
    assert "the checkpoint of iteration 2" in res.output
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoint] == kept
    assert not _hidden(fs)
