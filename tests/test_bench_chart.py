"""scripts/bench_all.py --chart: the table's timings drawn as bars, from a table in its format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_all.py"

TABLE = """Machine: Test CPU, 2 cores (flags: avx2), torch 0, no GPU

| benchmark | setting | figure |
|---|---|---|
| model (bench_model.py) | forward, batch 1, 256x256, fp32 | 4.58 s, 693 GFLOP, 151 GFLOP/s, peak RSS 805 MiB |
| deblur (`bench_deblur.py`) | 1280x720, streaming / per-window | **29.5 s/frame** / 63.3 s/frame (2.15x), RSS 2.4 GiB |
| deblur (bench_deblur.py) | streaming vs per-window, 640x360 | 2.01x |
| data (bench_data.py) | 1280x720 PNG, patch 256, 0 / 2 workers, no cache | 6.1 / 11.3 clips/s |

Text after the table.
"""


def load_script():  # noqa: ANN201 - the script as a module
    spec = importlib.util.spec_from_file_location("bench_all", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chart_of_a_table(tmp_path: Path) -> None:
    bench_all = load_script()
    machine, rows = bench_all.parse_table(TABLE)
    assert machine == "Test CPU, 2 cores (flags: avx2), torch 0, no GPU" and len(rows) == 4
    charted = [figure for row in rows for figure in bench_all.figures(row)]
    assert charted == [
        ("model: forward, batch 1, 256x256, fp32", 4.58, "s"),
        ("deblur: 1280x720, streaming", 29.5, "s/frame"),
        ("deblur: 1280x720, per-window", 63.3, "s/frame"),
        ("data: 1280x720 PNG, patch 256, 0 workers, no cache", 6.1, "clips/s"),
        ("data: 1280x720 PNG, patch 256, 2 workers, no cache", 11.3, "clips/s"),
    ]  # the ratio row has no timing
    path = bench_all.draw_chart(rows, machine, tmp_path / "images" / "chart.png")
    assert path.stat().st_size > 0
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert [p.name for p in path.parent.iterdir()] == ["chart.png"]  # written whole, nothing left beside it
