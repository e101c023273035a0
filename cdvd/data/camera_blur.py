"""Camera-shake blur made as GOPRO made it: sharp sub-frames averaged in linear light.

The pieces of :func:`cdvd.data.synthetic.synthesize`: where sharp material comes from (scikit-image's photos, a
folder of stills, a high-frame-rate video), a smooth random camera path over a still, and the rendering of its
sub-frames into a blurry frame and its sharp GT.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from cdvd.data.io import IMAGE_EXTENSIONS, list_frames, read_rgb, video_frames
from cdvd.errors import DataError
from cdvd.video import read_video

logger = logging.getLogger(__name__)

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


def folder_images(folder: Path) -> list[tuple[str, np.ndarray]]:
    paths = list_frames(folder)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return [(p.stem, read_rgb(p)) for p in paths]


def hfr_frames(path: Path, needed: int) -> list[np.ndarray]:
    """Up to ``needed`` consecutive frames of a video file or of a folder of frames."""
    if path.is_dir():
        return [read_rgb(p) for p in video_frames(path)[:needed]]
    return read_video(path, max_frames=needed)


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
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


def prepare_still(
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
    width_height = np.array(image.shape[1::-1])
    slack = np.maximum(0.0, (width_height - (need_w, need_h)) / 2)  # how far the centre may move, x and y
    return image, (width_height - 1) / 2 + rng.uniform(-slack, slack)


# ------------------------------------------------------------------------------------------------- rendering


def to_linear(image: np.ndarray, gamma: float) -> np.ndarray:
    return np.power(image.astype(np.float32) / 255.0, gamma)


def to_display_uint8(linear: np.ndarray, gamma: float, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    srgb = np.power(np.clip(linear, 0.0, 1.0), 1.0 / gamma)
    if noise_std > 0:
        srgb = srgb + rng.normal(0.0, noise_std, size=srgb.shape).astype(np.float32)
    return np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def render_still(
    image: np.ndarray,
    path: np.ndarray,
    centre: np.ndarray,
    size: tuple[int, int],
    sub_frames: int,
    gamma: float,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Linear-light blurry and sharp frames of a photo filmed along ``path``."""
    linear = to_linear(image, gamma)

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
