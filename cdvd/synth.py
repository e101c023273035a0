"""``cdvd-synth``: make a paired blurry/sharp video dataset from sharp material.

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
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from cdvd.data.io import IMAGE_EXTENSIONS, DataError, list_frames, read_rgb, read_video, write_rgb
from cdvd.metrics import psnr_uint8

logger = logging.getLogger(__name__)

SOURCES = ("builtin", "folder", "video")
# colour photos first, then grey textures (used as RGB); all ship in the scikit-image wheel
BUILTIN_IMAGES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "motorcycle",
    "brick",
    "grass",
    "gravel",
    "camera",
)


# --------------------------------------------------------------------------------------------------- sources


def builtin_images(names: Sequence[str] = BUILTIN_IMAGES) -> list[tuple[str, np.ndarray]]:
    """The photos shipped inside scikit-image, as (name, uint8 RGB (H, W, 3)); never downloads anything."""
    import skimage.data

    images = []
    for name in names:
        try:
            image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        except Exception as err:  # noqa: BLE001 - a photo missing from this scikit-image version is skipped
            logger.debug("scikit-image photo %s unavailable: %s", name, err)
            continue
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        images.append((name, np.ascontiguousarray(image[..., :3].astype(np.uint8))))
    if not images:
        raise DataError("no scikit-image sample photo could be loaded; use source=folder source_path=DIR")
    return images


def _folder_images(folder: Path) -> list[tuple[str, np.ndarray]]:
    paths = list_frames(folder)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return [(p.stem, read_rgb(p)) for p in paths]


def _hfr_frames(path: Path, needed: int) -> list[np.ndarray]:
    """Up to ``needed`` consecutive frames of a video file or of a folder of frames."""
    if path.is_dir():
        paths = list_frames(path)
        if not paths:
            raise DataError(f"no image frames in {path}")
        return [read_rgb(p) for p in paths[:needed]]
    return read_video(path, max_frames=needed)


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale so that (H, W) covers ``size``, then crop the centre."""
    height, width = frame.shape[:2]
    scale = max(size[0] / height, size[1] / width)
    new = (max(size[1], round(width * scale)), max(size[0], round(height * scale)))
    if new != (width, height):
        frame = cv2.resize(frame, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (frame.shape[0] - size[0]) // 2, (frame.shape[1] - size[1]) // 2
    return frame[top : top + size[0], left : left + size[1]]


# --------------------------------------------------------------------------------------------- camera motion


def camera_path(
    rng: np.random.Generator,
    n_frames: int,
    sub_frames: int,
    motion: tuple[float, float],
    rotation: float,
    zoom: float,
) -> np.ndarray:
    """A smooth random camera path sampled at every sub-frame.

    The heading, speed, rotation rate and zoom rate vary along slow sinusoids, so the blur changes direction
    and length from frame to frame without jumps.

    Args:
        rng: the random generator.
        n_frames: exposures (output frames).
        sub_frames: samples per exposure.
        motion: (min, max) of the mean translation per exposure, output pixels.
        rotation: largest rotation per exposure, degrees.
        zoom: largest relative scale change per exposure.

    Returns:
        (n_frames * sub_frames, 4) float64: x and y offsets (pixels), angle (radians), log scale.
    """
    steps = n_frames * sub_frames
    t = np.arange(steps) / sub_frames  # time in exposures

    def wave(low: float, high: float) -> np.ndarray:
        return np.sin(2 * np.pi * rng.uniform(low, high) * t + rng.uniform(0, 2 * np.pi))

    speed = rng.uniform(*motion) * (1 + 0.25 * wave(0.05, 0.2))
    heading = rng.uniform(0, 2 * np.pi) + rng.uniform(0, 1.0) * wave(0.03, 0.15)
    velocity = np.stack([np.cos(heading), np.sin(heading)], axis=1) * (speed / sub_frames)[:, None]
    position = np.cumsum(velocity, axis=0)
    angle = np.cumsum(np.deg2rad(rng.uniform(-rotation, rotation)) * wave(0.05, 0.2) / sub_frames)
    log_scale = np.cumsum(rng.uniform(-zoom, zoom) * wave(0.05, 0.2) / sub_frames)
    position -= (position.max(axis=0) + position.min(axis=0)) / 2
    return np.concatenate([position, angle[:, None], log_scale[:, None]], axis=1)


def _inverse_affine(pose: np.ndarray, centre_src: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """2x3 matrix from output pixels to source pixels for one camera pose."""
    dx, dy, angle, log_scale = pose
    scale = math.exp(log_scale)
    linear = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre_out = np.array([(size[1] - 1) / 2, (size[0] - 1) / 2])
    shift = centre_src + np.array([dx, dy]) - linear @ centre_out
    return np.concatenate([linear, shift[:, None]], axis=1)


def _prepare_still(
    image: np.ndarray, path: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rescale a photo so the moving view fits in it; return it and the view's centre in it."""
    diagonal = math.hypot(*size) * math.exp(np.abs(path[:, 3]).max())
    need_h = diagonal + np.ptp(path[:, 1])
    need_w = diagonal + np.ptp(path[:, 0])
    room = min(image.shape[0] / need_h, image.shape[1] / need_w)
    # shrink large photos by a random factor (more detail per pixel), enlarge those too small to hold the view
    factor = 1 / room if room < 1 else 1 / rng.uniform(1, min(room, 2.0))
    if abs(factor - 1) > 1e-3:
        new = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
        image = cv2.resize(image, new, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    slack_h = max(0.0, (image.shape[0] - need_h) / 2)
    slack_w = max(0.0, (image.shape[1] - need_w) / 2)
    centre = np.array(
        [
            (image.shape[1] - 1) / 2 + rng.uniform(-slack_w, slack_w),
            (image.shape[0] - 1) / 2 + rng.uniform(-slack_h, slack_h),
        ]
    )
    return image, centre


# ------------------------------------------------------------------------------------------------- rendering


def _to_linear(image: np.ndarray, gamma: float) -> np.ndarray:
    return np.power(image.astype(np.float32) / 255.0, gamma)


def _to_uint8(linear: np.ndarray, gamma: float, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    srgb = np.power(np.clip(linear, 0.0, 1.0), 1.0 / gamma)
    if noise_std > 0:
        srgb = srgb + rng.normal(0.0, noise_std, size=srgb.shape).astype(np.float32)
    return np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _render_still(
    image: np.ndarray,
    path: np.ndarray,
    centre: np.ndarray,
    size: tuple[int, int],
    sub_frames: int,
    gamma: float,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Linear-light blurry and sharp frames of a photo filmed along ``path``."""
    linear = _to_linear(image, gamma)

    def view(pose: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(
            linear,
            _inverse_affine(pose, centre, size),
            (size[1], size[0]),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT_101,
        )

    blurry, sharp = [], []
    for start in range(0, len(path), sub_frames):
        subs = [view(pose) for pose in path[start : start + sub_frames]]
        blurry.append(np.mean(subs, axis=0))
        sharp.append(subs[sub_frames // 2])
    return blurry, sharp


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "video"


# ---------------------------------------------------------------------------------------------------- public


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
        DataError: a bad setting, an existing output (without ``overwrite``) or an unreadable source.
    """
    output = Path(output)
    sides = (int(size), int(size)) if isinstance(size, int | float) else tuple(int(s) for s in size)
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
    _check_settings(settings, output, overwrite)
    rng = np.random.default_rng(seed)

    if source == "video":
        needed = n_videos * n_frames * sub_frames
        frames = [_fit(f, sides) for f in _hfr_frames(Path(source_path), needed)]
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
        photos = builtin_images() if source == "builtin" else _folder_images(Path(source_path))
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
                linear = [_to_linear(f, gamma) for f in material]
                blurry = [np.mean(linear[k : k + sub_frames], axis=0) for k in range(0, len(linear), sub_frames)]
                sharp = [linear[k + sub_frames // 2] for k in range(0, len(linear), sub_frames)]
            else:
                path = camera_path(video_rng, n_frames, sub_frames, (motion_min, motion_max), rotation, zoom)
                image, centre = _prepare_still(material, path, sides, video_rng)
                blurry, sharp = _render_still(image, path, centre, sides, sub_frames, gamma)
                info["motion_px_per_frame"] = round(
                    float(np.linalg.norm(np.diff(path[:, :2], axis=0), axis=1).sum() / n_frames), 2
                )
            psnrs = []
            for k, (blur_lin, sharp_lin) in enumerate(zip(blurry, sharp, strict=True)):
                gt = _to_uint8(sharp_lin, gamma, 0.0, video_rng)
                blur = _to_uint8(blur_lin, gamma, noise_std, video_rng)
                if jpeg_quality is not None:
                    blur = _jpeg(blur, jpeg_quality)
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


def _check_settings(settings: dict[str, Any], output: Path, overwrite: bool) -> None:
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
    for key in ("n_videos", "n_frames", "sub_frames"):
        if int(settings[key]) < 1:
            raise DataError(f"{key} must be at least 1, instead got {settings[key]}")
    if min(settings["size"]) < 8 or len(settings["size"]) != 2:
        raise DataError(f"size must be a side or (H, W) of at least 8 pixels, instead got {settings['size']}")
    if not 0 <= settings["motion_min"] <= settings["motion_max"]:
        raise DataError(
            f"need 0 <= motion_min <= motion_max, instead got {settings['motion_min']} and {settings['motion_max']}"
        )
    if settings["gamma"] <= 0 or settings["noise_std"] < 0 or settings["rotation"] < 0 or settings["zoom"] < 0:
        raise DataError("gamma must be positive; noise_std, rotation and zoom must be >= 0")
    quality = settings["jpeg_quality"]
    if quality is not None and not 1 <= int(quality) <= 100:
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


@hydra.main(version_base="1.3", config_path="pkg://cdvd.configs", config_name="synth")
def main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "output"):
        logger.error("output=DIR is required (the dataset folder to create)")
        sys.exit(2)
    try:
        synthesize(**OmegaConf.to_container(cfg, resolve=True))
    except DataError as err:
        logger.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
