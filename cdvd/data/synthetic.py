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
``meta.json`` of the settings; it is written beside ``DIR`` and renamed into place when complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdvd.config_checks import check_count, check_positive_number
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
from cdvd.data.io import DataError, write_rgb
from cdvd.errors import ConfigError
from cdvd.metrics import psnr_uint8

logger = logging.getLogger(__name__)

SOURCES = ("builtin", "folder", "video")


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
    output = Path(output)
    try:  # the numbers first: a wrong type would fail deep inside (int("abc")) instead of naming the setting
        for name, count in (("n_videos", n_videos), ("n_frames", n_frames), ("sub_frames", sub_frames)):
            check_count(name, count, 1)
        check_count("seed", seed, 0)
        for name, number in (
            ("motion_min", motion_min),
            ("motion_max", motion_max),
            ("rotation", rotation),
            ("zoom", zoom),
            ("noise_std", noise_std),
        ):
            check_positive_number(name, number, allow_zero=True)
        check_positive_number("gamma", gamma)
        if jpeg_quality is not None:
            check_count("jpeg_quality", jpeg_quality, 1)
        scalar = isinstance(size, int | float | str)
        sides = tuple(check_count("size", side, 8) for side in ([size, size] if scalar else size))
    except ConfigError as err:
        raise DataError(str(err)) from None
    settings = {
        "source": source,
        "source_path": None if source_path is None else str(source_path),
        "n_videos": n_videos,
        "n_frames": n_frames,
        "size": list(sides),
        "sub_frames": sub_frames,
        "motion_min": motion_min,
        "motion_max": motion_max,
        "rotation": rotation,
        "zoom": zoom,
        "gamma": gamma,
        "noise_std": noise_std,
        "jpeg_quality": jpeg_quality,
        "seed": seed,
    }
    check_settings(settings, output, overwrite)
    rng = np.random.default_rng(seed)

    if source == "video":
        needed = n_videos * n_frames * sub_frames
        frames = [fit_frame(f, sides) for f in hfr_frames(Path(source_path), needed)]
        per_video = n_frames * sub_frames
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

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    summaries = []
    try:
        for index, (source_name, material) in enumerate(jobs):
            video_rng = np.random.default_rng([seed, index])
            name = f"{index:03d}_{_safe(source_name)}"
            info: dict[str, Any] = {"name": name, "source": source_name}
            if source == "video":
                linear = [to_linear(f, gamma) for f in material]
                blurry = [np.mean(linear[k : k + sub_frames], axis=0) for k in range(0, len(linear), sub_frames)]
                sharp = [linear[k + sub_frames // 2] for k in range(0, len(linear), sub_frames)]
            else:
                path = camera_path(video_rng, n_frames, sub_frames, (motion_min, motion_max), rotation, zoom)
                image, centre = prepare_still(material, path, sides, video_rng)
                blurry, sharp = render_still(image, path, centre, sides, sub_frames, gamma)
                info["motion_px_per_frame"] = round(
                    float(np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1).sum() / n_frames), 2
                )
            psnrs = []
            for k, (blur_lin, sharp_lin) in enumerate(zip(blurry, sharp, strict=True)):
                gt = to_display_uint8(sharp_lin, gamma, 0.0, video_rng)
                blur = to_display_uint8(blur_lin, gamma, noise_std, video_rng)
                if jpeg_quality is not None:
                    blur = jpeg_roundtrip(blur, jpeg_quality)
                write_rgb(staging / "blur" / name / f"{k:05d}.png", blur)
                write_rgb(staging / "gt" / name / f"{k:05d}.png", gt)
                psnrs.append(psnr_uint8(blur, gt, crop_border=0))
            info["psnr_blur_db"] = round(float(np.mean(psnrs)), 3)
            summaries.append(info)
            logger.info(
                "video %s: %d frames from %s, blurry vs sharp %.2f dB",
                name,
                len(blurry),
                source_name,
                info["psnr_blur_db"],
            )
        summary = {
            "output": str(output),
            **settings,
            "videos": summaries,
            "psnr_blur_db": round(float(np.mean([v["psnr_blur_db"] for v in summaries])), 3),
        }
        (staging / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
        _move_into_place(staging, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote %d videos of %d frames (%dx%d) to %s", len(summaries), n_frames, sides[0], sides[1], output)
    return summary


def check_settings(settings: dict[str, Any], output: Path, overwrite: bool) -> None:
    source, source_path = settings["source"], settings["source_path"]
    if source not in SOURCES:
        raise DataError(f"source must be one of {', '.join(SOURCES)}, instead got {source!r}")
    if source != "builtin":
        if source_path is None:
            raise DataError(f"source={source} needs source_path=...")
        if not Path(source_path).exists():
            raise DataError(f"source_path not found: {source_path}")
        if source == "folder" and not Path(source_path).is_dir():
            raise DataError(f"source=folder needs a folder of images, instead got the file {source_path}")
    # counts, sizes, signs and types are checked by synthesize() before it builds ``settings``
    if len(settings["size"]) != 2:
        raise DataError(f"size must be a side or (H, W) of at least 8 pixels, instead got {settings['size']}")
    if not 0 <= settings["motion_min"] <= settings["motion_max"]:
        raise DataError(
            f"need 0 <= motion_min <= motion_max, instead got {settings['motion_min']} and {settings['motion_max']}"
        )
    quality = settings["jpeg_quality"]
    if quality is not None and quality > 100:
        raise DataError(f"jpeg_quality must be in 1..100 or null, instead got {quality}")
    if output.exists() and not output.is_dir():
        raise DataError(f"output exists and is not a folder: {output}")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise DataError(f"output folder exists and is not empty: {output} (pass overwrite=true to replace it)")


def _move_into_place(staging: Path, output: Path, overwrite: bool) -> None:
    """Rename the finished dataset to ``output``; the old one, if replaced, is removed only afterwards."""
    old = None
    if output.is_dir():
        if any(output.iterdir()) and not overwrite:
            raise DataError(f"output folder exists and is not empty: {output} (pass overwrite=true to replace it)")
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
    try:
        os.replace(staging, output)
    except OSError as err:
        if old is not None:
            os.replace(old, output)
        raise DataError(f"cannot move the new dataset into {output}: {err}") from err
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
