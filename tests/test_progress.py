"""Progress off a terminal: plain lines with an ETA (nohup, batch jobs, CI), from the line printer to the commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sdtool.cli import progress
from sdtool.cli.app import app
from sdtool.cli.progress import PlainProgress
from tests.helpers import write_image_file

runner = CliRunner()


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _printer(total: float, **kw: float) -> tuple[PlainProgress, list[str], _Clock]:
    lines: list[str] = []
    clock = _Clock()
    return PlainProgress("train", total, "it", write=lines.append, clock=clock, **kw), lines, clock


def test_a_line_each_tenth_with_elapsed_time_and_eta() -> None:
    p, lines, clock = _printer(1000, min_gap_s=0)
    p.update(0)
    for it in range(10, 1001, 10):
        clock.t += 2.0  # 10 iterations every 2 s: 0.2 s an iteration
        p.update(it, f"loss {it / 1000:.3f}")
    assert len(lines) == 10
    assert lines[2] == "train: 300/1000 it (30%), 1m00s elapsed, ETA 2m20s, loss 0.300"
    assert lines[-1] == "train: 1000/1000 it (100%), 3m20s elapsed, ETA 0s, loss 1.000"


def test_short_runs_stay_quiet_and_long_silences_are_broken() -> None:
    p, lines, clock = _printer(4)
    p.update(0)
    for done in range(1, 5):
        clock.t += 1.0  # 4 s in all: below the 10 s between two lines
        p.update(done)
    assert lines == []
    p, lines, clock = _printer(1000)
    p.update(0)
    clock.t += 61.0  # no tenth reached, but a minute without a line
    p.update(5)
    assert lines == ["train: 5/1000 it (0%), 1m01s elapsed, ETA 3h22m19s"]


def test_fractional_progress_and_unknown_eta() -> None:
    p, lines, clock = _printer(2, min_gap_s=0)
    p.update(0.5)  # the first update starts the clock (a model load before it does not count)
    p.update(0.7)  # past a tenth, but no time has passed: no pace yet
    assert lines == ["train: 0.7/2 it (35%), 0s elapsed, ETA ?"]
    clock.t += 3.0
    p.update(1.25, "b.png")
    assert lines[-1] == "train: 1.2/2 it (62%), 3s elapsed, ETA 3s, b.png"


@pytest.fixture
def chatty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines at every tenth however fast the run (the CLI runner's stderr is not a terminal)."""
    monkeypatch.setattr(progress, "MIN_GAP_S", 0.0)


def test_upscale_prints_plain_lines_off_a_terminal(tmp_path: Path, tiny_weights: Path, chatty: None) -> None:
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        write_image_file(tmp_path / "in" / name, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    res = runner.invoke(app, ["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "-w", str(tiny_weights),
                              "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "upscale: 1/2 files (50%)" in res.output and "upscale: 2/2 files (100%)" in res.output
    assert "ETA" in res.output and "b.png" in res.output


def test_benchmark_prints_plain_lines_off_a_terminal(tmp_path: Path, chatty: None) -> None:
    from tests.test_cli_benchmark import _dataset

    _dataset(tmp_path / "pairs", ["a.png", "b.png"])
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "pairs"), "--method", "bicubic", "--no-model",
                              "--no-downscale", "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "benchmark: 1/2 images (50%)" in res.output and "benchmark: 2/2 images (100%)" in res.output
    assert "bicubic: b" in res.output
