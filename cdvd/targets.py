"""What cdvd builds from a file: one allow-list of its own classes, and the one check data read from a file passes.

A training checkpoint keeps the configs its module was built from (``hyper_parameters``: ``_target_`` mappings, plain
data read with ``weights_only=True``). Hydra's ``instantiate`` calls whatever a ``_target_`` names, so a file whose
loss config names ``pathlib.Path.write_text`` would write any file when rebuilt. Before anything read from a file is
built (``DeblurModule.load_from_checkpoint``) or trusted (a resumed run's checkpoint), :func:`check_file_targets`
refuses, in one line naming the key, every ``_target_`` in it, however deeply nested (``_args_`` included), that is
not one of cdvd's own classes for that part:

- the choices the project ships in its config groups (``configs/model`` for ``net``, ``configs/loss``,
  ``configs/optimizer``, ``configs/scheduler``), read from the packaged configs, so a new config is allowed by
  being shipped; and, for ``optimizer`` and ``scheduler``, every optimiser and learning-rate scheduler class of
  ``torch.optim`` (``optimizer._target_=torch.optim.SGD`` on a command line stores that class);
- each under the names it is spelled by: as in the configs (``torch.optim.AdamW``) and as its module and qualified
  name (``torch.optim.adamw.AdamW``, what a module built from a ``functools.partial`` stores).

An interpolation (``${...}``) in file data is refused too: OmegaConf resolves it while building, and a resolver such
as ``oc.create`` makes a config (a ``_target_`` of its own) that no check of the file's text would see. Checkpoints
of cdvd hold resolved values only.

What a user types or composes on the command line (``cdvd-train optimizer._target_=my.Optimizer``) is the user's own
choice and is built as given; only data read from a file is checked.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

from cdvd.checkpoints import CheckpointError

#: The parts of :class:`cdvd.training.module.DeblurModule` built from a config: the config group whose files ship its
#: choices, and where in each file the part's config sits.
ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "net": ("model", ("net",)),
    "loss": ("loss", ()),
    "optimizer": ("optimizer", ()),
    "scheduler": ("scheduler", ()),
}

#: The parts for which every class of that kind in ``torch.optim`` is allowed as well (``optimizer._target_=...SGD``).
_TORCH_KINDS = {"optimizer": "optimizers", "scheduler": "learning-rate schedulers"}


def _entries(value: Any, where: str) -> Iterator[tuple[str, Any, Any]]:
    """``(key path, key, item)`` of every entry of the mappings and lists in ``value``, at any depth."""
    if isinstance(value, Mapping):
        entries = [(f"{where}.{key}" if where else str(key), key, item) for key, item in value.items()]
    elif isinstance(value, list | tuple):
        entries = [(f"{where}[{index}]", index, item) for index, item in enumerate(value)]
    else:
        return
    for path, key, item in entries:
        yield path, key, item
        yield from _entries(item, path)


def _targets_in(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """``(key path, target)`` of every ``_target_`` in ``value`` (mappings and lists, at any depth)."""
    return ((path, item) for path, key, item in _entries(value, where) if key == "_target_")


def _shipped_targets(group: str, inside: tuple[str, ...]) -> set[str]:
    """Every ``_target_`` of the packaged config group ``group`` (under the keys ``inside`` of each file)."""
    from omegaconf import OmegaConf

    found: set[str] = set()
    for entry in resources.files("cdvd.configs").joinpath(group).iterdir():
        if not entry.name.endswith(".yaml"):
            continue
        node: Any = OmegaConf.to_container(OmegaConf.create(entry.read_text()), resolve=False)
        for key in inside:
            node = node.get(key) if isinstance(node, Mapping) else None
        found |= {target for _, target in _targets_in(node, "") if isinstance(target, str)}
    return found


def _torch_classes(role: str) -> dict[str, type]:
    """The optimisers (``optimizer``) or learning-rate schedulers (``scheduler``) of ``torch.optim``, by the public
    names ``torch.optim`` and ``torch.optim.lr_scheduler`` give them (their abstract bases left out)."""
    import torch

    scheduler = torch.optim.lr_scheduler
    if role == "optimizer":
        base, kinds = torch.optim.Optimizer, (torch.optim.Optimizer,)
    elif role == "scheduler":  # ReduceLROnPlateau derives from LRScheduler in newer torch releases only
        base, kinds = scheduler.LRScheduler, (scheduler.LRScheduler, scheduler.ReduceLROnPlateau)
    else:
        return {}
    found = {}
    for module in (torch.optim, scheduler):
        for name, obj in vars(module).items():
            if not name.startswith("_") and inspect.isclass(obj) and obj is not base and issubclass(obj, kinds):
                found[f"{module.__name__}.{name}"] = obj
    return found


@functools.cache
def allowed_targets() -> dict[str, frozenset[str]]:
    """The allow-list: for each part of :data:`ROLES`, the ``_target_`` names a file may give it, each under its name
    and its module-and-qualified-name spelling (``torch.optim.adamw.AdamW``)."""
    from hydra.utils import get_object

    allowed = {}
    for role, (group, inside) in ROLES.items():
        # get_object runs on the names of the configs cdvd ships only, never on a name read from a file
        named = {name: get_object(name) for name in _shipped_targets(group, inside)} | _torch_classes(role)
        allowed[role] = frozenset(
            spelling for name, obj in named.items() for spelling in (name, f"{obj.__module__}.{obj.__qualname__}")
        )
    return allowed


def shipped_examples(role: str) -> str:
    """The part's choices as the configs spell them, for a message."""
    group, inside = ROLES[role]
    names = sorted(_shipped_targets(group, inside))
    if role in _TORCH_KINDS:
        names.append(f"torch.optim's {_TORCH_KINDS[role]}")
    return ", ".join(names)


def check_file_targets(
    data: Mapping[str, Any], source: str, *, also: Mapping[str, Any] | None = None, advice: str = ""
) -> None:
    """Refuse ``data`` read from ``source`` unless every ``_target_`` in it is one of cdvd's own for its part.

    Args:
        data: the mapping read from the file (a checkpoint's ``hyper_parameters``): each key a part of :data:`ROLES`
            (anything else may hold no ``_target_``).
        source: what the message names first (``checkpoint runs/x/last.ckpt``).
        also: configs of the same shape that the user chose for this run (a resumed run's own settings): their
            targets are allowed for the same part as well.
        advice: what the message ends with (how to go on).

    Raises:
        CheckpointError: one line naming the key, its target and what is allowed; nothing has been built.
    """
    allowed = allowed_targets()
    tail = f"; {advice}" if advice else ""
    for where, _, text in _entries(data, ""):
        if isinstance(text, str) and "${" in text:  # a string OmegaConf would resolve
            raise CheckpointError(
                f"{source}: hyper_parameters {where}={text} is an interpolation (${{...}}), which cdvd's checkpoints "
                f"never hold (their values are resolved): refused, nothing in it was built{tail}"
            )
    for key, value in data.items():
        own = {t for _, t in _targets_in((also or {}).get(key), "") if isinstance(t, str)}
        permitted = allowed.get(str(key), frozenset()) | own
        for where, target in _targets_in(value, str(key)):
            if isinstance(target, str) and target in permitted:
                continue
            listed = f" ({shipped_examples(str(key))})" if str(key) in ROLES else ""
            raise CheckpointError(
                f"{source}: hyper_parameters {where}={target} is not one of cdvd's own classes for {key}{listed}: "
                f"refused, nothing in it was built{tail}"
            )
