"""How every tool reads its settings: a dataclass schema, checked once where the settings enter.

A schema's fields say each setting's type (OmegaConf's structured configs check it) and, where a range applies, its
bound: :func:`count` for whole numbers, :func:`number` for positive numbers. Rules between settings live in the
schema's ``__post_init__``. :func:`read_settings` checks a composed config against a schema and returns the typed
object; every wrong value is one :class:`cdvd.errors.ConfigError` that names the setting as the user writes it
(``trainer.max_epochs=abc: not a whole number``). Keys of the config that the schema does not name are left to the
code that owns them (a ``_target_`` group's arguments to its class).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from cdvd.errors import ConfigError, check_count, check_positive_number

T = TypeVar("T")

_LEAST = "least"
_ALLOW_ZERO = "allow_zero"


def count(least: int = 1, default: Any = dataclasses.MISSING) -> Any:
    """A field that holds a whole number ``>= least`` (a bool or ``3.0`` is refused; None where the type allows)."""
    return dataclasses.field(default=default, metadata={_LEAST: least})


def number(*, allow_zero: bool = False, default: Any = dataclasses.MISSING) -> Any:
    """A field that holds a finite number ``> 0`` (``>= 0`` with ``allow_zero``; None where the type allows)."""
    return dataclasses.field(default=default, metadata={_ALLOW_ZERO: allow_zero})


def default_of(owner: Callable[..., Any], name: str) -> Any:
    """The default of ``owner``'s argument ``name``: a schema field's default read from the constructor whose arguments
    it checks, so that the default has one home (an absent key then means what it means to the owner)."""
    return inspect.signature(owner).parameters[name].default


def _schema_of(hint: Any) -> type | None:
    """The dataclass a field's type names (``Tile`` or ``Tile | None``), if any."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def plain(value: Any) -> Any:
    """``value`` as plain Python data (what ``torch.load(weights_only=True)`` reads back, what a schema is merged
    from): OmegaConf containers become dicts and lists (resolved), paths strings, tuples stay tuples; anything else is
    returned as it is."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    return value


def _known(schema: type, values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The values of ``schema``'s fields in ``values`` (nested schemas too), their bounds checked."""
    hints = typing.get_type_hints(schema)
    known: dict[str, Any] = {}
    for field in dataclasses.fields(schema):
        if field.name not in values:
            continue
        key, value = prefix + field.name, values[field.name]
        nested = _schema_of(hints[field.name])
        if nested is not None and isinstance(value, Mapping):  # only its fields are read (and resolved)
            value = _known(nested, value, f"{key}.")
        elif value is not None and _LEAST in field.metadata:
            check_count(key, value, field.metadata[_LEAST])
        elif value is not None and _ALLOW_ZERO in field.metadata:
            value = check_positive_number(key, value, allow_zero=field.metadata[_ALLOW_ZERO])
        known[field.name] = plain(value)
    return known


def read_settings(schema: type[T], values: Mapping[str, Any], prefix: str = "") -> T:
    """``values`` (a composed config or a plain mapping) checked against ``schema`` and built into it.

    Args:
        schema: a dataclass whose fields are the settings (types, :func:`count`/:func:`number` bounds, defaults).
        values: the settings; keys the schema does not name are ignored, missing ones take the field's default.
        prefix: the settings' place in the composed config, for messages (``trainer.``).

    Raises:
        ConfigError: the first wrong setting, named (its ``__post_init__``'s own :class:`ConfigError` as it is).
    """
    known = _known(schema, values, prefix)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), known))  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        key = f"{prefix}{err.full_key or ''}".rstrip(".") or "a setting"
        given = f"={err.value}" if err.value is not None else "=null" if isinstance(err, ValidationError) else ""
        raise ConfigError(f"{key}{given}: {str(err.msg).strip().splitlines()[0]}") from err
