"""What every console script shares: where the configs are, and how a user's mistake ends the process."""

from __future__ import annotations

import difflib
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable
from typing import NoReturn, TypeVar

from hydra.errors import (
    CompactHydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from cdvd.cli.help import CONFIG_PACKAGE, register_help_resolver
from cdvd.errors import UserError, innermost_cause, user_error_of, user_message
from cdvd.training.tracking import register_resolvers

CONFIG_PATH = f"pkg://{CONFIG_PACKAGE}"
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


FULL_ERROR = "HYDRA_FULL_ERROR"
"""Hydra's switch for whole tracebacks; set by the user, :func:`run_hydra` leaves every error to Hydra."""


#: Warnings of one library about another that a user can do nothing about, hidden by the console scripts:
#: (message regex, category). Lightning builds torch's deprecated ``LeafSpec`` at every fit (torch >= 2.10).
THIRD_PARTY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)


def hide_third_party_warnings() -> None:
    """Ignore :data:`THIRD_PARTY_WARNINGS` in this process (a console script's choice, never a library import's)."""
    for message, category in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


RERUN_FLAG = "--experimental-rerun"
"""Hydra's flag that reruns a job from its ``config.pickle`` with ``pickle.load``: a file would choose what runs."""


def is_rerun_flag(arg: str) -> bool:
    """Whether ``arg`` is :data:`RERUN_FLAG`, whole or abbreviated as argparse takes it (``--experimental-r x``)."""
    name = arg.split("=", 1)[0]
    return name.startswith("--e") and RERUN_FLAG.startswith(name)


def run_hydra(hydra_main: Callable[[], None], prog: str) -> None:
    """Run a console script's ``@hydra.main`` function; a command line Hydra cannot compose into a config (an
    unknown setting, a missing config option, an override it cannot parse) is one line and exit 2, as every other
    mistake of the user's (:func:`run_cli`), instead of Hydra's multi-line report and exit 1.

    With ``HYDRA_FULL_ERROR=1`` set by the user, Hydra reports everything its own way.
    """
    register_resolvers()  # those the configs use (${cdvd_run_name:...} names sweep folders)
    register_help_resolver()  # --help's parts (configs/hydra/help/cdvd.yaml)
    hide_third_party_warnings()
    sys.argv[1:] = quote_non_ascii(sys.argv[1:])  # what Hydra's override grammar accepts
    if any(is_rerun_flag(arg) for arg in sys.argv[1:]):
        fail(
            prog,
            f"{RERUN_FLAG} reads a pickle, which runs whatever code it names: refused (a run's settings are in "
            "<run>/.hydra/overrides.yaml: pass them again)",
        )
    before = os.environ.get(FULL_ERROR)
    if before == "1":
        hydra_main()
        return
    os.environ[FULL_ERROR] = "1"  # Hydra then raises its errors instead of printing them and exiting
    try:
        hydra_main()
    except CompactHydraException as err:
        # a check of ours that Hydra ran (a callback it builds, configs/hparams_search/): its own line
        found = user_error_of(err)
        fail(prog, user_message(found) if found is not None else hydra_message(err, prog))
    finally:
        os.environ.pop(FULL_ERROR, None)
        if before is not None:
            os.environ[FULL_ERROR] = before


def quoting_hint(override: str) -> str | None:
    """For an override Hydra cannot parse, ``key=value`` with the value in quotes, as typed in a shell
    (``'input="clip (1).mp4"'``), when that form parses: the value holds characters of Hydra's override grammar
    (``( ) [ ] { } = ' "`` ...), as file names often do. ``None`` when quoting would not help."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    key, sep, value = override.partition("=")
    if not sep or not value or value[:1] in "'\"":
        return None
    quote = '"' if '"' not in value else "'"
    escaped = value.replace(quote, "\\" + quote)  # both kinds of quote in the value: Hydra's escape
    quoted = f"{key}={quote}{escaped}{quote}"
    try:
        OverridesParser.create().parse_override(quoted)
    except Exception:  # noqa: BLE001 - any parse error: quoting is not the fix
        return None
    return shlex.quote(quoted)


def override_message(err: OverrideParseException) -> str:
    """The user's line for an override Hydra cannot parse: the override, Hydra's reason and, where quoting the value
    makes it parse (a file name with ``(``, ``[``...), how to quote it on the command line."""
    reason = str(err.message).strip().splitlines()[0] if str(err.message).strip() else "cannot parse it"
    message = f"cannot read `{err.override}` ({reason})"
    hint = quoting_hint(err.override)
    if hint is not None:
        message += (
            ": characters such as ( ) [ ] { } = and quotes are Hydra's override syntax; quote a file name, as in "
            f"{hint}"
        )
    return message


def hydra_message(err: CompactHydraException, prog: str) -> str:
    """The user's line for a Hydra composition error: for an unknown key, the closest known one; for an override
    it cannot parse, how to quote it (:func:`override_message`)."""
    if isinstance(err, OverrideParseException):
        return override_message(err)
    cause = err.__cause__
    parent = getattr(cause, "parent_node", None)
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and isinstance(parent, DictConfig) and full_key:
        prefix, _, key = str(full_key).rpartition(".")
        known = [str(k) for k in parent.keys() if not str(k).startswith("_")]
        message = f"unknown setting {full_key}"
        guess = difflib.get_close_matches(key, known, n=1)
        if guess:
            message += f" (did you mean {prefix + '.' if prefix else ''}{guess[0]}?)"
        if "_target_" in parent:
            return f"{message}; to pass a new argument to {parent._target_}, add it with +{full_key}=VALUE"
        return f"{message}; `{prog} --cfg job` prints every setting"
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        # a config group option that does not exist: Hydra's exception carries the file and the options
        group = err.missing_cfg_file.rpartition("/")[0]
        message = f"cannot find '{err.missing_cfg_file}'"
        if err.options:
            message += f"; available options in '{group}': {', '.join(err.options)}"
        return message
    return str(err).strip()


def fail(prog: str, message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """End the process with ``prog: error: message`` as the one line on stderr."""
    one_line = " ".join(message.split())  # a library's multi-line message still ends as one line
    sys.stderr.write(f"{prog}: error: {one_line}\n")
    sys.stderr.flush()
    sys.exit(code)


def run_cli(task: Callable[[DictConfig], T], cfg: DictConfig, prog: str) -> T:
    """Run ``task(cfg)``; a user's mistake is one line on stderr and exit 2, Ctrl-C one line and exit 130.

    A :class:`cdvd.errors.UserError` (bad data, checkpoint or setting; the message names it), an OmegaConf error
    (a setting of the wrong type, a missing key) and a Hydra instantiation error (a config group's arguments that
    its class refuses: ``trainer.precision=bogus``) are the user's; anything else is a bug and keeps its traceback.
    """
    try:
        return task(cfg)
    except UserError as err:
        logger.debug("user error", exc_info=True)
        fail(prog, user_message(err))
    except OmegaConfBaseException as err:
        fail(prog, f"bad setting: {err}".replace("\n", "; "))
    except InstantiationException as err:  # a config whose arguments its target refuses (trainer.precision=bogus)
        logger.debug("instantiation error", exc_info=True)
        fail(prog, instantiation_message(err))
    except Exception as err:
        if not is_lightning_misconfiguration(err):
            raise
        logger.debug("Lightning refused a setting", exc_info=True)
        fail(prog, f"bad setting: {err}")
    except KeyboardInterrupt:
        fail(prog, "interrupted (finished outputs are kept; rerun the same command to resume)", EXIT_INTERRUPTED)


def is_lightning_misconfiguration(err: BaseException) -> bool:
    """Whether ``err`` is Lightning's MisconfigurationException (its word for a setting it cannot work with), without
    importing Lightning: the commands that do not train never load it (seconds of start-up)."""
    module = sys.modules.get("lightning_fabric.utilities.exceptions")
    return module is not None and isinstance(err, module.MisconfigurationException)


def instantiation_message(err: InstantiationException) -> str:
    """The user's line for a config that Hydra built outside cdvd's own code (a sweeper, a launcher, a callback Hydra
    builds): the innermost cause, which says what is wrong. Where cdvd builds a part itself it knows the part's key
    (:func:`cdvd.training.run.build_part`); nothing here reads Hydra's message text."""
    return f"bad setting: {innermost_cause(err)}"  # a nested target's error: the innermost one says what is wrong
