"""Packing a dataset's frames into an LMDB frame store (:mod:`cdvd.data.frame_store`), as ``cdvd-pack`` does."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdvd.atomic import atomic_folder, replaceable_folder
from cdvd.data.frame_store import ENCODINGS, META_KEY, StoreMeta, StoreVideo, import_lmdb
from cdvd.data.io import read_rgb
from cdvd.data.layouts import detect_layout, discover_videos, find_splits
from cdvd.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_COMMIT_BYTES = 256 * 2**20  # one write transaction per this many frame bytes: bounded memory while packing
_MAX_KEY_BYTES = 511  # LMDB's default largest key
STORE_KIND = "frame-store"  # the kind in a store's marker file (cdvd.atomic.OWNER_FILE)


@dataclass(frozen=True)
class PackReport:
    """What :func:`pack_dataset` wrote: the store, its layout and splits, frames, bytes and seconds."""

    output: Path
    layout: str
    splits: tuple[str | None, ...]
    n_videos: int
    n_frames: int
    n_bytes: int
    seconds: float


def default_output(root: str | os.PathLike) -> Path:
    """The default store of a dataset: ``<root>.lmdb`` beside the root (``/data/DVD`` -> ``/data/DVD.lmdb``)."""
    root = Path(root).resolve()
    return root.with_name(f"{root.name}.lmdb")


def _check_output(root: Path, output: Path, overwrite: bool) -> None:
    if output == root or root in output.parents or output in root.parents:
        raise DataError(f"the frame store {output} must lie outside the dataset root {root} (never written into it)")
    if output.exists() or output.is_symlink():
        if not overwrite:
            raise DataError(f"frame store already exists: {output} (overwrite=true to replace it)")
        if not replaceable_folder(output, STORE_KIND):  # the ownership rule of every command that replaces a folder
            raise DataError(f"{output} exists and was not made by cdvd-pack: not replaced (choose another output)")


def _collect(root: Path, layout: str, splits: Sequence[str | None], blur_gamma: bool, encoding: str) -> StoreMeta:
    """The meta record of the videos of ``splits`` (sizes checked per video, as training checks them)."""
    found: dict[str | None, tuple[StoreVideo, ...]] = {}
    shapes: dict[str, tuple[int, int, int]] = {}
    for split in splits:
        videos = discover_videos(root, layout, split, require_gt=False, blur_gamma=blur_gamma, check_sizes=True)
        records = []
        for video in videos:
            assert video.size is not None
            blur = tuple(p.relative_to(root).as_posix() for p in video.blur)
            gt = tuple(p.relative_to(root).as_posix() for p in video.gt) if video.gt is not None else None
            for key in (*blur, *(gt or ())):
                if len(key.encode()) > _MAX_KEY_BYTES:
                    raise DataError(f"frame path longer than {_MAX_KEY_BYTES} bytes, too long for a key: {key}")
                shapes[key] = (*video.size, 3)
            records.append(StoreVideo(video.name, blur, gt))
        found[split] = tuple(records)
    return StoreMeta(str(root), layout, blur_gamma, found, shapes, encoding)


def _frame_bytes(root: Path, key: str, meta: StoreMeta) -> bytes:
    """The value of one frame: its file's bytes, or (``raw``) its decoded uint8 RGB pixels."""
    path = root / key
    if meta.encoding == "raw":
        frame = read_rgb(path)
        if frame.shape != meta.shapes[key]:  # the header said otherwise
            raise DataError(f"frame {path} decodes to {frame.shape}, its header says {meta.shapes[key]}")
        return frame.tobytes()
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err


def _put_all(env: Any, items: Sequence[tuple[bytes, bytes]]) -> None:
    """Write one transaction; when the map is full, double it and write the transaction again."""
    lmdb = import_lmdb()
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in items:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            size = env.info()["map_size"] * 2
            logger.info("frame store map full: growing it to %.1f GiB", size / 2**30)
            env.set_mapsize(size)


def _write_store(folder: Path, root: Path, meta: StoreMeta, map_size: int) -> int:
    """Write the frames then the meta record into a new environment at ``folder``; returns the frame bytes."""
    lmdb = import_lmdb()
    n_bytes, batch, batch_bytes = 0, [], 0
    try:
        with lmdb.open(str(folder), map_size=map_size, subdir=True, readahead=False, meminit=False) as env:
            for done, key in enumerate(meta.shapes, 1):
                data = _frame_bytes(root, key, meta)
                batch.append((key.encode(), data))
                batch_bytes += len(data)
                if batch_bytes >= _COMMIT_BYTES:
                    _put_all(env, batch)
                    n_bytes += batch_bytes
                    batch, batch_bytes = [], 0
                    logger.info("packed %d / %d frames (%.1f GiB)", done, meta.n_frames, n_bytes / 2**30)
            n_bytes += batch_bytes
            _put_all(env, [*batch, (META_KEY, meta.to_json())])  # the meta record last: a store with one is whole
            env.sync(True)
            entries = env.stat()["entries"]
    except lmdb.Error as err:
        raise DataError(f"cannot write the frame store in {folder}: {err}") from err
    if entries != meta.n_frames + 1:
        raise DataError(f"frame store {folder} holds {entries - 1} frames instead of {meta.n_frames}")
    return n_bytes


def pack_dataset(
    root: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    layout: str = "auto",
    splits: Sequence[str | None] | None = None,
    blur_gamma: bool = False,
    map_size: int | None = None,
    overwrite: bool = False,
    encoding: str = "file",
) -> PackReport:
    """Pack the blurry and GT frames of a dataset's splits into one LMDB frame store.

    The store is built in a hidden folder beside ``output`` and renamed into place when complete, so ``output`` is
    either the previous store or the whole new one (:func:`cdvd.atomic.atomic_folder`). Only a folder that
    ``cdvd-pack`` made (its marker file, :func:`cdvd.atomic.owned_folder`) or an empty one is replaced.

    Args:
        root: the dataset root (any layout of :mod:`cdvd.data.layouts`).
        output: the store's folder; ``None``: ``<root>.lmdb`` beside the root (:func:`default_output`).
        layout: ``dvd``, ``gopro``, ``reds``, ``folder`` or ``auto`` (guessed from the folders).
        splits: the splits to pack; ``None``: every split found (:func:`cdvd.data.layouts.find_splits`).
        blur_gamma: GOPRO: pack ``blur_gamma/`` instead of ``blur/``.
        map_size: the LMDB map size in bytes; ``None``: from the frames' file sizes. Grown when short.
        overwrite: replace an existing store at ``output`` that cdvd-pack made (never another folder).
        encoding: ``file``: store each frame file's bytes as they are (a PNG stays a PNG: small, decoded when
            read); ``raw``: store the decoded uint8 RGB pixels (no decode when read; 1.5-3x the size of PNGs).

    Raises:
        DataError: a bad dataset (as :func:`cdvd.data.layouts.discover_videos`), an output inside the root, an
            existing output without ``overwrite``, an unreadable frame or a failed write.
        ConfigError: a bad ``layout`` or ``map_size``, or the lmdb package missing.
    """
    start = time.perf_counter()
    import_lmdb()  # a missing package fails before any work
    if encoding not in ENCODINGS:
        raise ConfigError(f"encoding must be one of {', '.join(ENCODINGS)}, instead got {encoding!r}")
    if map_size is not None and (not isinstance(map_size, int) or map_size < 2**20):
        raise ConfigError(f"map_size must be at least 1 MiB (or null for automatic), instead got {map_size}")
    layout = detect_layout(root, layout)  # checks the root and the layout
    root = Path(root).resolve()
    output = Path(output).resolve() if output is not None else default_output(root)
    _check_output(root, output, overwrite)
    chosen = list(splits) if splits is not None else find_splits(root, layout)
    meta = _collect(root, layout, chosen, blur_gamma, encoding)
    if encoding == "raw":
        sizes = sum(h * w * c for h, w, c in meta.shapes.values())
    else:
        sizes = sum((root / key).stat().st_size for key in meta.shapes)
    # frames larger than a page take whole overflow pages; the tree, the meta record and slack on top
    size = map_size or int(sizes * 1.1) + meta.n_frames * 8192 + 64 * 2**20
    logger.info(
        "packing %d frames (%.2f GiB) of %s (%s layout) into %s", meta.n_frames, sizes / 2**30, root, layout, output
    )
    try:  # a marked hidden folder beside output (what killed runs left there is removed first), renamed when whole
        with atomic_folder(output, kind=STORE_KIND, replace=overwrite) as tmp:
            n_bytes = _write_store(tmp, root, meta, size)
    except OSError as err:
        raise DataError(f"cannot write the frame store {output}: {err.strerror or err}") from err
    report = PackReport(
        output=output,
        layout=layout,
        splits=tuple(meta.splits),
        n_videos=sum(len(v) for v in meta.splits.values()),
        n_frames=meta.n_frames,
        n_bytes=n_bytes,
        seconds=time.perf_counter() - start,
    )
    logger.info(
        "packed %d videos, %d frames (%.2f GiB) into %s in %.1f s",
        report.n_videos,
        report.n_frames,
        n_bytes / 2**30,
        output,
        report.seconds,
    )
    return report
