"""Typed errors raised by the library. The CLI turns each into one line and an exit code."""

from __future__ import annotations

from typing import Callable


class SdtoolError(Exception):
    """Base class: every error the library raises on purpose."""


class CheckpointError(SdtoolError):
    """A weights file is missing, truncated, foreign or does not match its model."""


class ImageError(SdtoolError):
    """An image file cannot be read, decoded or written."""


class DatasetError(SdtoolError):
    """A benchmark or training folder is missing, empty or inconsistent."""


class UsageError(SdtoolError):
    """Options that contradict each other or ask for something impossible."""


class NonFiniteOutputError(SdtoolError):
    """The model produced NaN or infinite values (for example from corrupt weights)."""


class OptionError(UsageError):
    """An option has a value that cannot work. `option` is the parameter name (``tile_overlap``), so the library
    names no command-line flag; the CLI shows it as ``--tile-overlap``. The problem may name other options as
    ``{name}`` when they are listed in `others` (each shown the same way); an empty `option` starts the message
    with the problem itself."""

    def __init__(self, option: str, problem: str, others: tuple[str, ...] = ()):
        self.option, self.problem, self.others = option, problem, tuple(others)
        super().__init__(self.render(lambda name: f"`{name}`" if self.others else name))

    def render(self, show: Callable[[str], str]) -> str:
        """The message with every option written as show(parameter name)."""
        text = self.problem
        for name in self.others:
            text = text.replace("{" + name + "}", show(name))
        return f"{show(self.option)} {text}" if self.option else text
