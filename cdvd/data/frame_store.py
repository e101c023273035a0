"""An LMDB frame store: every frame of a dataset in one file, read by key from many DataLoader workers.

A store is a folder as LMDB makes it (``data.mdb``; readers need no lock file). Keys are the frames' paths relative
to the dataset root in POSIX form (``train/blur/720p/00000.png``); values are the frame files' bytes exactly as on
disk (``encoding="file"``, the default), so a PNG stays a PNG: the same pixels, the size of the tree. With
``encoding="raw"`` the values are the decoded uint8 RGB arrays instead: no decode when training (a copy instead of
a PNG decode, ~100x less CPU per frame in ``scripts/bench_data.py``) for 1.5-3x the disk and page cache of
photographic PNGs. One more key, :data:`META_KEY`, holds a JSON record: format and version, the source root, the
layout, ``blur_gamma``, each split's videos (names and frame keys) and each frame's shape, so that training needs
only the store.

The habit follows BasicSR's LMDB datasets (keys per frame, a meta record, read-only environments opened with
``lock=False, readahead=False``), written for our layouts. ``lmdb`` is an optional extra: ``pip install 'cdvd[lmdb]'``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from cdvd.data.io import decode_rgb
from cdvd.data.layouts import VideoPair
from cdvd.errors import ConfigError, DataError

FORMAT = "cdvd-frame-store"
FORMAT_VERSION = 1
ENCODINGS = ("file", "raw")
META_KEY = b"__cdvd_meta__"
"""The key of the JSON meta record (no frame key can take it: frame keys end with an image extension)."""
_AGAIN = "copy it again or pack it again with cdvd-pack"


def import_lmdb() -> ModuleType:
    """The ``lmdb`` module; its absence is a ConfigError naming the extra that installs it."""
    try:
        import lmdb
    except ImportError as err:
        raise ConfigError("frame stores need the lmdb package: pip install 'cdvd[lmdb]'") from err
    return lmdb


@dataclass(frozen=True)
class StoreVideo:
    """One video of a store: its name and the keys of its blurry and (when there is GT) sharp frames, in order."""

    name: str
    blur: tuple[str, ...]
    gt: tuple[str, ...] | None


@dataclass(frozen=True)
class StoreMeta:
    """The meta record of a store.

    Attributes:
        source_root: the dataset root it was packed from (absolute; need not exist any more).
        layout: the dataset's layout (one of :data:`cdvd.data.layouts.LAYOUTS`).
        blur_gamma: GOPRO: the blurry frames are ``blur_gamma/`` rather than ``blur/``.
        splits: the videos of each split; the split ``None`` when the root was itself one split.
        shapes: each frame's shape as read, (H, W, 3), by key.
        encoding: ``file`` (values are the frame files' bytes) or ``raw`` (decoded uint8 RGB, C order).
    """

    source_root: str
    layout: str
    blur_gamma: bool
    splits: dict[str | None, tuple[StoreVideo, ...]]
    shapes: dict[str, tuple[int, int, int]]
    encoding: str = "file"

    @property
    def n_frames(self) -> int:
        return len(self.shapes)

    def to_json(self) -> bytes:
        record = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "source_root": self.source_root,
            "layout": self.layout,
            "blur_gamma": self.blur_gamma,
            "n_frames": self.n_frames,
            "encoding": self.encoding,
            "splits": [
                {"split": split, "videos": [{"name": v.name, "blur": v.blur, "gt": v.gt} for v in videos]}
                for split, videos in self.splits.items()
            ],
            "shapes": self.shapes,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, store: Path) -> StoreMeta:
        """Parse a meta record; anything but a record of this format and version is a DataError naming ``store``."""
        try:
            record = json.loads(bytes(data))
            if record.get("format") != FORMAT:
                raise DataError(f"not a cdvd frame store: {store}")
            if record["version"] != FORMAT_VERSION:
                raise DataError(
                    f"frame store {store} has format version {record['version']}, this cdvd reads "
                    f"{FORMAT_VERSION}: pack it again with cdvd-pack"
                )
            splits = {
                s["split"]: tuple(
                    StoreVideo(v["name"], tuple(v["blur"]), tuple(v["gt"]) if v["gt"] is not None else None)
                    for v in s["videos"]
                )
                for s in record["splits"]
            }
            shapes = {key: (int(h), int(w), int(c)) for key, (h, w, c) in record["shapes"].items()}
            if record["encoding"] not in ENCODINGS:
                raise DataError(f"frame store {store} has an unknown encoding {record['encoding']!r}")
            return cls(
                record["source_root"], record["layout"], bool(record["blur_gamma"]), splits, shapes, record["encoding"]
            )
        except DataError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"broken meta record in frame store {store}: {err!r}") from err


class _Environments:
    """This process's read-only LMDB environments, one per store file.

    LMDB allows one environment per file and process, and one inherited through fork must not be used: the first
    call in a new process closes the inherited ones (that only unmaps them here; readers hold no lock) and opens its
    own. Keyed by the data file's device and inode, so a store replaced at the same path is opened afresh.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: dict[tuple[int, int], Any] = {}

    def get(self, path: Path) -> Any:
        if self.pid != os.getpid():
            for env in self.open.values():
                env.close()
            self.open.clear()
            self.pid = os.getpid()
        try:
            stat = (path / "data.mdb").stat()
        except OSError:
            raise DataError(f"frame store not found: {path} (no data.mdb; make one with cdvd-pack)") from None
        if stat.st_size == 0:
            raise DataError(f"frame store file {path / 'data.mdb'} is empty; copy it again or pack it with cdvd-pack")
        key = (stat.st_dev, stat.st_ino)
        env = self.open.get(key)
        if env is None:
            lmdb = import_lmdb()
            try:
                # many readers, no writer: no lock file (works on read-only media), no readahead (random reads)
                env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, subdir=True)
                needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
            except lmdb.Error as err:
                raise DataError(f"cannot open frame store {path}: {err}") from err
            # a truncated copy: its missing pages are memory-mapped, and reading one kills the process with SIGBUS
            # (no message, exit 135) in the middle of training
            if stat.st_size < needed:
                env.close()
                raise DataError(
                    f"frame store file {path / 'data.mdb'} is truncated: {stat.st_size} bytes, but its LMDB header "
                    f"records {needed}; {_AGAIN}"
                )
            self.open[key] = env
        return env


_ENVIRONMENTS = _Environments()


class FrameStore:
    """Reads the frames of a packed dataset, as uint8 RGB (H, W, 3), by their path relative to the dataset root.

    The LMDB environment is opened on first use in each process and never crosses a fork or a pickle: a DataLoader
    worker that inherits or receives a ``FrameStore`` opens its own. Stores of the same file share one environment
    within a process.

    Args:
        path: the store's folder (made by :func:`cdvd.data.packing.pack_dataset` or ``cdvd-pack``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._env: Any = None
        self._pid: int | None = None
        self._meta: StoreMeta | None = None

    def __repr__(self) -> str:
        return f"FrameStore({str(self.path)!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_env": None, "_pid": None, "_meta": None}

    def _environment(self) -> Any:
        if self._env is None or self._pid != os.getpid():
            self._env = _ENVIRONMENTS.get(self.path)
            self._pid = os.getpid()
        return self._env

    @contextlib.contextmanager
    def _transaction(self, *, buffers: bool = False) -> Iterator[Any]:
        """A read transaction; LMDB's errors of a damaged file (``MDB_CORRUPTED``...) are a DataError naming it."""
        lmdb = import_lmdb()
        env = self._environment()
        try:
            with env.begin(buffers=buffers) as txn:
                yield txn
        except lmdb.Error as err:
            raise DataError(f"frame store {self.path / 'data.mdb'} is damaged ({err}); {_AGAIN}") from err

    @property
    def meta(self) -> StoreMeta:
        """The store's meta record (read once per process)."""
        if self._meta is None:
            with self._transaction() as txn:
                data = txn.get(META_KEY)
            if data is None:
                raise DataError(f"frame store {self.path} has no meta record (not finished by cdvd-pack?)")
            self._meta = StoreMeta.from_json(data, self.path)
        return self._meta

    def key(self, path: str | os.PathLike) -> str:
        """The key of a frame path under :attr:`path` (as :meth:`videos` makes them)."""
        try:
            return Path(path).relative_to(self.path).as_posix()
        except ValueError:
            raise DataError(f"frame {path} is not a path inside the frame store {self.path}") from None

    def read_bytes(self, key: str) -> bytes:
        """The stored bytes of frame ``key`` (its file's bytes, or raw RGB); a missing key is a DataError naming it."""
        with self._transaction() as txn:
            data = txn.get(key.encode())
        if data is None:
            raise DataError(f"frame {key} is not in the frame store {self.path}")
        return data

    def read(self, key: str) -> np.ndarray:
        """Frame ``key`` as uint8 RGB (H, W, 3), the pixels :func:`cdvd.data.io.read_rgb` gives for its file."""
        raw = self.meta.encoding == "raw"
        with self._transaction(buffers=True) as txn:
            data = txn.get(key.encode())
            if data is None:
                raise DataError(f"frame {key} is not in the frame store {self.path}")
            if not raw:
                return decode_rgb(data, f"{key} in the frame store {self.path}")  # decoded before the buffer goes
            frame = np.frombuffer(data, np.uint8)
            shape = self.meta.shapes.get(key)
            if shape is None or frame.size != np.prod(shape):
                raise DataError(f"frame {key} in the frame store {self.path} has {frame.size} bytes, not {shape}")
            return frame.reshape(shape).copy()  # copied before the buffer goes

    def videos(self, split: str | None, *, layout: str = "auto", blur_gamma: bool = False) -> list[VideoPair]:
        """The videos of one split, with their GT (what training needs), frame paths ``path / key`` (what :meth:`key`
        maps back).

        Args:
            split: the split's name, ``None`` for a store packed from one split's folder.
            layout: the layout the caller expects (``auto``: any); another is a ConfigError naming ``layout``.
            blur_gamma: the caller's ``blur_gamma``; it must be the one the store was packed with.

        Raises:
            DataError: a split the store does not hold, or a video of it without GT.
        """
        meta = self.meta
        if layout != "auto" and layout != meta.layout:
            raise ConfigError(f"layout={layout} but the frame store {self.path} holds a {meta.layout} dataset")
        if blur_gamma != meta.blur_gamma:
            raise ConfigError(
                f"blur_gamma={str(blur_gamma).lower()} but the frame store {self.path} was packed with "
                f"blur_gamma={str(meta.blur_gamma).lower()}"
            )
        if split not in meta.splits:
            held = ", ".join("null" if s is None else s for s in meta.splits)
            raise DataError(f"split {split} is not in the frame store {self.path} (it holds: {held})")
        pairs = []
        for video in meta.splits[split]:
            if video.gt is None:
                raise DataError(f"video {video.name} has no GT frames in the frame store {self.path}")
            blur, gt = (tuple(self.path / key for key in keys) for keys in (video.blur, video.gt))
            pairs.append(VideoPair(video.name, blur, gt, size=meta.shapes[video.blur[0]][:2]))
        return pairs
