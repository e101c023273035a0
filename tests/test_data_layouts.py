"""Dataset layouts, their errors, and the pure clip helpers."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import SIZE, encoded_frame, make_tree, write_video

from cdvd.data import (
    apply_augment,
    detect_layout,
    discover_videos,
    draw_augment,
    image_size,
    reflect_index,
    window_indices,
    write_rgb,
)
from cdvd.errors import DataError

VIDEOS = {"b": 5, "a": 3, "c10": 4, "c2": 2}


# ------------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    ("layout", "split", "kwargs"),
    [
        ("dvd", "train", {}),
        ("dvd", None, {}),
        ("gopro", "test", {}),
        ("reds", "val", {}),
        ("reds", "train", {"nested_reds": True}),
        ("folder", None, {}),
        ("folder", "val", {}),
        ("folder", None, {"names": ("INPUT", "GT")}),
    ],
)
def test_discover_each_layout(tmp_path, layout, split, kwargs):
    make_tree(tmp_path, layout, VIDEOS, split, **kwargs)
    videos = discover_videos(tmp_path, layout, split)
    assert [v.name for v in videos] == ["a", "b", "c2", "c10"]  # natural order
    assert [len(v) for v in videos] == [3, 5, 2, 4]
    for video in videos:
        assert video.size == SIZE
        assert video.gt is not None and len(video.gt) == len(video.blur)
        assert [p.name for p in video.blur] == [p.name for p in video.gt]
        assert video.blur_dir == video.blur[0].parent and video.gt_dir == video.gt[0].parent
    assert detect_layout(tmp_path) == layout


def test_gopro_blur_gamma(tmp_path):
    make_tree(tmp_path, "gopro", {"s1": 3}, "train")
    write_video(tmp_path / "train" / "s1" / "blur_gamma", 3, video=7)
    plain = discover_videos(tmp_path, "gopro", "train")[0]
    gamma = discover_videos(tmp_path, "gopro", "train", blur_gamma=True)[0]
    assert plain.blur[0].parent.name == "blur" and gamma.blur[0].parent.name == "blur_gamma"
    assert gamma.gt == plain.gt


def test_auto_layout_and_split_hint(tmp_path):
    make_tree(tmp_path, "gopro", {"s1": 3}, "train")
    make_tree(tmp_path, "gopro", {"s2": 4}, "test")
    assert detect_layout(tmp_path) == "gopro"
    assert [v.name for v in discover_videos(tmp_path, "auto", "test")] == ["s2"]
    with pytest.raises(DataError, match="pass split") as err:
        discover_videos(tmp_path, "gopro", None)
    assert str(tmp_path) in str(err.value)


def test_folder_without_gt(tmp_path):
    make_tree(tmp_path, "folder", {"v": 3}, gt=False)
    videos = discover_videos(tmp_path, "folder", require_gt=False)
    assert videos[0].gt is None and videos[0].gt_dir is None and len(videos[0]) == 3
    with pytest.raises(DataError, match="ground-truth folder not found") as err:
        discover_videos(tmp_path, "folder")
    assert str(tmp_path / "gt") in str(err.value)


def test_hidden_files_are_not_frames(tmp_path):
    make_tree(tmp_path, "folder", {"v": 3})
    blur = tmp_path / "blur" / "v"
    (blur / ".00001.tmp4242.png").write_bytes(b"\x89PNG partial")  # what a killed writer leaves
    (blur / "._00000.png").write_bytes(b"\0\5\26\7")  # macOS AppleDouble file on an external drive
    (videos,) = discover_videos(tmp_path, "folder")
    assert len(videos) == 3 and not [p for p in videos.blur if p.name.startswith(".")]
    assert [p.name for p in videos.blur] == [p.name for p in videos.gt]


def test_dvd_video_without_gt(tmp_path):
    make_tree(tmp_path, "dvd", {"v": 3}, gt=False)
    assert discover_videos(tmp_path, "dvd", require_gt=False)[0].gt is None
    with pytest.raises(DataError, match="ground-truth folder not found") as err:
        discover_videos(tmp_path, "dvd")
    assert str(tmp_path / "v" / "GT") in str(err.value)


def test_detect_layout_unknown(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset layout") as err:
        detect_layout(tmp_path)
    assert str(tmp_path) in str(err.value)


# -------------------------------------------------------------------------------------------------- errors


def test_missing_root(tmp_path):
    missing = tmp_path / "nope"
    for call in (lambda: discover_videos(missing, "folder"), lambda: detect_layout(missing)):
        with pytest.raises(DataError, match="dataset root not found") as err:
            call()
        assert str(missing) in str(err.value)


def test_missing_split(tmp_path):
    make_tree(tmp_path, "dvd", {"v": 3}, "train")
    with pytest.raises(DataError, match="split folder not found") as err:
        discover_videos(tmp_path, "dvd", "test")
    assert str(tmp_path / "test") in str(err.value)
    reds = make_tree(tmp_path / "r", "reds", {"v": 3}, "train")
    make_tree(reds, "reds", {"v": 3}, "val")
    with pytest.raises(DataError, match="reds layout needs a split") as err:
        discover_videos(reds, "reds")
    assert "train, val" in str(err.value)
    assert [v.name for v in discover_videos(reds, "reds", "val")] == ["v"]


def test_no_videos(tmp_path):
    write_video(tmp_path / "blur", 2)  # frames straight in blur/, not in a folder per video
    with pytest.raises(DataError, match="no videos found") as err:
        discover_videos(tmp_path, "dvd")
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="no videos found") as err:
        discover_videos(tmp_path, "folder")
    assert str(tmp_path / "blur") in str(err.value)


@pytest.mark.parametrize("layout", ["folder", "reds"])
def test_video_lists_differ(tmp_path, layout):
    split = "train" if layout == "reds" else None
    make_tree(tmp_path, layout, {"a": 3, "b": 3}, split)
    blur_parent = tmp_path / ("train_blur" if layout == "reds" else "blur")
    write_video(blur_parent / "extra", 3)
    with pytest.raises(DataError, match="video lists differ") as err:
        discover_videos(tmp_path, layout, split)
    assert "extra" in str(err.value)
    assert str(tmp_path / ("train_sharp" if layout == "reds" else "gt")) in str(err.value)


def test_frame_counts_differ(tmp_path):
    make_tree(tmp_path, "gopro", {"s": 4})
    (tmp_path / "s" / "sharp" / "00003.png").unlink()
    with pytest.raises(DataError, match="4 blurry frames") as err:
        discover_videos(tmp_path, "gopro")
    assert str(tmp_path / "s" / "sharp") in str(err.value)


def test_frame_sizes_differ(tmp_path):
    make_tree(tmp_path, "folder", {"v": 3})
    odd = tmp_path / "gt" / "v" / "00002.png"
    write_rgb(odd, encoded_frame(0, 2, (24, 30)))
    with pytest.raises(DataError, match="frame size 24x30 differs") as err:
        discover_videos(tmp_path, "folder")
    assert str(odd) in str(err.value)
    assert discover_videos(tmp_path, "folder", check_sizes=False)[0].size is None


def test_corrupt_image(tmp_path):
    make_tree(tmp_path, "folder", {"v": 3})
    bad = tmp_path / "blur" / "v" / "00001.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="cannot decode image") as err:
        discover_videos(tmp_path, "folder")
    assert str(bad) in str(err.value)


def test_empty_video(tmp_path):
    make_tree(tmp_path, "folder", {"v": 3})
    (tmp_path / "blur" / "e").mkdir()
    (tmp_path / "gt" / "e").mkdir()
    with pytest.raises(DataError, match="no image frames") as err:
        discover_videos(tmp_path, "folder")
    assert str(tmp_path / "blur" / "e") in str(err.value)


def test_image_size(tmp_path):
    path = tmp_path / "x.jpg"
    write_rgb(path, encoded_frame(0, 0, (10, 14)))
    assert image_size(path) == (10, 14)
    with pytest.raises(DataError, match="image not found"):
        image_size(tmp_path / "missing.png")


# ---------------------------------------------------------------------------------------------- clip helpers


def test_window_indices_reflection():
    # [1, 2, 3, 4, 5] read as [3, 2, 1, 2, 3, 4, 5, 4, 3]
    assert [window_indices(c, 5, 5) for c in range(5)] == [
        [2, 1, 0, 1, 2],
        [1, 0, 1, 2, 3],
        [0, 1, 2, 3, 4],
        [1, 2, 3, 4, 3],
        [2, 3, 4, 3, 2],
    ]
    assert window_indices(50, 5, 100) == [48, 49, 50, 51, 52]
    assert window_indices(99, 5, 100) == [97, 98, 99, 98, 97]


@pytest.mark.parametrize(
    ("n_frames", "expected"),
    [
        (1, [[0, 0, 0, 0, 0]]),
        (2, [[0, 1, 0, 1, 0], [1, 0, 1, 0, 1]]),
        (3, [[2, 1, 0, 1, 2], [1, 0, 1, 2, 1], [0, 1, 2, 1, 0]]),
        (4, [[2, 1, 0, 1, 2], [1, 0, 1, 2, 3], [0, 1, 2, 3, 2], [1, 2, 3, 2, 1]]),
    ],
)
def test_window_indices_short_videos(n_frames, expected):
    assert [window_indices(c, 5, n_frames) for c in range(n_frames)] == expected


def test_window_indices_bad_arguments():
    with pytest.raises(ValueError, match="center"):
        window_indices(5, 5, 5)
    with pytest.raises(ValueError, match="length"):
        window_indices(0, 0, 5)
    assert [reflect_index(i, 3) for i in range(-4, 5)] == [0, 1, 2, 1, 0, 1, 2, 1, 0]


def test_scored_frames():
    from cdvd.evaluation.protocol import scored_frames

    assert list(scored_frames(10, "all")) == list(range(10))
    assert list(scored_frames(10)) == [2, 3, 4, 5, 6, 7]
    assert list(scored_frames(5)) == [2]
    assert list(scored_frames(4)) == []


def test_augment_covers_the_dihedral_group():
    frames = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        out = apply_augment(frames, *draw_augment(rng))
        assert np.array_equal(out[1] - out[0], np.full((3, 3, 1), 9))  # the same transform for both frames
        seen.add(out[0].tobytes())
    rotations = {np.rot90(frames[0], k).tobytes() for k in range(4)}
    assert len(seen) == 8 and rotations <= seen
    assert all(not t for _, _, t in (draw_augment(rng, allow_transpose=False) for _ in range(20)))
