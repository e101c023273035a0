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
