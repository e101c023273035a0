"""Deblurring split across processes: the shards of a Hydra multirun together make exactly one process's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import console_script, run_command
from helpers.data import tiny_checkpoint

from cdvd.data.io import write_rgb
from cdvd.data.sources import VideoSource, shard_sources


def three_videos(root: Path, seed: int) -> None:
    """A tiny checkpoint and a folder-layout dataset ``data/val`` of three 5-frame videos (a, b, c) with their GT."""
    tiny_checkpoint(root / "tiny.pt")
    rng = np.random.default_rng(seed)
    for video in ("a", "b", "c"):
        for i in range(5):
            gt = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            write_rgb(root / "data" / "val" / "blur" / video / f"{i:05d}.png", gt // 2 + 60)
            write_rgb(root / "data" / "val" / "gt" / video / f"{i:05d}.png", gt)


def test_shards_are_disjoint_complete_and_deterministic() -> None:
    sources = [VideoSource(f"v{i}", Path(f"v{i}"), []) for i in (3, 10, 1, 2, 20)]
    shards = [shard_sources(sources, 3, i) for i in range(3)]
    names = [[s.name for s in shard] for shard in shards]
    assert names == [["v1", "v10"], ["v2", "v20"], ["v3"]]  # natural order, every third
    assert sorted(n for shard in names for n in shard) == sorted(s.name for s in sources)
    assert [s.name for s in shard_sources(list(reversed(sources)), 3, 0)] == names[0]
    with pytest.raises(ValueError, match="shard=3"):
        shard_sources(sources, 3, 3)


@pytest.mark.slow
def test_a_multirun_over_shards_equals_one_process(tmp_path: Path) -> None:
    three_videos(tmp_path, seed=0)
    common = ["device=cpu", "progress=false", "input=data", "split=val", "checkpoint=tiny.pt"]
    single = run_command([console_script("cdvd-deblur"), *common, "output=single"], tmp_path)
    assert single.returncode == 0, single.stderr
    sharded = run_command(
        [console_script("cdvd-deblur"), "-m", *common, "output=sharded", "num_shards=2", "shard=0,1"], tmp_path
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(tmp_path / "single") == files(tmp_path / "sharded")
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir()) == ["a", "b", "c"]
    for name in ("single", "sharded"):
        scored = run_command(
            [console_script("cdvd-eval"), f"results={name}", "gt=data", "split=val", f"output={name}.json"], tmp_path
        )
        assert scored.returncode == 0, scored.stderr
    reports = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("single", "sharded")]
    assert reports[0]["total"] == reports[1]["total"] and reports[0]["total"]["frames"] == 3


def test_eval_of_one_shard_scores_that_shards_videos_only(tmp_path: Path) -> None:
    """``cdvd-eval input=... num_shards=2 shard=0`` deblurs and scores the shard's videos, not every GT video."""
    three_videos(tmp_path, seed=1)
    args = ["device=cpu", "progress=false", "input=data", "split=val", "checkpoint=tiny.pt", "num_shards=2"]
    for shard in (0, 1):
        result = run_command(
            [console_script("cdvd-eval"), *args, f"shard={shard}", f"results=r{shard}", f"output=m{shard}.json"],
            tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    videos = [sorted(json.loads((tmp_path / f"m{s}.json").read_text())["videos"]) for s in (0, 1)]
    assert videos == [["a", "c"], ["b"]]  # every 2nd video by name: disjoint, together all three
