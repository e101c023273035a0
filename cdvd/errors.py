"""The one base class of every mistake a user can make (a missing file, a bad setting, a broken checkpoint), and the
two value checks every tool shares.

Each command line turns a :class:`UserError` into one line on stderr and exit code 2 (:mod:`cdvd.cli.common`);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import math
from typing import Any


class UserError(ValueError):
    """A mistake in the user's input or settings; the message names the file or the setting to change."""


class ConfigError(UserError):
    """A setting that cannot work; the message names it."""


class DataError(UserError):
    """Bad input data (or an output that cannot be written); the message names the file or folder and what is wrong.

    Imported from here only (``from cdvd.errors import DataError``).
    """


def user_message(err: BaseException) -> str:
    """The user-facing line of ``err``: for an error re-raised from a DataLoader worker, the worker's own message.

    PyTorch re-raises a worker's exception in the main process with the worker's whole traceback in its message
    (``Caught DataError in DataLoader worker process 0. Original Traceback ...``); its last line is the message.
    """
    text = str(err).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
        for start in (prefix, f"{type(err).__qualname__}: "):
            if last.startswith(start):
                return last[len(start) :]
        return last
    return text


def innermost_cause(err: BaseException) -> BaseException:
    """The end of ``err``'s ``__cause__`` chain: what went wrong where Hydra or a loader wrapped a constructor's
    error in its own (the one walk of the chain for every place that reports such an error)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def user_error_of(err: BaseException) -> UserError | None:
    """The :class:`UserError` that ``err`` wraps, if any: ``hydra.utils.instantiate`` wraps whatever a constructor
    raises in an ``InstantiationException``; a :class:`CheckpointError` of ``model.pretrained``, say, is found again
    here through the ``__cause__`` chain."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, UserError):
        seen = seen.__cause__
    return seen


# The two value checks every tool's settings share (counts and positive numbers), raising ConfigError.


def check_positive_number(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float, positive (or zero where ``allow_zero``), else a :class:`ConfigError`.

    Args:
        name: the setting's dotted name, for the message (``optimizer.lr``).
        value: what the config holds (a number, or a string the user typed, such as ``abc``).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{name}={value}: not a number")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value}: not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}={value}: must be a finite number")
    if number < 0 or (number == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value}: must be {bound}")
    return number


def check_count(name: str, value: Any, least: int) -> int:
    """``value`` as a whole number >= ``least``, else a :class:`ConfigError` naming ``name``.

    Args:
        name: the setting's dotted name, for the message (``trainer.max_epochs``).
        value: what the config holds (Hydra reads ``3`` as an int, ``3.0`` as a float and ``abc`` as a string).
        least: the smallest value that works.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value}: not a whole number (e.g. {name}={max(least, 1)})")
    if value < least:
        raise ConfigError(f"{name}={value}: must be >= {least}")
    return value
