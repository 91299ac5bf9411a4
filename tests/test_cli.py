"""The CLI as a whole: every command has help text and is documented in the README; `import sdtool` is light."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdtool.cli.app import app

COMMANDS = ["upscale", "downscale", "sample-degradation", "train", "benchmark", "convert-official"]
README = Path(__file__).resolve().parents[1] / "README.md"


def test_app_lists_every_command():
    res = CliRunner().invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in res.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_command_has_help_and_is_in_readme(cmd):
    res = CliRunner().invoke(app, [cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output and len(res.output) > 200
    assert f"sdtool {cmd}" in README.read_text()


def test_import_is_light():
    code = "import sys, sdtool; print(any(m in sys.modules for m in ('torch', 'lpips', 'cv2', 'torchvision')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_version():
    from sdtool import __version__

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output == f"sdtool {__version__}\n"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_is_plain_text_as_written(cmd):
    res = CliRunner().invoke(app, [cmd, "--help"])
    assert "<bool>" not in res.output  # switches take no value
    assert "--overwrite" in res.output or cmd in ("train", "benchmark", "convert-official")
    if cmd == "benchmark":  # text in brackets is not taken for markup
        assert "pip install 'sdtool[baselines]'" in " ".join(res.output.split())
