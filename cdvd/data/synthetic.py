"""A paired blurry/sharp video dataset made from sharp material (the library behind ``cdvd-synth``).

    cdvd-synth output=data/synthetic/train
    cdvd-synth output=data/mine source=folder source_path=photos/ n_videos=20 size=256 seed=1
    cdvd-synth output=data/hfr source=video source_path=clip_240fps.mp4 sub_frames=7 noise_std=0.01

Blur is made as GOPRO made it: sharp sub-frames are averaged in linear light (the sRGB values raised to the
power ``gamma``, then back), and the GT frame is the middle sub-frame of each exposure. Sources:

- ``builtin``: photos shipped inside scikit-image (nothing is downloaded), each filmed by a camera that moves
  along a smooth random path (translation, a little rotation and zoom);
- ``folder``: the still images in ``source_path``, filmed the same way;
- ``video``: a high-frame-rate video file, or a folder of its consecutive frames: each output frame averages
  ``sub_frames`` consecutive source frames.

The output is the ``folder`` layout (``DIR/blur/<video>/00000.png``, ``DIR/gt/<video>/00000.png``) with a
``meta.json`` of the settings and the project's marker file (:data:`cdvd.atomic.OWNER_FILE`); it is written beside
``DIR`` and renamed into place when complete. ``overwrite`` replaces only a folder that cdvd-synth made (the marker
says so) or an empty one: never a folder of the user's.

The data module's built-in data (``data.synthesize``) comes from :func:`synthetic_split`: a folder made with the
settings asked for, never one made with other settings.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdvd.atomic import NotOwnedError, atomic_folder, owned_folder, probe_writable
from cdvd.data.camera_blur import (
    builtin_images,
    camera_path,
    fit_frame,
    folder_images,
    hfr_frames,
    jpeg_roundtrip,
    prepare_still,
    render_still,
    to_display_uint8,
    to_linear,
)
from cdvd.data.io import write_rgb
from cdvd.data.locking import make_once
from cdvd.errors import ConfigError, DataError, check_count
from cdvd.evaluation.metrics import psnr_uint8
from cdvd.settings import count, number, read_settings

logger = logging.getLogger(__name__)

SOURCES = ("builtin", "folder", "video")
DATASET_KIND = "synthetic-dataset"  # the kind in the marker file of a dataset cdvd-synth made


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "video"


def synthesize(
    output: str | os.PathLike,
    *,
    source: str = "builtin",
    source_path: str | os.PathLike | None = None,
    n_videos: int = 6,
    n_frames: int = 16,
    size: int | Sequence[int] = 160,
    sub_frames: int = 9,
    motion_min: float = 3.0,
    motion_max: float = 10.0,
    rotation: float = 1.0,
    zoom: float = 0.02,
    gamma: float = 2.2,
    noise_std: float = 0.0,
    jpeg_quality: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a paired blurry/sharp dataset in the folder layout, deterministically under ``seed``.

    Args:
        output: the dataset folder to create (``output/blur/<video>/*.png``, ``output/gt/<video>/*.png``,
            ``output/meta.json``).
        source: ``builtin`` (scikit-image photos), ``folder`` (still images in ``source_path``) or ``video``
            (a high-frame-rate video file or folder of consecutive frames at ``source_path``).
        source_path: the folder or video of ``folder``/``video`` sources.
        n_videos: videos to make (``video`` source: at most what the source holds).
        n_frames: frames per video.
        size: frame size: a side, or (H, W).
        sub_frames: sharp sub-frames averaged into each blurry frame.
        motion_min: smallest mean camera translation per exposure, pixels (still sources).
        motion_max: largest mean camera translation per exposure, pixels (still sources).
        rotation: largest camera rotation per exposure, degrees (still sources).
        zoom: largest relative zoom per exposure (still sources).
        gamma: the sRGB-like gamma undone before averaging and redone after (2.2 as GOPRO).
        noise_std: standard deviation of the Gaussian noise added to the blurry frames, in [0, 1] units.
        jpeg_quality: JPEG-compress the blurry frames at this quality (1-100); ``None``: no compression.
        seed: the seed of everything random.
        overwrite: replace ``output`` when it exists and is not empty.

    Returns:
        A summary: the output folder, the settings, and per video its name, source and PSNR of blurry vs GT.

    Raises:
        DataError: a bad setting (named: ``n_frames=abc: not a whole number``), an existing output (without
            ``overwrite``) or an unreadable source.
    """
    settings = resolve_settings(**{k: v for k, v in locals().items() if k not in _NOT_RECORDED})  # the arguments
    output = Path(output)
    sides = tuple(settings["size"])
    check_output(output, overwrite)
    rng = np.random.default_rng(seed)

    if source == "video":
        per_video = n_frames * sub_frames
        frames = [fit_frame(f, sides) for f in hfr_frames(Path(source_path), n_videos * per_video)]
        available = len(frames) // per_video
        if available == 0:
            raise DataError(
                f"{source_path} has {len(frames)} frames, fewer than n_frames x sub_frames = {per_video} for one video"
            )
        if available < n_videos:
            logger.warning("%s has frames for %d of the %d videos asked for", source_path, available, n_videos)
        jobs = [
            (f"{Path(source_path).stem}_{i * per_video:06d}", frames[i * per_video : (i + 1) * per_video])
            for i in range(min(available, n_videos))
        ]
    else:
        photos = builtin_images() if source == "builtin" else folder_images(Path(source_path))
        order = rng.permutation(len(photos))
        jobs = [photos[order[i % len(photos)]] for i in range(n_videos)]

    try:  # a marked hidden folder beside output (what killed runs left there is removed first), renamed when whole
        with atomic_folder(output, kind=DATASET_KIND, replace=overwrite) as staging:
            videos = _write_videos(staging, jobs, settings)
            summary = {
                "output": str(output),
                **settings,
                "videos": videos,
                "psnr_blur_db": round(float(np.mean([v["psnr_blur_db"] for v in videos])), 3),
            }
            (staging / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    except NotOwnedError as err:  # a folder of someone else's appeared there meanwhile
        raise DataError(f"output folder {output} holds files cdvd-synth did not make: not replaced") from err
    except OSError as err:
        if output.is_dir() and any(output.iterdir()) and not overwrite:  # another run made it meanwhile
            raise DataError(f"output folder exists and is not empty: {output} (pass overwrite=true)") from err
        raise DataError(f"cannot write the dataset {output}: {err.strerror or err}") from err
    logger.info("wrote %d videos of %d frames (%dx%d) to %s", len(videos), n_frames, sides[0], sides[1], output)
    return summary


def _write_videos(staging: Path, jobs: Sequence[tuple[str, Any]], settings: Mapping[str, Any]) -> list[dict]:
    """Render every video of ``jobs`` into ``staging``; per video its name, source and blurry-vs-sharp PSNR."""
    source, seed, sides, n_frames = settings["source"], settings["seed"], tuple(settings["size"]), settings["n_frames"]
    sub_frames, gamma, noise_std = settings["sub_frames"], settings["gamma"], settings["noise_std"]
    motion, rotation, zoom = (settings["motion_min"], settings["motion_max"]), settings["rotation"], settings["zoom"]
    summaries = []
    for index, (source_name, material) in enumerate(jobs):
        video_rng = np.random.default_rng([seed, index])
        name = f"{index:03d}_{_safe(source_name)}"
        info: dict[str, Any] = {"name": name, "source": source_name}
        if source == "video":
            linear = [to_linear(f, gamma) for f in material]
            blurry = [np.mean(linear[k : k + sub_frames], axis=0) for k in range(0, len(linear), sub_frames)]
            sharp = [linear[k + sub_frames // 2] for k in range(0, len(linear), sub_frames)]
        else:
            path = camera_path(video_rng, n_frames, sub_frames, motion, rotation, zoom)
            image, centre = prepare_still(material, path, sides, video_rng)
            blurry, sharp = render_still(image, path, centre, sides, sub_frames, gamma)
            info["motion_px_per_frame"] = round(
                float(np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1).sum() / n_frames), 2
            )
        psnrs = []
        for k, (blur_lin, sharp_lin) in enumerate(zip(blurry, sharp, strict=True)):
            gt = to_display_uint8(sharp_lin, gamma, 0.0, video_rng)
            blur = to_display_uint8(blur_lin, gamma, noise_std, video_rng)
            if settings["jpeg_quality"] is not None:
                blur = jpeg_roundtrip(blur, settings["jpeg_quality"])
            write_rgb(staging / "blur" / name / f"{k:05d}.png", blur)
            write_rgb(staging / "gt" / name / f"{k:05d}.png", gt)
            psnrs.append(psnr_uint8(blur, gt, crop_border=0))
        info["psnr_blur_db"] = round(float(np.mean(psnrs)), 3)
        summaries.append(info)
        logger.info(
            "video %s: %d frames from %s, blurry vs sharp %.2f dB", name, len(blurry), source_name, info["psnr_blur_db"]
        )
    return summaries


#: Arguments of :func:`synthesize` that say where and whether to write, not what: not part of a dataset's record.
_NOT_RECORDED = ("output", "overwrite")


@dataclass
class SynthesisSettings:
    """The recorded settings of :func:`synthesize` (its signature holds the defaults), as a dataset records them in
    its ``meta.json``: numbers as floats, ``size`` as ``[H, W]``."""

    source: str
    source_path: str | None
    n_videos: int = count(1)
    n_frames: int = count(1)
    size: Any  # a side, or [H, W]
    sub_frames: int = count(1)
    motion_min: float = number(allow_zero=True)
    motion_max: float = number(allow_zero=True)
    rotation: float = number(allow_zero=True)
    zoom: float = number(allow_zero=True)
    gamma: float = number()
    noise_std: float = number(allow_zero=True)
    jpeg_quality: int | None = count(1)
    seed: int = count(0)

    def __post_init__(self) -> None:
        scalar = isinstance(self.size, int | float | str)
        self.size = [check_count("size", side, 8) for side in ([self.size, self.size] if scalar else self.size)]
        if len(self.size) != 2:
            raise ConfigError(f"size must be a side or (H, W) of at least 8 pixels, instead got {self.size}")
        if not 0 <= self.motion_min <= self.motion_max:
            raise ConfigError(f"need 0 <= motion_min <= motion_max, instead got {self.motion_min}, {self.motion_max}")
        if self.jpeg_quality is not None and self.jpeg_quality > 100:
            raise ConfigError(f"jpeg_quality must be in 1..100 or null, instead got {self.jpeg_quality}")
        if self.source not in SOURCES:
            raise ConfigError(f"source must be one of {', '.join(SOURCES)}, instead got {self.source!r}")
        if self.source != "builtin":  # the source's path: given, and there
            if self.source_path is None:
                raise ConfigError(f"source={self.source} needs source_path=...")
            if not Path(self.source_path).exists():
                raise ConfigError(f"source_path not found: {self.source_path}")
            if self.source == "folder" and not Path(self.source_path).is_dir():
                raise ConfigError(f"source=folder needs a folder of images, instead got the file {self.source_path}")


def resolve_settings(**given: Any) -> dict[str, Any]:
    """The settings of :func:`synthesize` (its defaults filled in), checked (:class:`SynthesisSettings`), as a dataset
    records them in its ``meta.json``.

    Raises:
        DataError: a bad setting, named (``n_frames=abc: not a whole number``), or a source path that is missing.
    """
    parameters = inspect.signature(synthesize).parameters.items()  # the defaults' one home
    defaults = {name: p.default for name, p in parameters if name not in _NOT_RECORDED}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise DataError(f"unknown setting(s) of cdvd-synth: {', '.join(unknown)}")
    values = {**defaults, **given}
    if values["source_path"] is not None:
        values["source_path"] = str(values["source_path"])  # a path, or what Hydra read as a number
    try:
        return dataclasses.asdict(read_settings(SynthesisSettings, values))
    except ConfigError as err:
        raise DataError(str(err)) from None


def recorded_settings(folder: Path) -> dict[str, Any] | None:
    """The settings a dataset was made with, from its ``meta.json``; ``None`` when it holds no such record."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = resolve_settings().keys()
    if not isinstance(meta, dict) or not keys <= meta.keys():
        return None
    return {key: meta[key] for key in keys}


def synthetic_split(target: str | os.PathLike, settings: Mapping[str, Any]) -> Path:
    """The folder of the built-in data made with ``settings`` (arguments of :func:`synthesize`), made if missing.

    ``target`` when it holds that data or nothing yet; a folder of the user's there (no ``meta.json`` of
    cdvd-synth) is read as it is. When ``target`` holds data made with other settings, the data asked for goes to
    ``<target>-<key of the settings>`` beside it: the old data set stays for the runs that ask for it, and jobs
    of a sweep over these settings each read their own. Each folder is made once, under a lock
    (:func:`cdvd.data.locking.make_once`): parallel jobs wait for the one that makes it.

    Raises:
        DataError: a bad setting (named), or a folder that holds data made otherwise where this one must go.
    """
    target = Path(target)
    wanted = resolve_settings(**settings)
    digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:8]
    keyed = target.with_name(f"{target.name}-{digest}")
    for folder in (target, keyed):
        make_once(folder, functools.partial(synthesize, folder, **dict(settings)))
        recorded = recorded_settings(folder)
        if recorded == wanted:
            return folder
        if recorded is None and folder == target:
            logger.info("%s holds no data made by cdvd-synth: read as it is (data.synthesize ignored)", target)
            return target
        if folder == target:
            other = ", ".join(f"{k}={recorded[k]}" for k in wanted if recorded[k] != wanted[k])
            logger.info("%s holds the built-in data made with %s: the data asked for is in %s", target, other, keyed)
    raise DataError(f"{keyed} holds other data than data.synthesize asks for: remove it (or set data.root)")


def check_output(output: Path, overwrite: bool) -> None:
    """Refuse an output that is not a folder, or a non-empty one that cdvd-synth did not make (whatever
    ``overwrite`` says: never a folder of the user's), or one it made, without ``overwrite``."""
    if output.is_symlink():
        raise DataError(f"output is a symbolic link: {output} (give the folder it points to, or another output)")
    if output.exists() and not output.is_dir():
        raise DataError(f"output exists and is not a folder: {output}")
    try:
        probe_writable(output.parent)
    except OSError as err:
        raise DataError(f"cannot write the dataset {output}: {err.strerror or err}") from err
    if output.is_dir() and any(output.iterdir()):
        if not owned_folder(output, DATASET_KIND):  # the ownership rule cdvd-pack follows too
            raise DataError(f"output folder {output} holds files cdvd-synth did not make: not replaced")
        if not overwrite:
            raise DataError(f"output folder exists and is not empty: {output} (pass overwrite=true to replace it)")
