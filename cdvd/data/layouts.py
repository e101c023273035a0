"""Finding the paired blurry/sharp videos of a dataset in its native folder layout.

Layouts (``split`` is the subset's name; ``None`` means ``root`` is the subset itself):

- ``dvd``: ``root/<split>/<video>/input/*`` and ``root/<split>/<video>/GT/*`` (DeepVideoDeblurring's
  quantitative_datasets, as CDVD-TSP's ``DVD/train`` and ``DVD/test``);
- ``gopro``: ``root/<split>/<sequence>/blur/*`` (``blur_gamma/*`` with ``blur_gamma=True``) and ``sharp/*``
  (GOPRO_Large, splits ``train`` and ``test``);
- ``reds``: ``root/<split>_blur/<seq>/*`` and ``root/<split>_sharp/<seq>/*`` (also found one level down, as
  the archives unpack: ``root/<split>/<split>_blur/<seq>``), splits ``train`` and ``val``;
- ``folder``: ``root/<split>/blur/<video>/*`` and ``root/<split>/gt/<video>/*`` (GT optional); the original
  trainer's ``INPUT``/``GT`` folder names are accepted too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cdvd.data.io import has_frames, image_size, list_frames, natural_key, video_frames
from cdvd.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

LAYOUTS = ("dvd", "gopro", "reds", "folder")

_FOLDER_BLUR = ("blur", "INPUT", "input")
_FOLDER_GT = ("gt", "GT", "sharp")
_DVD_BLUR = ("input", "INPUT")
_DVD_GT = ("GT", "gt")


@dataclass(frozen=True)
class VideoPair:
    """One video: its blurry frames and, when known, its sharp (ground-truth) frames, in order.

    Attributes:
        name: the video's name (its folder name).
        blur: paths of the blurry frames.
        gt: paths of the sharp frames, as many as ``blur``; ``None`` where the dataset has no GT.
        size: (H, W) of every frame, when the sizes were checked; else ``None``.
    """

    name: str
    blur: tuple[Path, ...]
    gt: tuple[Path, ...] | None = None
    size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.blur)

    @property
    def blur_dir(self) -> Path:
        return self.blur[0].parent

    @property
    def gt_dir(self) -> Path | None:
        return self.gt[0].parent if self.gt else None


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )


def _first_existing(parent: Path, names: tuple[str, ...]) -> Path | None:
    return next((parent / name for name in names if (parent / name).is_dir()), None)


def _split_root(root: Path, split: str | None) -> Path:
    if split is None:
        return root
    folder = root / split
    if not folder.is_dir():
        present = ", ".join(p.name for p in _subdirs(root)) or "nothing"
        raise DataError(f"split folder not found: {folder} (found: {present})")
    return folder


def _no_videos(folder: Path, layout: str, expected: str) -> DataError:
    splits = [p.name for p in _subdirs(folder) if _match_layout(p) == layout] if folder.is_dir() else []
    hint = f"; it holds the splits {', '.join(splits)}: pass split=<name>" if splits else ""
    return DataError(f"no videos found in {folder} (expected the {layout} layout: {expected}){hint}")


def _pair_folders(
    layout: str, blur_parent: Path, gt_parent: Path, require_gt: bool, expected: str
) -> list[tuple[str, Path, Path | None]]:
    """(name, blurry folder, GT folder or None) of the video folders in ``blur_parent``, matched by name with those in
    ``gt_parent``. DataError: no video folder (``expected``: what the layout wants), no ``gt_parent`` where GT is
    required, or video lists that differ."""
    blur_dirs = {p.name: p for p in _subdirs(blur_parent)}
    if not blur_dirs:
        raise _no_videos(blur_parent, layout, expected)
    if not gt_parent.is_dir():
        if require_gt:
            raise DataError(
                f"ground-truth folder not found: {gt_parent} (needed for the blurry videos in {blur_parent})"
            )
        return [(name, folder, None) for name, folder in blur_dirs.items()]
    gt_dirs = {p.name: p for p in _subdirs(gt_parent)}
    alone = {
        f"without GT in {gt_parent}": blur_dirs.keys() - gt_dirs,
        f"without blurry frames in {blur_parent}": gt_dirs.keys() - blur_dirs,
    }
    parts = [
        f"{where}: {', '.join(sorted(names, key=natural_key)[:5])}{' ...' if len(names) > 5 else ''}"
        for where, names in alone.items()
        if names
    ]
    if parts:
        raise DataError(f"blurry and GT video lists differ ({'; '.join(parts)})")
    return [(name, folder, gt_dirs[name]) for name, folder in blur_dirs.items()]


def _collect(
    layout: str, root: Path, split: str | None, require_gt: bool, blur_gamma: bool
) -> list[tuple[str, Path, Path | None]]:
    """(name, blurry folder, GT folder or None) of every video of one split."""
    if layout == "folder":
        base = _split_root(root, split)
        blur_parent = _first_existing(base, _FOLDER_BLUR)
        if blur_parent is None:
            raise _no_videos(base, layout, "blur/<video>/* and gt/<video>/*, or INPUT/<video>/* and GT/<video>/*")
        gt_parent = _first_existing(base, _FOLDER_GT) or base / "gt"
        return _pair_folders(layout, blur_parent, gt_parent, require_gt, "one folder of frames per video")

    if layout in ("dvd", "gopro"):
        base = _split_root(root, split)
        if layout == "gopro":
            blur_names, gt_names = ("blur_gamma" if blur_gamma else "blur",), ("sharp",)
            expected = f"<sequence>/{blur_names[0]}/* and <sequence>/sharp/*"
        else:
            blur_names, gt_names, expected = _DVD_BLUR, _DVD_GT, "<video>/input/* and <video>/GT/*"
        videos = []
        for video in _subdirs(base):
            blur = _first_existing(video, blur_names)
            if blur is None:
                continue
            gt = _first_existing(video, gt_names)
            if gt is None and require_gt:
                raise DataError(f"ground-truth folder not found: {video / gt_names[0]}")
            videos.append((video.name, blur, gt))
        if not videos:
            raise _no_videos(base, layout, expected)
        return videos

    # reds (detect_layout checked the layout)
    if split is None:
        candidates = sorted(p.name[: -len("_blur")] for p in _subdirs(root) if p.name.endswith("_blur"))
        if len(candidates) != 1:
            found = ", ".join(candidates) or "none"
            raise DataError(f"reds layout needs a split for {root} (<split>_blur folders found: {found})")
        split = candidates[0]
    blur_parent = next((p for p in (root / f"{split}_blur", root / split / f"{split}_blur") if p.is_dir()), None)
    if blur_parent is None:
        raise DataError(
            f"blurry folder not found: {root / f'{split}_blur'} (expected the reds layout: "
            f"<split>_blur/<seq>/* and <split>_sharp/<seq>/*)"
        )
    gt_parent = blur_parent.with_name(f"{split}_sharp")
    return _pair_folders(layout, blur_parent, gt_parent, require_gt, "<seq>/* folders")


def check_layout(layout: object) -> None:
    """The one rule for a ``layout`` setting: one of :data:`LAYOUTS` or ``auto``, else a ConfigError."""
    if layout not in (*LAYOUTS, "auto"):
        raise ConfigError(f"layout={layout}: expected one of {', '.join(LAYOUTS)} or auto")


def _check_sizes(name: str, blur: list[Path], gt: list[Path] | None) -> tuple[int, int]:
    """The common (H, W) of all the frames of a video; a DataError names the first frame that differs."""
    reference = blur[0]
    size = image_size(reference)
    for path in [*blur[1:], *(gt or [])]:
        other = image_size(path)
        if other != size:
            raise DataError(
                f"frame size {other[0]}x{other[1]} differs from the {size[0]}x{size[1]} of "
                f"{reference} in video {name}: {path}"
            )
    return size


def discover_videos(
    root: str | os.PathLike,
    layout: str = "auto",
    split: str | None = None,
    require_gt: bool = True,
    *,
    blur_gamma: bool = False,
    check_sizes: bool = True,
) -> list[VideoPair]:
    """All the videos of one split of a dataset, with their frames, checked for consistency.

    Args:
        root: the dataset's root folder.
        layout: one of :data:`LAYOUTS` (see the module docstring), or ``auto`` (:func:`detect_layout`).
        split: the subset (``train``, ``test``, ``val``...); ``None``: ``root`` is the subset itself.
        require_gt: a video without sharp frames is an error; with ``False`` such videos get ``gt=None``.
        blur_gamma: GOPRO only: read ``blur_gamma/`` (blur made in linear light) instead of ``blur/``.
        check_sizes: read every frame's header and require one size per video (blurry and GT alike).

    Returns:
        The videos in natural order of their names.

    Raises:
        DataError: a missing root or split, no videos, blurry and GT video lists that differ, differing frame
            counts, an empty video, frames of different sizes or an unreadable image; the message names the
            path.
    """
    root = Path(root)
    layout = detect_layout(root, layout)
    videos = []
    for name, blur_dir, gt_dir in _collect(layout, root, split, require_gt, blur_gamma):
        blur = video_frames(blur_dir)
        gt = list_frames(gt_dir) if gt_dir is not None else None
        if gt is not None and len(gt) != len(blur):
            raise DataError(
                f"video {name}: {len(blur)} blurry frames in {blur_dir} but {len(gt)} GT frames in {gt_dir}"
            )
        size = _check_sizes(name, blur, gt) if check_sizes else None
        videos.append(VideoPair(name=name, blur=tuple(blur), gt=tuple(gt) if gt is not None else None, size=size))
    logger.debug("found %d %s videos in %s (split %s)", len(videos), layout, root, split)
    return videos


def _match_layout(folder: Path) -> str | None:
    """The layout whose structure starts right at ``folder``, if any."""
    try:
        children = _subdirs(folder)
    except OSError:
        return None
    names = {p.name for p in children}
    for blur_name in _FOLDER_BLUR:
        if blur_name in names and any(has_frames(v) for v in _subdirs(folder / blur_name)):
            return "folder"
    for child in children:
        if child.name.endswith("_blur") and any(has_frames(v) for v in _subdirs(child)):
            return "reds"
    for child in children:
        if any(has_frames(child / n) for n in ("blur", "blur_gamma")):
            return "gopro"
        if any(has_frames(child / n) for n in _DVD_BLUR):
            return "dvd"
    return None


def detect_layout(root: str | os.PathLike, layout: str = "auto") -> str:
    """The layout of a dataset root: ``layout`` as given (checked, :func:`check_layout`), or for ``auto`` the one
    the root (or the splits one level below it) matches: ``dvd``, ``gopro``, ``reds`` or ``folder``.

    Raises:
        DataError: the root is missing or (``auto``) matches no layout.
        ConfigError: another ``layout``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root not found: {root}")
    if layout != "auto":
        check_layout(layout)
        return layout
    # the root first, then its splits (listed only when the root matches no layout)
    found = _match_layout(root) or next(filter(None, map(_match_layout, _subdirs(root))), None)
    if found is None:
        raise DataError(
            f"cannot tell the dataset layout of {root}: expected one of dvd (<video>/input, <video>/GT), "
            "gopro (<sequence>/blur, <sequence>/sharp), reds (<split>_blur/<seq>, <split>_sharp/<seq>) or "
            "folder (blur/<video>, gt/<video>), at the root or in split folders one level below"
        )
    logger.debug("detected the %s layout in %s", found, root)
    return found


def find_splits(root: str | os.PathLike, layout: str = "auto") -> list[str | None]:
    """The splits of a dataset root in ``layout`` (``auto``: :func:`detect_layout`), as :func:`discover_videos` takes
    them: their names in natural order (``train``, ``test``...; for ``reds`` the ``<split>`` of every ``<split>_blur``
    folder), or ``[None]`` when ``root`` is itself one split.

    Raises:
        DataError: the root is missing or holds no split of the layout.
    """
    root = Path(root)
    layout = detect_layout(root, layout)
    if layout == "reds":
        names = {p.name[: -len("_blur")] for p in _subdirs(root) if p.name.endswith("_blur")}
        names |= {p.name for p in _subdirs(root) if (p / f"{p.name}_blur").is_dir()}
        splits: list[str | None] = sorted(names, key=natural_key)
    elif _match_layout(root) == layout:
        splits = [None]
    else:
        splits = [p.name for p in _subdirs(root) if _match_layout(p) == layout]
    if not splits:
        raise DataError(f"no split of the {layout} layout found in {root}")
    return splits
