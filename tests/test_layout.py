"""The package's layout: arrows point down, entry points stay thin, no module grows into a second job."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cdvd

PACKAGE = Path(cdvd.__file__).parent
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "configs" not in p.parts}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules ``path`` imports, at module level or inside functions (lazy imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            # `from cdvd.data import io` names the module cdvd.data.io; `from cdvd.data import DataError` the package
            if target in known:
                found.add(target)
                break
    return found - {name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


MAX_TOP_LEVEL_MODULES = 12


def test_a_short_top_level() -> None:
    """A home per concept: at most 12 modules directly under ``cdvd/``; the rest lives in its package (training,
    evaluation, inference, backends, data, models, video, cli)."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, p in _modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


def test_console_scripts_import_no_other_console_script() -> None:
    graph = _graph()
    scripts = {m for m in graph if m.startswith("cdvd.cli.") and m != "cdvd.cli.common"}
    assert {"cdvd.cli.train", "cdvd.cli.deblur", "cdvd.cli.evaluate", "cdvd.cli.demo"} <= scripts
    offenders = {m: graph[m] & scripts for m in scripts if graph[m] & scripts}
    assert not offenders, offenders
    entry_points = {"cdvd.__main__"}  # `python -m cdvd` lists the console scripts: an entry point like them
    library = {
        m: deps
        for m, deps in graph.items()
        if not m.startswith("cdvd.cli") and m not in entry_points and any(d.startswith("cdvd.cli") for d in deps)
    }
    assert not library, f"library modules importing a command line: {library}"


def test_library_imports_load_no_console_script() -> None:
    code = (
        "import sys, cdvd.data, cdvd.training.module, cdvd.training.callbacks, cdvd.models, cdvd.inference;"
        "import cdvd.evaluation.protocol;"
        "print(sorted(m for m in sys.modules if m.startswith('cdvd.cli')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("script", ["deblur", "evaluate", "export", "synth", "pack", "app"])
def test_commands_that_do_not_train_do_not_import_lightning(script: str) -> None:
    """Lightning takes seconds to import, paid by every cdvd-deblur process (a fifth of a short job's time)."""
    code = f"import sys, cdvd.cli.{script}; print('pytorch_lightning' in sys.modules, 'lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    # the check itself: two modules importing each other are found
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from cdvd.b import x\n")
    b.write_text("import cdvd.a\n")
    assert _imports(a, "cdvd.a", {"cdvd.a", "cdvd.b"}) == {"cdvd.b"}
    assert _imports(b, "cdvd.b", {"cdvd.a", "cdvd.b"}) == {"cdvd.a"}


def test_importing_the_errors_loads_no_torch() -> None:
    """``cdvd/__init__.py`` is lazy: the error types (and ``python -m cdvd``) cost no torch import, while the public
    names still resolve on first use."""
    code = (
        "import sys, cdvd.errors; print('torch' in sys.modules);"
        "import cdvd; print(callable(cdvd.load_model), 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True"]


def test_the_wheel_ships_every_package() -> None:
    """Every folder of ``cdvd/`` with an ``__init__.py`` is listed in pyproject's packages: an installed wheel (not an
    editable checkout) otherwise lacks it, and its tools fail at import."""
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    folders = {_module_name(init) for init in PACKAGE.rglob("__init__.py") if "configs" not in init.parts}
    assert folders <= listed, f"packages missing from pyproject.toml: {sorted(folders - listed)}"
