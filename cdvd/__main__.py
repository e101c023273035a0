"""``python -m cdvd``: the command-line tools this package installs, one line each (no torch import).

The list is the installed distribution's console scripts (pyproject's ``[project.scripts]``); each line is the first
paragraph of the tool's module docstring, read from its source.
"""

from __future__ import annotations

import argparse
import sys

from cdvd import __version__
from cdvd.cli.help import console_scripts, tool_summary


def tools_listing() -> str:
    """``cdvd <version>`` and one ``  name  summary`` line per console script."""
    scripts = console_scripts()
    if not scripts:
        return f"cdvd {__version__}: no console scripts found; install the package (pip install -e .)"
    width = max(len(name) for name in scripts) + 2
    lines = [f"cdvd {__version__}: CDVD-TSP video deblurring. The tools:"]
    lines += [f"  {name:{width}}{tool_summary(name, target)}" for name, target in scripts.items()]
    lines += [
        "",
        "Each takes Hydra settings as key=value; `TOOL --help` lists its settings with what they mean,",
        "`TOOL --cfg job` prints its whole config.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print :func:`tools_listing`; exit 0 (1 where the package is not installed and no tool can be listed)."""
    parser = argparse.ArgumentParser(prog="python -m cdvd", description="List the cdvd command-line tools.")
    parser.parse_args(argv)
    sys.stdout.write(tools_listing() + "\n")
    return 0 if console_scripts() else 1


if __name__ == "__main__":
    sys.exit(main())
