"""Checks of a hyper-parameter search (``hparams_search=...``) made before Hydra's Optuna sweeper starts it.

The sweeper turns its settings into Optuna objects only once the sweep runs, and a range it cannot use ends there in
a traceback (``interval(3e-4, 1e-5)``: low above high), ``n_trials=0`` ends with one after the sweep (no best trial),
and ``n_jobs=0`` never ends. :class:`CheckOptunaSearch` is a Hydra callback (``hydra.callbacks`` in
``configs/hparams_search/``): Hydra builds it before the sweeper, with the search's settings, and it refuses them in
one :class:`cdvd.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.experimental.callback import Callback

from cdvd.errors import ConfigError, check_count

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def check_search_space(params: Mapping[str, Any] | None, overrides: Sequence[str]) -> None:
    """Every range of the search (the config's ``hydra.sweeper.params`` and the command line's sweeps, such as
    ``optimizer.lr=tag(log, interval(1e-5, 3e-4))``) as the Optuna sweeper reads it.

    Raises:
        ConfigError: naming the setting and the range Optuna refuses.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    parser = OverridesParser.create()
    given = [(f"hydra.sweeper.params.{key}", f"{key}={value}") for key, value in (params or {}).items()]
    given += [(text.split("=", 1)[0], text) for text in overrides]
    for name, text in given:
        try:
            (override,) = parser.parse_overrides([text])
            if override.is_sweep_override():
                create_optuna_distribution_from_override(override)
        except Exception as err:  # noqa: BLE001 - Optuna and the parser refuse a range in several ways
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            value = text.split("=", 1)[1]
            raise ConfigError(f"{name}={value}: not a range the Optuna sweeper takes ({reason})") from None


class CheckOptunaSearch(Callback):
    """Refuses a search that cannot run, when Hydra builds its callbacks (before the sweeper is made). Takes
    ``hydra.sweeper``'s ``_target_`` (nothing is checked for another sweeper), ``n_trials``, ``n_jobs`` and
    ``params``, and the command line's overrides (``hydra.overrides.task``)."""

    def __init__(
        self,
        sweeper: str | None = None,
        n_trials: Any = None,
        n_jobs: Any = None,
        params: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
    ) -> None:
        if sweeper != OPTUNA_SWEEPER:
            return
        check_count("hydra.sweeper.n_trials", n_trials, 1)
        check_count("hydra.sweeper.n_jobs", n_jobs, 1)
        check_search_space(params, [str(o) for o in overrides])
