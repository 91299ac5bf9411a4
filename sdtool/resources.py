"""Where the files that ship with sdtool are: the one lookup for weights and metric parameters.

The repository keeps them in the top-level `weights/` folder, each with its model card. A wheel carries
that folder inside the package as `sdtool/_weights/` (pyproject.toml maps `weights/` to the package
`sdtool._weights`), so an installed sdtool finds them wherever it runs. An editable install or a
checkout on PYTHONPATH has no `sdtool/_weights/`: there the checkout's `weights/` beside the package
folder is used. `$SDTOOL_WEIGHTS` names a different default SDFlow checkpoint.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from sdtool.errors import CheckpointError

SDFLOW_WEIGHTS = "sdflow-lite.safetensors"
PDM_WEIGHTS = "pdm-realsr.safetensors"
REDEG_WEIGHTS = "redeg-realsr.safetensors"
LPIPS_BACKBONE = "lpips_alex.safetensors"
NIQE_PARAMS = "niqe_pris_params.npz"
ENV_WEIGHTS = "SDTOOL_WEIGHTS"


def weights_dirs() -> list[Path]:
    """The folders searched for shipped files, in order: the package's own (a wheel), the checkout's."""
    package = Path(str(files("sdtool")))
    return [package / "_weights", package.parent / "weights"]


def weights_path(name: str) -> Path:
    """The shipped file `name` (e.g. "sdflow-lite.safetensors"). Raises CheckpointError naming the
    folders searched when no folder holds it (a broken install)."""
    folders = weights_dirs()
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    searched = ", ".join(str(f) for f in folders)
    raise CheckpointError(f"{name}: not found with this installation of sdtool (searched {searched}); "
                          "reinstall sdtool or pass the file explicitly")


def default_sdflow_weights() -> Path:
    """The default SDFlow checkpoint: $SDTOOL_WEIGHTS when set, else the shipped weights."""
    env = os.environ.get(ENV_WEIGHTS)
    return Path(env) if env else weights_path(SDFLOW_WEIGHTS)
