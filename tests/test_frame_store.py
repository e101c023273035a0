"""The LMDB frame store: packing, exact reads, the data option, workers, errors and the cdvd-pack command line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.cli import compose_config, console_script, run_command
from helpers.data import make_tree
from hydra.utils import instantiate

from cdvd import atomic as atomic_module
from cdvd.data import DeblurDataModule, FrameStore, pack_dataset, read_rgb, write_rgb
from cdvd.data.frame_store import FORMAT, META_KEY, import_lmdb
from cdvd.errors import ConfigError, DataError

SIZE = (32, 48)
P = 16


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A folder-layout dataset of 32x48 frames: train (2 videos) and val (2 videos, one shorter than a window)."""
    root = tmp_path / "data"
    make_tree(root, "folder", {"v0": 8, "v1": 6}, "train", size=SIZE)
    make_tree(root, "folder", {"w0": 6, "w1": 5}, "val", size=SIZE)
    return root


def frame_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.png"))


@pytest.mark.parametrize("layout", ["dvd", "gopro", "reds", "folder"])
def test_pack_then_read_gives_the_files_bytes_and_pixels(tmp_path, layout):
    root = tmp_path / "data"
    make_tree(root, layout, {"a": 3, "b": 2}, "train", size=SIZE)
    make_tree(root, layout, {"c": 2}, "test", size=SIZE)
    report = pack_dataset(root)  # layout and splits found from the folders
    assert report.output == tmp_path / "data.lmdb" and report.layout == layout
    assert set(report.splits) == {"train", "test"} and report.n_videos == 3

    store = FrameStore(report.output)
    files = frame_files(root)
    assert report.n_frames == len(files) == store.meta.n_frames == 2 * (3 + 2 + 2)
    for path in files:
        key = path.relative_to(root).as_posix()
        assert store.read_bytes(key) == path.read_bytes()  # stored as on disk, not re-encoded
        frame = store.read(key)
        assert frame.dtype == np.uint8 and frame.shape == (*SIZE, 3) == store.meta.shapes[key]
        assert np.array_equal(frame, read_rgb(path))
    assert store.meta.layout == layout and store.meta.source_root == str(root.resolve())
    videos = store.videos("train", layout=layout)
    assert [v.name for v in videos] == ["a", "b"] and videos[0].size == SIZE
    assert all(p.is_relative_to(report.output) for v in videos for p in (*v.blur, *v.gt))


def test_raw_encoding_stores_the_decoded_pixels(tmp_path, dataset):
    report = pack_dataset(dataset, tmp_path / "raw.lmdb", encoding="raw")
    store = FrameStore(report.output)
    assert store.meta.encoding == "raw" and report.n_bytes == 50 * SIZE[0] * SIZE[1] * 3
    for path in frame_files(dataset):
        key = path.relative_to(dataset).as_posix()
        expected = read_rgb(path)
        assert store.read_bytes(key) == expected.tobytes()
        frame = store.read(key)
        assert frame.flags.writeable and np.array_equal(frame, expected)
    with pytest.raises(DataError, match=r"frame val/gt/w9/00000\.png is not in the frame store"):
        store.read("val/gt/w9/00000.png")
    with pytest.raises(ConfigError, match="encoding must be one of file, raw, instead got 'jpeg'"):
        pack_dataset(dataset, tmp_path / "x.lmdb", encoding="jpeg")


def test_a_root_that_is_one_split_and_chosen_splits(tmp_path, dataset):
    one = pack_dataset(dataset / "val", tmp_path / "val.lmdb")
    assert one.splits == (None,) and [v.name for v in FrameStore(one.output).videos(None)] == ["w0", "w1"]
    chosen = pack_dataset(dataset, tmp_path / "train.lmdb", splits=["train"])
    assert chosen.splits == ("train",) and chosen.n_frames == 2 * (8 + 6)
    with pytest.raises(DataError, match=r"split val is not in the frame store .*train\.lmdb \(it holds: train\)"):
        FrameStore(chosen.output).videos("val")


def batches(dm: DeblurDataModule, n_epochs: int = 2) -> list[dict]:
    dm.setup("fit")
    train = [b for _ in range(n_epochs) for b in dm.train_dataloader()]
    return train + list(dm.val_dataloader())


def assert_same_batches(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key


@pytest.mark.parametrize(("workers", "encoding"), [(0, "file"), (1, "file"), (0, "raw")])
def test_the_store_gives_the_batches_of_the_files_without_them(tmp_path, dataset, workers, encoding):
    settings = {"layout": "folder", "patch_size": P, "batch_size": 2, "seed": 0, "num_workers": workers}
    settings |= {"val_frames": "all", "n_frames_per_video": 7}
    from_files = batches(DeblurDataModule(root=dataset, **settings))
    store = pack_dataset(dataset, tmp_path / "packed.lmdb", encoding=encoding).output
    moved = tmp_path / "elsewhere"
    shutil.move(dataset, moved)  # the PNG tree is not needed
    from_store = batches(DeblurDataModule(frame_store=store, **settings))
    assert_same_batches(from_files, from_store)
    assert from_store[-1]["video"] == ["w1"] and from_store[0]["blur"].shape == (2, 5, 3, P, P)


def test_the_data_config_reads_a_store(tmp_path, dataset):
    store = pack_dataset(dataset, tmp_path / "s.lmdb").output
    overrides = ["+data=default", f"data.frame_store={store}", "data.patch_size=8", "data.num_workers=0"]
    overrides += ["data.val_split=val", "data.batch_size=1"]
    dm = instantiate(compose_config(None, overrides).data)
    assert dm.frame_store.path == store
    dm.setup("fit")
    assert len(dm.train_set) == (8 - 4) + (6 - 4) and len(dm.val_set) == (6 - 4) + (5 - 4)


def test_settings_that_disagree_with_the_store(tmp_path, dataset):
    store = pack_dataset(dataset, tmp_path / "s.lmdb").output
    with pytest.raises(ConfigError, match=r"layout=dvd but the frame store .* holds a folder dataset"):
        DeblurDataModule(layout="dvd", frame_store=store).setup("fit")
    with pytest.raises(ConfigError, match="blur_gamma=true but the frame store .* blur_gamma=false"):
        DeblurDataModule(layout="auto", blur_gamma=True, frame_store=store).setup("fit")
    with pytest.raises(DataError, match=r"split test is not in the frame store .* \(it holds: train, val\)"):
        DeblurDataModule(val_split="test", frame_store=store, patch_size=P).setup("validate")
    with pytest.raises(ValueError, match="unset train_root"):
        DeblurDataModule(train_root=dataset, frame_store=store)
    with pytest.raises(DataError, match=r"frame store not found: .*missing\.lmdb .*cdvd-pack"):
        DeblurDataModule(frame_store=tmp_path / "missing.lmdb").setup("fit")


def test_a_missing_key_names_it_and_the_store(tmp_path, dataset):
    store = FrameStore(pack_dataset(dataset, tmp_path / "s.lmdb").output)
    with pytest.raises(DataError, match=r"frame train/blur/v0/00099\.png is not in the frame store .*s\.lmdb"):
        store.read("train/blur/v0/00099.png")
    with pytest.raises(DataError, match="is not a path inside the frame store"):
        store.key(dataset / "train/blur/v0/00000.png")


def test_corrupt_frames_and_foreign_stores_are_named(tmp_path, dataset):
    lmdb = import_lmdb()
    output = pack_dataset(dataset, tmp_path / "s.lmdb").output
    with lmdb.open(str(output)) as env, env.begin(write=True) as txn:
        txn.put(b"train/gt/v1/00002.png", b"\x89PNG not really")
    with pytest.raises(DataError, match=r"cannot decode image .*: train/gt/v1/00002\.png in the frame store"):
        FrameStore(output).read("train/gt/v1/00002.png")
    (dataset / "val/blur/w0/00003.png").write_bytes(b"\x89PNG not really")  # caught when packing
    with pytest.raises(DataError, match=r"cannot decode image .*val/blur/w0/00003\.png"):
        pack_dataset(dataset, tmp_path / "t.lmdb")
    for name, meta in (("new", {"format": FORMAT, "version": 99}), ("other", {"format": "x"})):
        with lmdb.open(str(tmp_path / name), map_size=2**20) as env, env.begin(write=True) as txn:
            txn.put(META_KEY, json.dumps(meta).encode())
    with pytest.raises(DataError, match=r"format version 99, this cdvd reads 1: pack it again"):
        _ = FrameStore(tmp_path / "new").meta
    with pytest.raises(DataError, match="not a cdvd frame store"):
        _ = FrameStore(tmp_path / "other").meta


def test_packing_is_atomic_and_never_writes_into_the_dataset(tmp_path, dataset, monkeypatch):
    before = {p: p.read_bytes() for p in frame_files(dataset)}
    with pytest.raises(DataError, match="must lie outside the dataset root"):
        pack_dataset(dataset, dataset / "train" / "store.lmdb")
    output = pack_dataset(dataset, tmp_path / "s.lmdb").output
    with pytest.raises(DataError, match=r"frame store already exists: .*s\.lmdb \(overwrite=true"):
        pack_dataset(dataset, output)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("a folder of the user's")
    with pytest.raises(DataError, match="notes exists and was not made by cdvd-pack: not replaced"):
        pack_dataset(dataset, tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "a folder of the user's"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_module, "_move_into_place", full_disk)  # the disk fills as the store is moved in
    with pytest.raises(DataError, match=r"cannot write the frame store .*s\.lmdb: No space left on device"):
        pack_dataset(dataset, output, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes", "s.lmdb"]  # no half-made store left
    assert FrameStore(output).meta.n_frames == 2 * (8 + 6 + 6 + 5)  # the previous store, whole
    assert {p: p.read_bytes() for p in frame_files(dataset)} == before


def test_a_short_map_grows(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(12):  # incompressible 128x128 frames: about 600 KB of PNG per split, more than the 1 MiB map
        for part in ("blur", "gt"):
            write_rgb(tmp_path / "d" / part / "v" / f"{k:03d}.png", rng.integers(0, 256, (128, 128, 3), np.uint8))
    report = pack_dataset(tmp_path / "d", map_size=2**20)
    assert report.n_bytes > 2**20
    store = FrameStore(report.output)
    assert np.array_equal(store.read("gt/v/011.png"), read_rgb(tmp_path / "d/gt/v/011.png"))


def test_without_the_lmdb_package(tmp_path, dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "lmdb", None)
    with pytest.raises(ConfigError, match=r"frame stores need the lmdb package: pip install 'cdvd\[lmdb\]'"):
        pack_dataset(dataset, tmp_path / "s.lmdb")
    assert not (tmp_path / "s.lmdb").exists()


def test_cdvd_pack_command_line(tmp_path, dataset):
    exe = console_script("cdvd-pack")
    done = run_command([exe, f"root={dataset}"], cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    output = tmp_path / "data.lmdb"
    assert "packed 4 videos, 50 frames" in done.stdout
    assert FrameStore(output).meta.n_frames == 50
    again = run_command([exe, f"root={dataset}"], cwd=tmp_path, timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"cdvd-pack: error: frame store already exists: {output} (overwrite=true to replace it)"
    ]


def test_pack_config(tmp_path, dataset):
    from cdvd.cli.pack import run_pack

    output = tmp_path / "s.lmdb"
    cfg = compose_config("pack", [f"root={dataset}", f"output={output}", "splits=val", "layout=folder"])
    report = run_pack(cfg)
    assert report.output == output and list(FrameStore(output).meta.splits) == ["val"]
    cfg = compose_config("pack", [f"root={dataset}", f"output={output}", "splits=[train,val]", "overwrite=true"])
    assert run_pack(cfg).splits == ("train", "val")
    assert compose_config("pack", [f"root={dataset}"]).output is None  # <root>.lmdb
    with pytest.raises(ConfigError, match="root=DIR is required"):
        run_pack(compose_config("pack", []))
