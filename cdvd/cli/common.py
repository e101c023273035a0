"""What every console script shares: where the configs are, and how a user's mistake ends the process."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from cdvd.errors import UserError, user_message
from cdvd.tracking import register_resolvers

CONFIG_PATH = "pkg://cdvd.configs"
"""The Hydra configs, shipped inside the package (``configs/`` in a checkout, ``cdvd/configs`` in a wheel)."""

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")

logger = logging.getLogger(__name__)


def quote_non_ascii(args: list[str]) -> list[str]:
    """Hydra overrides with a non-ASCII value (``input=vidéo/``), which Hydra's grammar only takes quoted, quoted.

    Values already quoted, lists, dicts and interpolations are left as they are.
    """
    quoted = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and not value.isascii() and value[:1] not in "'\"[{$":
            quote = "'" if "'" not in value else '"'
            arg = f"{key}={quote}{value}{quote}"
        quoted.append(arg)
    return quoted


def prepare_argv() -> None:
    """Call first in every console script: makes ``sys.argv`` what Hydra's override grammar accepts, and registers
    the resolvers the configs use (``${cdvd_run_name:...}`` names sweep folders)."""
    register_resolvers()
    sys.argv[1:] = quote_non_ascii(sys.argv[1:])


def fail(prog: str, message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """End the process with ``prog: error: message`` as the one line on stderr."""
    one_line = " ".join(message.split())  # a library's multi-line message still ends as one line
    sys.stderr.write(f"{prog}: error: {one_line}\n")
    sys.stderr.flush()
    sys.exit(code)


def run_cli(task: Callable[[DictConfig], T], cfg: DictConfig, prog: str) -> T:
    """Run ``task(cfg)``; a user's mistake is one line on stderr and exit 2, Ctrl-C one line and exit 130.

    A :class:`cdvd.errors.UserError` (bad data, checkpoint or setting; the message names it) and an OmegaConf error
    (a setting of the wrong type, a missing key) are the user's; anything else is a bug and keeps its traceback.
    """
    try:
        return task(cfg)
    except UserError as err:
        logger.debug("user error", exc_info=True)
        fail(prog, user_message(err))
    except OmegaConfBaseException as err:
        fail(prog, f"bad setting: {err}".replace("\n", "; "))
    except KeyboardInterrupt:
        fail(prog, "interrupted (finished outputs are kept; rerun the same command to resume)", EXIT_INTERRUPTED)
