"""DeblurDataModule: training clips, validation windows, epoch length, errors, the Hydra configs."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from helpers.cli import compose_config
from helpers.data import GT_OFFSET, SIZE, decode, make_tree, write_video
from hydra.utils import instantiate

from cdvd.data import DeblurDataModule, TrainClipDataset, discover_videos
from cdvd.errors import ConfigError, DataError

P = 8


def module(root, **kwargs) -> DeblurDataModule:
    settings = {"layout": "folder", "root": root, "patch_size": P, "batch_size": 2, "seed": 0}
    settings.update(kwargs)
    return DeblurDataModule(**settings)


@pytest.fixture
def folder_root(tmp_path):
    make_tree(tmp_path, "folder", {"v0": 10, "v1": 7}, "train")
    make_tree(tmp_path, "folder", {"w0": 6, "w1": 3}, "val")
    return tmp_path


def check_clip(blur: torch.Tensor, sharp: torch.Tensor, patch: int, max_start: int | None = None) -> None:
    """One crop, flip and rotation for all frames and the GT; consecutive frames of one video."""
    rows, cols, codes = decode(blur)
    g_rows, g_cols, g_codes = decode(sharp)
    assert np.array_equal(rows, g_rows) and np.array_equal(cols, g_cols)
    assert (rows == rows[0]).all() and (cols == cols[0]).all()  # the same place in every frame
    assert np.array_equal(g_codes, codes + GT_OFFSET)
    # a patch x patch window of consecutive rows and columns, possibly flipped or transposed
    assert sorted(set(rows[0].ravel())) == list(range(rows[0].min(), rows[0].min() + patch))
    assert sorted(set(cols[0].ravel())) == list(range(cols[0].min(), cols[0].min() + patch))
    assert rows[0].max() < SIZE[0] and cols[0].max() < SIZE[1]
    per_frame = codes[:, 0, 0]
    assert (codes == per_frame[:, None, None]).all()
    video = per_frame[0] % 10
    frames = (per_frame - video) // 10
    assert list(frames) == list(range(frames[0], frames[0] + 5))
    if max_start is not None:
        assert frames[0] <= max_start


def test_training_batches_and_alignment(folder_root):
    dm = module(folder_root, n_frames_per_video=None)
    dm.setup("fit")
    assert len(dm.train_set) == (10 - 4) + (7 - 4)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"blur", "sharp"}
    assert batch["blur"].shape == (2, 5, 3, P, P) and batch["blur"].dtype == torch.float32
    assert batch["sharp"].shape == (2, 5, 3, P, P)
    assert 0 <= float(batch["blur"].min()) and float(batch["blur"].max()) <= 1
    orientations = set()
    for i in range(len(dm.train_set)):
        item = dm.train_set[i]
        check_clip(item["blur"], item["sharp"], P)
        rows, cols, _ = decode(item["blur"])
        orientations.add(
            (rows[0, 0, 0] < rows[0, -1, 0], cols[0, 0, 0] < cols[0, 0, -1], rows[0, 0, 0] == rows[0, 0, 1])
        )
    assert len(orientations) > 2  # flips and transpositions do happen


def test_no_augment_keeps_orientation(folder_root):
    dm = module(folder_root, augment=False, patch_size=None, batch_size=1)
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["blur"].shape == (5, 3, *SIZE)
    rows, cols, _ = decode(item["blur"])
    assert rows[0, :, 0].tolist() == list(range(SIZE[0])) and cols[0, 0].tolist() == list(range(SIZE[1]))


def test_frame_cap(folder_root):
    dm = module(folder_root, n_frames_per_video=6)
    dm.setup("fit")
    assert len(dm.train_set) == (6 - 4) + (6 - 4)
    for i in range(len(dm.train_set)):
        item = dm.train_set[i]
        check_clip(item["blur"], item["sharp"], P, max_start=1)


def test_epoch_length(folder_root):
    dm = module(folder_root, samples_per_epoch=13)
    dm.setup("fit")
    assert len(dm.train_set) == 13
    assert len(dm.train_dataloader()) == 6  # drop_last
    dm = module(folder_root, batches_per_epoch=5, batch_size=3)
    dm.setup("fit")
    assert len(dm.train_set) == 15 and len(dm.train_dataloader()) == 5
    with pytest.raises(ValueError, match="not both"):
        module(folder_root, samples_per_epoch=4, batches_per_epoch=2)


def test_the_module_names_a_count_or_layout_it_cannot_use(folder_root):
    # the data module's own rule (also what cdvd-train checks before any work, with the data. prefix)
    for kwargs, named in (
        ({"batch_size": 0}, "batch_size=0: must be >= 1"),
        ({"patch_size": 2.5}, "patch_size=2.5: not a whole number"),
        ({"samples_per_epoch": -3}, "samples_per_epoch=-3: must be >= 1"),
        ({"num_workers": -1}, "num_workers=-1: must be >= 0"),
        ({"layout": "vimeo"}, "layout=vimeo: expected one of dvd, gopro, reds, folder or auto"),
    ):
        with pytest.raises(ConfigError, match=re.escape(named)):
            module(folder_root, **kwargs)


def test_seeded_crops_repeat(folder_root):
    def first_batch():
        dm = module(folder_root, seed=3)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))["blur"]

    assert torch.equal(first_batch(), first_batch())


def test_workers(folder_root):
    dm = module(folder_root, num_workers=2, persistent_workers=True, cache_frames=True, samples_per_epoch=8)
    dm.setup("fit")
    loader = dm.train_dataloader()
    epochs = [list(loader) for _ in range(2)]
    loader._iterator._shutdown_workers()  # as Lightning does at teardown; gc alone can wait 5 s per worker
    blurs = [torch.cat([b["blur"] for b in epoch]) for epoch in epochs]
    assert blurs[0].shape == (8, 5, 3, P, P)
    assert not torch.equal(blurs[0], blurs[1])  # new crops every epoch
    for batch in epochs[1]:
        for blur, sharp in zip(batch["blur"], batch["sharp"], strict=True):
            check_clip(blur, sharp, P)


def test_short_videos_skipped(tmp_path, caplog):
    make_tree(tmp_path, "folder", {"long": 6, "tiny": 3}, "train")
    make_tree(tmp_path, "folder", {"w": 5}, "val")
    dm = module(tmp_path)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "tiny" in caplog.text and "long" not in caplog.text
    assert len(dm.train_set) == 2


def test_all_videos_too_short(tmp_path):
    make_tree(tmp_path, "folder", {"tiny": 3}, "train")
    make_tree(tmp_path, "folder", {"w": 5}, "val")
    with pytest.raises(DataError, match="no training video has 5 frames") as err:
        module(tmp_path).setup("fit")
    assert str(tmp_path) in str(err.value)


def test_patch_larger_than_frames(folder_root):
    with pytest.raises(DataError, match="smaller than patch_size 64") as err:
        module(folder_root, patch_size=64).setup("fit")
    assert str(folder_root / "train" / "blur" / "v0") in str(err.value)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="dataset root not found") as err:
        module(tmp_path / "absent").setup("fit")
    assert str(tmp_path / "absent") in str(err.value)


def test_corrupt_frame_at_load_time(folder_root):
    dm = module(folder_root, check_sizes=False)
    dm.setup("fit")
    bad = folder_root / "train" / "gt" / "v1" / "00002.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot decode image") as err:
        for i in range(len(dm.train_set)):
            dm.train_set[i]
    assert str(bad) in str(err.value)


def test_validation_paper_frames(folder_root):
    dm = module(folder_root, val_frames="paper")
    dm.setup("validate")
    assert len(dm.val_set) == (6 - 4) + 0  # the 3-frame video has no full window
    batch = next(iter(dm.val_dataloader()))
    assert batch["blur"].shape == (1, 5, 3, *SIZE) and batch["sharp"].shape == (1, 5, 3, *SIZE)
    assert batch["video"] == ["w0"] and batch["frame"] == ["00002.png"] and batch["index"].tolist() == [2]
    _, _, codes = decode(batch["blur"][0])
    assert codes[:, 0, 0].tolist() == [0, 10, 20, 30, 40]


def test_validation_all_frames_reflect(folder_root):
    dm = module(folder_root, val_frames="all")
    dm.setup("validate")
    assert len(dm.val_set) == 6 + 3
    items = [dm.val_set[i] for i in range(len(dm.val_set))]
    first = items[0]
    assert (first["video"], first["frame"], first["index"]) == ("w0", "00000.png", 0)
    assert (decode(first["blur"])[2][:, 0, 0] // 10).tolist() == [2, 1, 0, 1, 2]
    last_short = items[-1]
    assert (last_short["video"], last_short["index"]) == ("w1", 2)
    assert ((decode(last_short["sharp"])[2][:, 0, 0] - GT_OFFSET) // 10).tolist() == [0, 1, 2, 1, 0]


@pytest.mark.parametrize("n_frames", [1, 2, 4])
def test_validation_tiny_videos(tmp_path, n_frames):
    make_tree(tmp_path, "folder", {"v": 5}, "train")
    make_tree(tmp_path, "folder", {"w": n_frames}, "val")
    dm = module(tmp_path, val_frames="all")
    dm.setup("validate")
    assert len(dm.val_set) == n_frames
    assert all(dm.val_set[i]["blur"].shape == (5, 3, *SIZE) for i in range(n_frames))
    with pytest.raises(DataError, match="no validation frames"):
        module(tmp_path, val_frames="paper").setup("validate")


def test_train_dataset_needs_gt(tmp_path):
    make_tree(tmp_path, "folder", {"v": 5}, gt=False)
    videos = discover_videos(tmp_path, "folder", require_gt=False)
    with pytest.raises(DataError, match="no GT"):
        TrainClipDataset(videos)


def test_frames_of_different_sizes_in_a_clip(tmp_path):
    make_tree(tmp_path, "folder", {"v": 5}, "train")
    make_tree(tmp_path, "folder", {"w": 5}, "val")
    write_video(tmp_path / "train" / "gt" / "v", 5, gt=True, size=(20, 32))
    with pytest.raises(DataError, match="differs") as err:
        module(tmp_path).setup("fit")
    assert "train/gt/v/00000.png" in str(err.value) or "train/blur/v/00000.png" in str(err.value)


# --------------------------------------------------------------------------------------------- Hydra configs


@pytest.mark.parametrize(
    ("name", "split_train", "split_val", "extra"),
    [
        ("dvd", "train", "test", {}),
        ("gopro", "train", "test", {}),
        ("reds", "train", "val", {}),
        ("folder", "train", "val", {}),
    ],
)
def test_data_configs(tmp_path, name, split_train, split_val, extra):
    make_tree(tmp_path, name, {"x": 6}, split_train)
    make_tree(tmp_path, name, {"y": 5}, split_val)
    overrides = [
        f"+data={name}",
        f"data.root={tmp_path}",
        "data.patch_size=8",
        "data.batch_size=1",
        "data.num_workers=0",
    ]
    cfg = compose_config(None, overrides)
    dm = instantiate(cfg.data)
    assert isinstance(dm, DeblurDataModule) and dm.layout == name
    dm.setup("fit")
    assert len(dm.train_set) == 2 and len(dm.val_set) == 1
    assert next(iter(dm.train_dataloader()))["blur"].shape == (1, 5, 3, 8, 8)


def test_synthetic_config_makes_its_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CDVD_DATA_DIR", str(tmp_path))
    small = "{n_videos: 1, n_frames: 6, size: 24, sub_frames: 3, seed: %d}"
    overrides = [
        "+data=synthetic",
        "data.patch_size=16",
        "data.batch_size=2",
        f"++data.synthesize.train={small % 0}",
        f"++data.synthesize.val={small % 1}",
    ]
    cfg = compose_config(None, overrides)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    assert (tmp_path / "synthetic" / "train" / "meta.json").is_file()
    assert (tmp_path / "synthetic" / "val" / "meta.json").is_file()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["blur"].shape == (2, 5, 3, 16, 16)
    assert len(dm.val_set) == 2 and dm.val_set[0]["blur"].shape == (5, 3, 24, 24)


def test_with_a_lightning_trainer(folder_root):
    import pytorch_lightning as pl

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.train_batches = 0
            self.val_frames: list[str] = []

        def training_step(self, batch, batch_idx):
            assert batch["blur"].shape == (2, 5, 3, P, P)
            self.train_batches += 1
            return (batch["blur"].mean() - self.weight).abs()

        def validation_step(self, batch, batch_idx):
            self.val_frames += [f"{v}/{f}" for v, f in zip(batch["video"], batch["frame"], strict=True)]

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    probe = Probe()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(probe, datamodule=module(folder_root, batches_per_epoch=3))
    assert probe.train_batches == 6
    assert probe.val_frames == ["w0/00002.png", "w0/00003.png"] * 2
