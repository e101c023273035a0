"""Each console script's ``--help``: its own settings with the comments of its YAML file, and its own config groups.

Hydra renders ``--help`` from the template ``hydra.help.template`` (``configs/hydra/help/cdvd.yaml``, selected by every
tool's config; each names its console script in ``hydra.help.app_name``). The template asks the ``cdvd_help``
resolver for its parts, which reads the tool's packaged YAML file with its comments at help time:

* ``header``: the tool's one-line summary (its module's docstring) and the comment block that opens its YAML file;
* ``groups``: the config groups the composed config chose (none for a tool that composes none), with their options;
* ``settings``: ``key: value  # comment`` for each setting of the tool's YAML file (and of the files its defaults
  list extends, e.g. ``eval.yaml`` extends ``deblur.yaml``), with the value the command line composes.

Nothing here imports torch: ``python -m cdvd`` lists the tools with :func:`console_scripts` and :func:`tool_summary`.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.resources
import importlib.util
import itertools
import re
import shutil
import textwrap
from dataclasses import dataclass, replace
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

CONFIG_PACKAGE = "cdvd.configs"
"""The package the Hydra configs ship in (``configs/`` in a checkout)."""

DISTRIBUTION = "cdvd"
RESOLVER = "cdvd_help"
SKIPPED_KEYS = frozenset({"defaults", "hydra"})
"""Top-level keys of a config file that are not the tool's settings."""
COMMENT_COLUMN_MAX = 34

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>(?:\s.*)?)$")
_RST_ROLE = re.compile(r":\w+:`([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")


@dataclass(frozen=True)
class Setting:
    """One key of a config file: its dotted path, the value as written and the comment above or beside it."""

    path: tuple[str, ...]
    value: str
    comment: str


@dataclass(frozen=True)
class ConfigText:
    """A config file read with its comments: the comment block that opens it, its settings in order, and the configs
    of the same folder that its defaults list merges in (``eval.yaml``: ``deblur``)."""

    header: list[str]
    settings: list[Setting]
    extends: list[str]


def _split_inline_comment(rest: str) -> tuple[str, str]:
    """``(value, comment)`` of what follows ``key:``; a ``#`` inside quotes is part of the value."""
    quote = ""
    for i, char in enumerate(rest):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


def parse_config_text(text: str) -> ConfigText:
    """The settings of a block-style YAML config with their comments.

    The comment lines that open the file are its header; the comment lines right above a key (no blank line between)
    and a comment beside it are that key's. Keys under ``defaults`` and ``hydra`` are left out; of the defaults list,
    config groups (``data: synthetic``), ``_self_`` and overrides are not files it extends.
    """
    lines = text.splitlines()
    opening = [line.strip() for line in itertools.takewhile(lambda line: line.lstrip().startswith("#"), lines)]
    header = [line[1:].removeprefix(" ") for line in opening if not line.startswith("# @package")]
    settings: list[Setting] = []
    comment: list[str] = []
    stack: list[tuple[int, str]] = []
    for line in lines[len(opening) :]:
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = _KEY_LINE.match(line)
        if match is None:  # a list item or a continued value
            comment = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(key for _, key in stack), match["key"])
        stack.append((indent, match["key"]))
        value, beside = _split_inline_comment(match["rest"])
        if path[0] not in SKIPPED_KEYS:
            settings.append(Setting(path, value, " ".join([*comment, beside]).strip()))
        comment = []
    defaults = (yaml.safe_load(text) or {}).get("defaults") or []
    extends = [entry for entry in defaults if isinstance(entry, str) and entry != "_self_" and "/" not in entry]
    return ConfigText(header, settings, extends)


def read_config_text(name: str) -> ConfigText:
    """The packaged config ``name`` (``deblur``, ``train`` ...) read with its comments."""
    return parse_config_text(importlib.resources.files(CONFIG_PACKAGE).joinpath(f"{name}.yaml").read_text("utf-8"))


def tool_settings(name: str) -> list[Setting]:
    """The settings of config ``name``, then those of the configs it extends that it does not set itself; a setting
    without a comment of its own keeps the comment of the file it extends."""
    own = read_config_text(name)
    inherited: dict[tuple[str, ...], Setting] = {}
    for base in own.extends:
        inherited.update({s.path: s for s in tool_settings(base)})
    settings = []
    for setting in own.settings:
        parent = inherited.pop(setting.path, None)
        settings.append(replace(setting, comment=parent.comment) if parent and not setting.comment else setting)
    return settings + list(inherited.values())


def _lookup(values: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return False, None
        values = values[key]
    return True, values


def format_value(value: Any) -> str:
    """A value as YAML on one line (``null``, ``[onnx, openvino]``, ``${paths.root_dir}``)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def format_settings(settings: list[Setting], values: Any = None, width: int = 120) -> str:
    """``key: value  # comment`` lines, nested keys indented, comments wrapped at ``width`` in one column.

    ``values``: the composed config (as a plain dict, interpolations unresolved); its value of a key replaces the
    file's, so that the help shows what the command line with its overrides would run with.
    """
    rows = []
    for setting in settings:
        indent = "  " * (len(setting.path) - 1)
        found, value = _lookup(values, setting.path)
        shown = format_value(value) if found and not isinstance(value, dict) else setting.value
        rows.append((f"{indent}{setting.path[-1]}:{' ' + shown if shown else ''}", setting.comment))
    column = min(max((len(left) for left, _ in rows), default=0) + 2, COMMENT_COLUMN_MAX)
    lines = []
    for left, comment in rows:
        wrapped = textwrap.wrap(comment, width=max(width - column - 2, 30))  # [] for no comment
        fits = bool(wrapped) and len(left) + 2 <= column
        lines.append(f"{left.ljust(column)}# {wrapped.pop(0)}" if fits else left)
        lines.extend(f"{'':{column}}# {part}" for part in wrapped)
    return "\n".join(lines)


def console_scripts() -> dict[str, str]:
    """``{script name: "module:function"}`` of the installed distribution's console scripts, in its order."""
    try:
        points = importlib.metadata.distribution(DISTRIBUTION).entry_points
    except importlib.metadata.PackageNotFoundError:
        return {}
    return {point.name: point.value for point in points if point.group == "console_scripts"}


def tool_summary(script: str, target: str) -> str:
    """The first paragraph of the docstring of the module behind ``target`` (``cdvd.cli.deblur:main``), read from
    its source without importing it, without the leading ``cdvd-deblur:``; empty when there is none."""
    spec = importlib.util.find_spec(target.partition(":")[0])
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return ""
    with open(spec.origin, encoding="utf-8") as source:
        docstring = ast.get_docstring(ast.parse(source.read())) or ""
    summary = " ".join(docstring.split("\n\n")[0].split())
    summary = summary.removeprefix(f"``{script}``:").strip()
    return _RST_LITERAL.sub(r"\1", _RST_ROLE.sub(r"\1", summary))


def help_header(app_name: str, config_name: str) -> str:
    """``cdvd-deblur: <summary>`` and the comment block that opens the tool's YAML file, indented."""
    target = console_scripts().get(app_name, "")
    summary = tool_summary(app_name, target) if target else ""
    lines = [f"{app_name}: {summary}" if summary else app_name]
    header = read_config_text(config_name).header
    if header:
        lines += ["", *(f"  {line}".rstrip() for line in header)]
    return "\n".join(lines)


def group_options(group: str) -> list[str]:
    """The options Hydra accepts for ``group`` (its config search path: the packaged configs, plugins, --config-dir);
    asked while Hydra renders the help, so its global state is set."""
    from hydra.core.global_hydra import GlobalHydra

    return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def help_groups(choices: dict[str, Any]) -> str:
    """``group: choice  (options: ...)`` for each of the tool's own config groups (Hydra's own groups left out: those
    are ``--hydra-help``'s); empty for a tool that composes none."""
    groups = sorted(g for g in choices if g != "hydra" and not g.startswith("hydra/"))
    if not groups:
        return ""
    width = max(len(g) for g in groups) + 1
    lines = ["== Config groups (group=option; the settings of one: --cfg job --package GROUP) =="]
    for group in groups:
        options = group_options(group)
        line = f"{group + ':':{width}} {format_value(choices[group])}"
        lines.append(f"{line}  (options: {', '.join(options)})" if options else line)
    return "\n".join(lines)


def render_help_part(part: str, root: DictConfig) -> str:
    """One part (``header``, ``groups``, ``settings``) of the help of the tool whose composed config is ``root``.

    ``$`` is doubled: Hydra passes the template through :class:`string.Template`.
    """
    hydra_cfg = root.hydra
    config_name = str(hydra_cfg.job.config_name)
    if part == "header":
        text = help_header(str(hydra_cfg.help.app_name), config_name)
    elif part == "groups":
        choices = OmegaConf.to_container(hydra_cfg.runtime.choices, resolve=False)
        text = help_groups(choices if isinstance(choices, dict) else {})
        text = text + "\n\n" if text else ""  # a blank line before the settings
    elif part == "settings":
        values = OmegaConf.to_container(root, resolve=False)
        width = min(max(shutil.get_terminal_size((120, 24)).columns, 80), 120)
        body = format_settings(tool_settings(config_name), values, width)
        text = "== Settings (override any: key=value, nested ones as a.b=value) ==\n" + body
    else:
        raise ValueError(f"unknown help part {part!r} (header, groups or settings)")
    return text.replace("$", "$$")


def register_help_resolver() -> None:
    """Register ``${cdvd_help:PART}`` (:func:`render_help_part`), which ``hydra/help/cdvd.yaml``'s template uses."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda part, *, _root_: render_help_part(part, _root_))
