"""The one base class of every mistake a user can make: a missing file, a bad setting, a broken checkpoint.

Each command line turns a :class:`UserError` into one line on stderr and exit code 2 (:mod:`cdvd.cli.common`);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input or settings; the message names the file or the setting to change."""


class ConfigError(UserError):
    """A setting that cannot work; the message names it."""


class DataError(UserError):
    """Bad input data (or an output that cannot be written); the message names the file or folder and what is wrong.

    Also importable as ``cdvd.data.io.DataError``.
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
