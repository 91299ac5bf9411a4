"""Typed errors raised by the library. The CLI turns each into one line and an exit code."""

from __future__ import annotations

from typing import Callable


class SdtoolError(Exception):
    """Base class: every error the library raises on purpose. The message may name options (parameters) as
    ``{name}`` for the names listed in `options`: the library shows them as `name`, the CLI as ``--name``
    (`render`), so no library message names a command-line flag."""

    def __init__(self, message: str = "", options: tuple[str, ...] = ()):
        self.message, self.options = message, tuple(options)
        super().__init__(self.render(lambda name: f"`{name}`") if self.options else message)

    def render(self, show: Callable[[str], str]) -> str:
        """The message with every listed option written as show(parameter name)."""
        text = self.message
        for name in self.options:
            text = text.replace("{" + name + "}", show(name))
        return text


class CheckpointError(SdtoolError):
    """A weights file is missing, truncated, foreign or does not match its model."""


class ImageError(SdtoolError):
    """An image file cannot be read, decoded or written."""


class DatasetError(SdtoolError):
    """A benchmark or training folder is missing, empty or inconsistent."""


class UsageError(SdtoolError):
    """Options that contradict each other or ask for something impossible."""


class WriteError(SdtoolError):
    """A file cannot be written: the disk is full, the folder read-only or not ours, or the name too long.
    `errno` is the operating system's error number, when there was one."""

    def __init__(self, message: str = "", errno: int = 0):
        super().__init__(message)
        self.errno = errno


class InputError(UsageError):
    """An image passed to the Python API is not one it takes: not a tensor, wrong shape, dtype or value range,
    NaN or infinite values."""


class NonFiniteOutputError(SdtoolError):
    """The model produced NaN or infinite values (for example from corrupt weights)."""


class OptionError(UsageError):
    """An option has a value that cannot work. `option` is the parameter name (``tile_overlap``), shown first;
    the CLI shows it as ``--tile-overlap``. The problem may name other options as ``{name}`` when they are
    listed in `others`; an empty `option` starts the message with the problem itself."""

    def __init__(self, option: str, problem: str, others: tuple[str, ...] = ()):
        self.option, self.problem = option, problem
        message = f"{{{option}}} {problem}" if option else problem
        super().__init__(message, ((option,) if option else ()) + tuple(others))

    def __str__(self) -> str:  # a lone option reads as a plain word: "lr must be …"
        return self.render(lambda name: f"`{name}`" if len(self.options) > 1 else name)
