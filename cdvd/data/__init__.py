"""Data: frame io, dataset layouts, clip helpers, datasets and the LightningDataModule."""

from cdvd.data.clips import (
    apply_augment,
    draw_augment,
    frames_to_tensor,
    random_crop_box,
    reflect_index,
    window_indices,
)
from cdvd.data.datasets import FrameReader, TrainClipDataset, WindowDataset
from cdvd.data.frame_store import FrameStore
from cdvd.data.io import (
    IMAGE_EXTENSIONS,
    decode_rgb,
    image_size,
    list_frames,
    natural_key,
    read_rgb,
    write_rgb,
)
from cdvd.data.layouts import LAYOUTS, VideoPair, detect_layout, discover_videos, find_splits
from cdvd.data.packing import PackReport, pack_dataset


def __getattr__(name: str) -> object:
    # the data module pulls in Lightning: imported on first use, so the CLIs that only read frames start fast
    if name == "DeblurDataModule":
        from cdvd.data.datamodule import DeblurDataModule

        return DeblurDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "DeblurDataModule",
    "FrameReader",
    "FrameStore",
    "PackReport",
    "TrainClipDataset",
    "VideoPair",
    "WindowDataset",
    "apply_augment",
    "decode_rgb",
    "detect_layout",
    "discover_videos",
    "draw_augment",
    "find_splits",
    "frames_to_tensor",
    "image_size",
    "list_frames",
    "natural_key",
    "pack_dataset",
    "random_crop_box",
    "read_rgb",
    "reflect_index",
    "window_indices",
    "write_rgb",
]
