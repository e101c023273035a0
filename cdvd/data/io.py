"""Reading and writing still frames with OpenCV, always in RGB order, with clear errors that name the file.

Video files are read with PyAV (:mod:`cdvd.video`)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from cdvd.atomic import atomic_destination
from cdvd.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Any bit depth and colour layout as stored, EXIF orientation applied (alpha dropped by the decoder).
_DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR

#: EXIF orientations that swap width and height (transposed, or turned by 90 degrees either way).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112

__all__ = ["IMAGE_EXTENSIONS", "has_frames", "image_size", "list_frames", "natural_key", "read_rgb",
           "write_rgb"]  # fmt: skip


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, in natural order.

    Hidden files are not frames: the partial file a killed writer left (``.00012.cdvd-tmp-4242-0a1b2c3d.png``) or
    the ``._*`` files macOS leaves on external drives would otherwise shift or break the frame list.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"frame folder not found: {folder}")
    files = [p for p in folder.iterdir() if _is_image(p)]
    return sorted(files, key=lambda p: natural_key(p.name))


def video_frames(folder: str | os.PathLike) -> list[Path]:
    """The frames of one video's folder (:func:`list_frames`); a DataError where it holds none."""
    frames = list_frames(folder)
    if not frames:
        raise DataError(f"no image frames in {folder}")
    return frames


def has_frames(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an image file directly inside it (False for a missing or unreadable folder)."""
    try:
        return any(_is_image(p) for p in Path(folder).iterdir())
    except OSError:
        return False


def _is_image(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 RGB (H, W, 3), upright (its EXIF orientation applied, as viewers show it). Grey images
    are expanded, alpha is dropped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    return decode_rgb(np.fromfile(path, dtype=np.uint8), str(path))


def decode_rgb(data: np.ndarray | bytes | memoryview, source: str) -> np.ndarray:
    """Decode an encoded image file's bytes (PNG, JPEG...) as uint8 RGB (H, W, 3), as :func:`read_rgb` does.

    The EXIF orientation (a camera's "rotate 90" tag in a JPEG, PNG, WebP or TIFF) is applied by OpenCV: any depth
    and colour are kept (``IMREAD_ANYDEPTH | IMREAD_ANYCOLOR``; ``IMREAD_UNCHANGED`` would ignore the tag), so deblur
    input, training frames and frame stores all see the frame upright, and :func:`image_size` agrees.

    Args:
        data: the file's bytes (a 1-D uint8 array or any buffer).
        source: where the bytes come from, for the error message (a path, a key in a frame store).
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    image = cv2.imdecode(buffer, _DECODE_FLAGS) if buffer.size else None
    if image is None:
        raise DataError(f"cannot decode image (unreadable or corrupt): {source}")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"unsupported image type {image.dtype}: {source}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def write_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 RGB (H, W, 3) image atomically (temporary file, then rename)."""
    path = Path(path)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"write_rgb expects uint8 (H, W, 3), instead got {image.dtype} {image.shape}")
    ok, encoded = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"cannot encode image for {path}")
    try:
        with atomic_destination(path) as tmp:
            # Python's file object, not ndarray.tofile: tofile can lose a full disk's error at close and leave a
            # short file, which the rename would then pass off as whole (atomic_destination fsyncs it, then renames)
            with open(tmp, "wb") as handle:
                handle.write(encoded.tobytes())
    except OSError as err:  # a full disk, a read-only or vanished folder
        raise DataError(f"cannot write {path}: {err.strerror or err}") from err


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image as :func:`read_rgb` gives it (upright: EXIF orientation applied), read from its header
    only where Pillow can (no full decode).

    Raises:
        DataError: the file is missing or is not a readable image (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    from PIL import Image, UnidentifiedImageError  # Pillow comes with scikit-image; imported where needed

    try:
        with Image.open(path) as img:
            # the stored size (Pillow's TIFF reader reports a TIFF's upright one: its stored one is in its tags)
            tags = getattr(img, "tag_v2", None)
            width, height = (tags[256], tags[257]) if tags is not None and 256 in tags and 257 in tags else img.size
            # the base class's EXIF reader: from the header (PNG's own would decode the whole image to look further)
            if Image.Image.getexif(img).get(_EXIF_ORIENTATION) in _SWAPPING_ORIENTATIONS:
                width, height = height, width
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        # formats Pillow does not know but OpenCV does: decode the whole image
        try:
            return read_rgb(path).shape[:2]
        except DataError:
            raise DataError(f"cannot decode image (unreadable or corrupt): {path}") from err
    return int(height), int(width)
