"""`sdtool train` under bad options, corrupt data, divergence, signals and resume in a new process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sdtool.cli.app import app
from tests.helpers import write_image_file

runner = CliRunner()


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image_file(tmp_path / "lr" / f"{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
        write_image_file(tmp_path / "hr" / f"{i}.png", rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    return tmp_path


def _args(d: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--lr-dir", str(d / "lr"), "--hr-dir", str(d / "hr"), "--out", str(out), "--config", "tiny",
            "--batch", "2", "--patch", "32", "--device", "cpu", "--image-loss-start", "2", *extra]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("extra, needle", [
    (["--name-filter", "(["], "not a valid regular expression"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lr", "-1"], "--lr must be a finite number > 0"),
    (["--resume"], "no run to resume"),
])
def test_bad_options_are_one_line_and_exit_2(data, extra, needle):
    res = runner.invoke(app, _args(data, data / "run", "--iters", "2", *extra))
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output
    assert not (data / "run" / "state.pt").exists()


def test_out_pointing_at_a_file(data):
    (data / "f").write_text("x")
    res = runner.invoke(app, _args(data, data / "f", "--iters", "2"))
    assert res.exit_code == 2 and "is a file" in res.output
    assert (data / "f").read_text() == "x"


def test_corrupt_training_image_is_skipped_with_a_notice(data):
    (data / "hr" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    res = runner.invoke(app, _args(data, data / "run", "--iters", "2"))
    assert res.exit_code == 0, res.output
    assert "broken.png" in res.output and "skipped unreadable" in res.output


def test_divergence_stops_cleanly_and_keeps_the_checkpoint(data):
    out = data / "run"
    assert runner.invoke(app, _args(data, out, "--iters", "3")).exit_code == 0
    kept = _sha(out / "model.safetensors"), _sha(out / "state.pt")
    res = runner.invoke(app, _args(data, out, "--iters", "60", "--lr", "1e6", "--resume"))
    assert res.exit_code == 1, res.output
    assert "diverged" in res.output and "Traceback" not in res.output
    assert (_sha(out / "model.safetensors"), _sha(out / "state.pt")) == kept


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sdtool", *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}


def test_sigint_checkpoints_and_a_new_process_resumes_exactly(data):
    """An interrupted run, resumed in a new process, ends with the weights of an uninterrupted run; the log has
    each iteration once."""
    straight, cut = data / "straight", data / "cut"
    total = 40
    ok = subprocess.run(_cli(*_args(data, straight, "--iters", str(total), "--log-every", "1")), env=_env(),
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    proc = subprocess.Popen(_cli(*_args(data, cut, "--iters", str(total), "--log-every", "1", "--ckpt-every", "1000")),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = cut / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or log.read_text().count('"train"') < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stopped = [json.loads(line) for line in log.read_text().splitlines()]
    assert stopped[-1]["type"] == "stop" and 5 <= stopped[-1]["it"] < total
    resumed = subprocess.run(_cli(*_args(data, cut, "--iters", str(total), "--log-every", "1", "--ckpt-every", "1000",
                                         "--resume")), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _sha(cut / "model.safetensors") != "" and _state_equal(straight, cut)
    its = [json.loads(line)["it"] for line in log.read_text().splitlines() if '"train"' in line]
    assert its == list(range(1, total + 1))  # nothing repeated, nothing missing


def _state_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return ta.keys() == tb.keys() and all(bool((ta[k] == tb[k]).all()) for k in ta)


@pytest.mark.parametrize("extra", [["--loss", "cycle_l1=1"], ["--freeze", "hr_flow"], ["--paired"],
                                   ["--image-loss-start", "3"]])
def test_options_that_do_not_apply_to_pdm_are_refused(data, extra):
    args = ["train", "--lr-dir", str(data / "lr"), "--hr-dir", str(data / "hr"), "--out", str(data / "run"),
            "--model", "pdm", "--batch", "2", "--patch", "32", "--iters", "2", "--device", "cpu", *extra]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "not used by --model pdm" in res.output, res.output
