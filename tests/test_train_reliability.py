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


def test_divergence_stops_cleanly_and_keeps_the_checkpoint(saved_run, tmp_path):
    out = _copy_run(saved_run, tmp_path / "run")  # 2 iterations, checkpointed (tests/conftest.py)
    kept = _sha(out / "model.safetensors"), _sha(out / "state.pt")
    res = runner.invoke(app, _args(saved_run[0], out, "--iters", "60", "--lr", "1e6", "--resume"))
    assert res.exit_code == 1, res.output
    assert "diverged" in res.output and "Traceback" not in res.output
    assert (_sha(out / "model.safetensors"), _sha(out / "state.pt")) == kept


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sdtool", *args]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "random"}


def test_sigint_checkpoints_and_a_new_process_resumes_exactly(data):
    """An interrupted run, resumed by another process, ends with the weights of an uninterrupted run; the log has
    each iteration once."""
    straight, cut = data / "straight", data / "cut"
    # 6 iterations, stopped after at least 3 (each ~0.5 CPU-s here): the signal is sent within 50 ms of the
    # third log line, so the run is always cut mid-way, after the image losses started (they run after iteration 2).
    total, stop_after = 6, 3
    # the uninterrupted reference run needs no process of its own (one thread here too: tests/conftest.py)
    ok = runner.invoke(app, _args(data, straight, "--iters", str(total), "--log-every", "1"))
    assert ok.exit_code == 0, ok.output
    proc = subprocess.Popen(_cli(*_args(data, cut, "--iters", str(total), "--log-every", "1", "--ckpt-every", "1000")),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = cut / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or log.read_text().count('"train"') < stop_after):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stopped = [json.loads(line) for line in log.read_text().splitlines()]
    assert stopped[-1]["type"] == "stop" and stop_after <= stopped[-1]["it"] < total
    # Resumed here, in this process, which never held the cut run's state: only what the killed process left on
    # disk carries over (a third process would only import torch once more).
    resumed = runner.invoke(app, _args(data, cut, "--iters", str(total), "--log-every", "1", "--ckpt-every", "1000",
                                       "--resume"))
    assert resumed.exit_code == 0, resumed.output
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


def _copy_run(saved_run: tuple[Path, Path], to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(saved_run[1], to))


def _not_weights(p: Path) -> None:
    import pickle

    class Payload:  # a pickle that would run a command if it were ever unpickled
        def __reduce__(self):
            return (os.system, ("touch PWNED",))

    p.write_bytes(pickle.dumps(Payload()))


def _without_config_name(p: Path) -> None:
    import torch

    state = torch.load(p, weights_only=True)
    settings = json.loads(state["settings"])
    settings["extra"].pop("config")
    torch.save({**state, "settings": json.dumps(settings)}, p)


@pytest.mark.parametrize("spoil, extra, needle", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]), [], "truncated, damaged or not written by"),
    (_not_weights, [], "truncated, damaged or not written by"),
    (lambda p: __import__("torch").save({"it": 1}, p), [], "not a training state written by `sdtool train`"),
    (lambda p: None, ["--config", "lite"], "the run was made with config tiny, not lite; resume it with --config tiny"),
    (_without_config_name, ["--config", "lite"], "weights do not match the model config"),
])
def test_resume_from_a_state_that_does_not_fit_is_one_line_and_exit_2(saved_run, tmp_path, spoil, extra, needle):
    run = _copy_run(saved_run, tmp_path / "run")
    spoil(run / "state.pt")
    before = {p.name: _sha(p) for p in run.iterdir()}
    args = _args(saved_run[0], run, "--iters", "4", "--resume")
    if extra:
        args[args.index("--config") + 1] = extra[1]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and needle in res.output, res.output
    assert res.output.count("error:") == 1 and "Traceback" not in res.output
    assert {p.name: _sha(p) for p in run.iterdir()} == before and not Path("PWNED").exists()


def test_temporaries_of_a_killed_checkpoint_write_are_removed_by_the_next_run(saved_run, tmp_path):
    from sdtool.files import temporary_path

    run = _copy_run(saved_run, tmp_path / "run")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = [temporary_path(run / name).name.replace(f"-{os.getpid()}-", f"-{pid}-")
            for name in ("model.safetensors", "state.pt", "settings.json")]
    left.append(f".state.pt.sdtool-{pid}-0123abcd.tmp")  # the name the training state had before one writer
    for name in left:
        (run / name).write_bytes(b"partial")
    res = runner.invoke(app, _args(saved_run[0], run, "--iters", "3", "--resume"))
    assert res.exit_code == 0, res.output
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    assert all(f"{name}: removed, left by an interrupted run" in res.output for name in left), res.output


def test_a_fresh_start_after_a_run_that_never_saved_logs_each_iteration_once(saved_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()  # what kill -9 during the first state.pt write leaves: a log, no state
    (run / "log.jsonl").write_text(json.dumps({"type": "train", "it": 1}) + "\n" + '{"type": "tr')
    res = runner.invoke(app, _args(saved_run[0], run, "--iters", "2", "--log-every", "1"))
    assert res.exit_code == 0, res.output
    its = [json.loads(line)["it"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert its == [1, 2]
