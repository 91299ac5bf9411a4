"""The protocol a trainable model kind implements so the generic runner can drive it."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from sdtool.errors import SdtoolError
from sdtool.seeds import stable_seed as stable_seed  # the trainers' seed rule, `sdtool.seeds`


class NonFiniteLoss(SdtoolError):
    """A loss or gradient was NaN/inf: the step is skipped, no weight changes."""


class TrainingDiverged(SdtoolError):
    """Too many steps in a row were non-finite: the run stops, its last checkpoint is left as it was."""


class TrainTask(Protocol):
    kind: str
    model: nn.Module

    def modules(self) -> dict[str, nn.Module]:
        """Every module with trainable state (the model, discriminators)."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name; their state is saved for exact resume."""

    def train_step(self, lr: Tensor, hr: Tensor, it: int) -> dict[str, float]:
        """One step on LR N×3×p×p and HR N×3×4p×4p in [0, 1]; raises NonFiniteLoss before stepping."""

    def export_metadata(self) -> dict[str, str]:
        """Safetensors metadata of the exported (EMA) model."""
