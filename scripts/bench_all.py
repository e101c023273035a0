"""Run every benchmark and write one markdown table.

    python scripts/bench_all.py                      # writes benchmarks.md (and prints it)
    python scripts/bench_all.py --quick              # smaller sizes: a few minutes on 2 cores
    python scripts/bench_all.py --output docs/bench.md
    python scripts/bench_all.py --chart docs/images/benchmarks.png          # the table, and a chart of it
    python scripts/bench_all.py --from-table benchmarks.md --chart docs/images/benchmarks.png   # chart, no run

Each benchmark runs as its own process (clean peak memory, no shared caches) with ``--json``; this script only
collects the figures. The machine line (CPU, cores, torch, GPU) heads the table: compare figures only between runs
on the same machine. ``--chart`` draws the table's timings (seconds per deblurred frame, seconds per forward pass or
training step, clips per second of data loading) as bars, titled with the machine line; ``--from-table`` reads a
table written earlier (this script's, or one in its format inside another markdown file, such as the README's) and
runs nothing (``--machine`` names the machine where the file has no ``Machine:`` line).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

from cdvd.atomic import atomic_destination
from cdvd.hardware import cpu_description, native_bf16

SCRIPTS = Path(__file__).resolve().parent
TABLE_HEADER = "| benchmark | setting | figure |"
MACHINE_PREFIX = "Machine: "
#: the units charted, each with its panel's axis label (in this order)
CHART_UNITS = {
    "s/frame": "deblurring: seconds per output frame (lower is better)",
    "s": "network forward / training step: seconds (lower is better)",
    "clips/s": "data loading: clips per second (higher is better)",
}
_NUMBERS = r"\d+(?:\.\d+)?(?:\s*[/,]\s*\d+(?:\.\d+)?)*"
_FIGURE = re.compile(rf"({_NUMBERS})\s*(s/frame|clips/s|ms|s)(?![\w/])")


def machine() -> str:
    """The machine line: CPU model and the flags that decide the fast paths, cores, torch, GPU."""
    cpu = cpu_description()
    flags = " ".join(name for name, present in cpu["flags"].items() if present) or "none of them"  # type: ignore[union-attr]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu['model']}, {os.cpu_count()} cores (flags: {flags}), torch {torch.__version__}, {gpu}"


def run(script: str, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(SCRIPTS / script), *args, "--json", str(out)]
        print("$", " ".join(cmd[1:]), flush=True)  # noqa: T201 - a script's progress
        subprocess.run(cmd, check=True)
        return json.loads(out.read_text())


def cpu_backends(size: str) -> list[str]:
    """Streaming on the CPU with every backend and precision that can pay here, side by side with torch fp32:
    OpenVINO where it is installed, bf16 where the CPU has it natively (emulated bf16 would only be slow)."""
    backends = ["torch"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    precisions = ["fp32"] + (["bf16"] if native_bf16(torch.device("cpu")) else [])
    if len(backends) == 1 and len(precisions) == 1:
        return []
    args = ["--device", "cpu", "--sizes", size, "--modes", "streaming", "--backends", *backends]
    results = run("bench_deblur.py", [*args, "--precisions", *precisions])["results"]
    base = next((r for r in results if r["backend"] == "torch" and r["precision"] == "fp32"), None)
    lines = []
    for r in results:
        ratio = f" ({base['steady_s_per_frame'] / r['steady_s_per_frame']:.2f}x torch fp32)" if base else ""
        lines.append(
            f"| deblur (bench_deblur.py) | streaming, {r['size']}, {r['backend']} {r['precision']}, cpu | "
            f"{r['steady_s_per_frame']:.2f} s/frame{ratio} |"
        )
    return lines


# ---------------------------------------------------------------------------------------------------------- chart


def parse_table(text: str) -> tuple[str | None, list[tuple[str, str, str]]]:
    """The machine line (after ``Machine: ``, if any) and the rows ``(benchmark, setting, figure)`` of the first table
    in this script's format (its header :data:`TABLE_HEADER`) in markdown ``text``; markup (``**``, backticks) removed.
    """
    lines = text.splitlines()
    machine = next((line[len(MACHINE_PREFIX) :].strip() for line in lines if line.startswith(MACHINE_PREFIX)), None)
    rows: list[tuple[str, str, str]] = []
    start = next((i for i, line in enumerate(lines) if line.strip() == TABLE_HEADER), None)
    if start is None:
        return machine, rows
    for line in lines[start + 2 :]:  # after the header and its |---| line
        cells = [cell.strip().replace("**", "").replace("`", "") for cell in line.strip().strip("|").split("|")]
        if not line.strip().startswith("|") or len(cells) != 3:
            break
        rows.append((cells[0], cells[1], cells[2]))
    return machine, rows


def _alternatives(setting: str) -> list[str]:
    """The settings a row compares: ``640x360, streaming / per-window`` -> ``640x360, streaming`` and
    ``640x360, per-window``; ``0 / 2 workers`` -> ``0 workers``, ``2 workers``; a setting without ``/``: itself."""
    parts = setting.split(", ")
    index = next((i for i, part in enumerate(parts) if " / " in part), None)
    if index is None:
        return [setting]
    options = parts[index].split(" / ")
    first, *tail = options[-1].split(" ", 1)
    if tail and all(" " not in option for option in options[:-1]):  # "0 / 2 workers": the words are shared
        options = [f"{option} {tail[0]}" for option in options[:-1]] + [options[-1]]
    return [", ".join([*parts[:index], option, *parts[index + 1 :]]) for option in options]


def figures(row: tuple[str, str, str]) -> list[tuple[str, float, str]]:
    """``(label, value, unit)`` of each setting of a row: the first timing unit of its figure (``s/frame``, ``s``,
    ``clips/s``, ``ms``), its values paired in order with the settings the row compares (:func:`_alternatives`);
    a row without one (a ratio) gives none."""
    benchmark, setting, figure = row
    found = [(match.group(1), match.group(2)) for match in _FIGURE.finditer(figure)]
    if not found:
        return []
    unit = found[0][1]
    values = [float(value) for numbers, kind in found if kind == unit for value in re.split(r"\s*[/,]\s*", numbers)]
    name = re.sub(r"\s*\(.*?\)", "", benchmark).strip()  # "deblur (bench_deblur.py)" -> "deblur"
    return [(f"{name}: {label}", value, unit) for label, value in zip(_alternatives(setting), values, strict=False)]


def draw_chart(rows: list[tuple[str, str, str]], machine: str, path: Path) -> Path:
    """Bars of the rows' timings (:func:`figures`), one panel per unit of :data:`CHART_UNITS`, titled with the
    machine line; written atomically to ``path`` (PNG).

    Raises:
        ValueError: no row holds a charted timing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_unit: dict[str, list[tuple[str, float]]] = {unit: [] for unit in CHART_UNITS}
    for row in rows:
        for label, value, unit in figures(row):
            if unit in by_unit:
                by_unit[unit].append((label, value))
    panels = [(unit, bars) for unit, bars in by_unit.items() if bars]
    if not panels:
        raise ValueError("no timing to chart in the table (s/frame, s or clips/s)")
    heights = [len(bars) + 1.5 for _, bars in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 0.34 * sum(heights) + 1.4), height_ratios=heights)
    for ax, (unit, bars) in zip([axes] if len(panels) == 1 else list(axes), panels, strict=True):
        labels = [textwrap.shorten(label, 70) for label, _ in bars]
        values = [value for _, value in bars]
        positions = range(len(bars))
        ax.barh(positions, values, color="#4c72b0")
        ax.set_yticks(list(positions), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(CHART_UNITS[unit], fontsize=9)
        ax.set_xlim(0, max(values) * 1.18)
        for position, value in zip(positions, values, strict=True):
            ax.text(value, position, f" {value:g}", va="center", fontsize=8)
    fig.suptitle("\n".join(textwrap.wrap(machine, 110)), fontsize=9)
    fig.tight_layout()
    with atomic_destination(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def chart_table(table: Path, chart: Path, machine: str | None) -> None:
    """``--from-table``: chart the table in ``table`` without running anything."""
    found, rows = parse_table(table.read_text(encoding="utf-8"))
    machine = machine or found
    if not rows or machine is None:
        what = f"no table headed {TABLE_HEADER!r}" if not rows else "no 'Machine:' line: pass --machine"
        raise SystemExit(f"--from-table {table}: {what}")
    print(f"wrote {draw_chart(rows, machine, chart)} ({len(rows)} rows of {table})")  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--output", type=Path, default=Path("benchmarks.md"))
    parser.add_argument("--chart", type=Path, help="also draw the table's timings into this PNG")
    parser.add_argument("--from-table", type=Path, help="chart this markdown file's table instead of running")
    parser.add_argument("--machine", help="with --from-table: the machine line of the title (CPU, flags, ...)")
    args = parser.parse_args()
    if args.from_table is not None:
        if args.chart is None:
            parser.error("--from-table needs --chart PATH")
        chart_table(args.from_table, args.chart, args.machine)
        return

    model_sizes = ["256x256"] if args.quick else ["256x256", "1280x720"]
    deblur_sizes = ["640x360"] if args.quick else ["640x360", "1280x720"]
    lines = [f"Machine: {machine()}", "", "| benchmark | setting | figure |", "|---|---|---|"]

    model = run("bench_model.py", ["--sizes", *model_sizes])
    for r in model["results"]:
        what = f"{r['task']}, batch {r['batch']}, {r['size']}, fp32"
        lines.append(
            f"| model (bench_model.py) | {what} | {r['seconds']:.2f} s, {r['gflop']:.0f} GFLOP, "
            f"{r['gflops_per_s']:.0f} GFLOP/s, peak RSS {r['peak_rss_mib']:.0f} MiB |"
        )
    deblur = run("bench_deblur.py", ["--sizes", *deblur_sizes])
    for r in deblur["results"]:
        lines.append(
            f"| deblur (bench_deblur.py) | {r['mode']}, {r['size']}, {r['precision']}, {r['device']} | "
            f"{r['steady_s_per_frame']:.2f} s/frame, peak RSS {r['peak_rss_mib']:.0f} MiB |"
        )
    for size, speedup in deblur.get("speedup_steady", {}).items():
        lines.append(f"| deblur (bench_deblur.py) | streaming vs per-window, {size} | {speedup:.2f}x |")
    lines += cpu_backends(deblur_sizes[0])
    train_args = ["--step-patch", "192", "--step-repeats", "1"] if args.quick else []  # MS-SSIM needs >= 161
    train = run("bench_train.py", train_args)
    for r in train.get("train_step", []):
        lines.append(
            f"| train (bench_train.py) | step, {r['loss']}, batch {r['batch']}, {r['patch']}x{r['patch']}, "
            f"{r['device']} | {r['step_s']:.2f} s |"
        )
    hem = train["hem"]
    lines.append(
        f"| train (bench_train.py) | L1 + 2 HEM {tuple(hem['shape'])}, ours vs original host version | "
        f"{1000 * hem['ours_s']:.1f} ms vs {1000 * hem['host_s']:.1f} ms ({hem['speedup']:.1f}x) |"
    )
    data = run("bench_data.py", ["--frames", "8", "--samples", "24"] if args.quick else [])
    for r in data["results"]:
        rates = ", ".join(f"{v:.1f}" for v in r["clips_per_s"])
        lines.append(
            f"| data (bench_data.py) | {data['settings']['size']}, {r.get('source', 'png')}, patch "
            f"{data['settings']['patch']}, workers {r['num_workers']}, cache {'on' if r['cache_frames'] else 'off'} | "
            f"{rates} clips/s (per epoch) |"
        )
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)  # noqa: T201
    if args.chart is not None:
        draw_chart(parse_table(text)[1], machine(), args.chart)
        print(f"chart: {args.chart}")  # noqa: T201


if __name__ == "__main__":
    main()
