"""Installing anywhere: the shipped files are found through one lookup, in a checkout and in a wheel's layout,
and pyproject.toml carries them (the wheel itself is built, installed and run from /tmp by .ci/run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sdtool
from sdtool import resources
from sdtool.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [resources.SDFLOW_WEIGHTS, resources.PDM_WEIGHTS, resources.REDEG_WEIGHTS, resources.LPIPS_BACKBONE,
           resources.NIQE_PARAMS]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_file_is_found_in_the_checkout(name: str) -> None:
    assert resources.weights_path(name) == ROOT / "weights" / name


def test_the_wheel_layout_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed wheel: site-packages/sdtool/_weights/ beside the code, no checkout around it.
    (tmp_path / "sdtool" / "_weights").mkdir(parents=True)
    (tmp_path / "sdtool" / "_weights" / resources.NIQE_PARAMS).write_bytes(b"x")
    monkeypatch.setattr(resources, "files", lambda package: tmp_path / package)
    assert resources.weights_path(resources.NIQE_PARAMS) == tmp_path / "sdtool" / "_weights" / resources.NIQE_PARAMS
    with pytest.raises(CheckpointError, match=r"sdflow-lite.safetensors: not found .*searched .*_weights"):
        resources.weights_path(resources.SDFLOW_WEIGHTS)


def test_sdtool_weights_names_the_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDTOOL_WEIGHTS", str(tmp_path / "mine.safetensors"))
    assert resources.default_sdflow_weights() == tmp_path / "mine.safetensors"
    monkeypatch.delenv("SDTOOL_WEIGHTS")
    assert resources.default_sdflow_weights() == ROOT / "weights" / resources.SDFLOW_WEIGHTS


def test_no_other_module_looks_for_weights_on_its_own() -> None:
    own_lookup = re.compile(r'/\s*"weights"|"weights"\s*/|parents\[|\.parent\.parent')
    for path in (ROOT / "sdtool").rglob("*.py"):
        if path.name != "resources.py":
            assert not own_lookup.search(path.read_text()), path


def test_pyproject_packages_every_module_and_the_weights() -> None:
    from setuptools import find_packages

    tool = _pyproject()["tool"]["setuptools"]
    assert sorted(tool["packages"]) == sorted([*find_packages(str(ROOT), include=["sdtool", "sdtool.*"]),
                                               "sdtool._weights"])
    assert tool["package-dir"] == {"sdtool._weights": "weights"} and tool["package-data"]["sdtool._weights"] == ["*"]


def test_pytest_is_a_test_extra_not_a_runtime_dependency() -> None:
    project = _pyproject()["project"]
    assert not any(dep.startswith("pytest") for dep in project["dependencies"])
    assert any(dep.startswith("pytest") for dep in project["optional-dependencies"]["test"])
    setup = (ROOT / "README.md").read_text().split("## Set-up", 1)[1].split("##", 1)[0]
    assert '".[baselines,test]"' in setup  # the README's install command brings what its test command needs
    assert '".[baselines,test]"' in (ROOT / ".ci" / "run").read_text()


def test_version_is_defined_once() -> None:
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sdtool.__version__"}
    assert sdtool.__version__.count(".") == 2
