"""Labelled pictures: frames side by side, each under a band that names it (``blurry 24.1 dB | deblurred ...``).

Used by ``cdvd-demo`` (``comparison.png``), ``cdvd-eval pictures=true`` (its worst and best frames,
:func:`comparison_strip`) and by validation's image strip in TensorBoard. A PNG can carry text (:func:`encode_png`,
:func:`png_text`): how ``cdvd-eval`` knows a picture as one it wrote. Only numpy, OpenCV and the standard library:
nothing here imports torch, Lightning or the video modules.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LARGEST_SCALE = 0.6
_SMALLEST_SCALE = 0.3
_MARGIN = 3  # pixels around the text in the band


def _text_scale(lines: Sequence[str], width: int) -> float:
    """The largest font scale (between the smallest and largest allowed) at which every line fits ``width``."""
    scale = _LARGEST_SCALE
    while scale > _SMALLEST_SCALE:
        widest = max((cv2.getTextSize(line, _FONT, scale, 1)[0][0] for line in lines), default=0)
        if widest + 2 * _MARGIN <= width:
            break
        scale = round(scale - 0.05, 2)
    return max(scale, _SMALLEST_SCALE)


def _line_height(scale: float) -> int:
    (_, height), descent = cv2.getTextSize("Ag", _FONT, scale, 1)
    return height + descent + 2


def label_band_height(labels: Sequence[str], width: int) -> int:
    """Height in pixels of the band above panels ``width`` wide labelled ``labels`` (``\\n`` splits lines)."""
    lines = [label.split("\n") for label in labels]
    scale = min((_text_scale(panel, width) for panel in lines), default=_LARGEST_SCALE)
    most = max((len(panel) for panel in lines), default=1)
    return most * _line_height(scale) + 2 * _MARGIN


def labelled_strip(panels: Sequence[tuple[str, np.ndarray]], *, separator: int = 0) -> np.ndarray:
    """``panels``, ``(label, image)`` pairs, left to right and ``separator`` black pixels apart, each under a black
    band holding its label in white.

    Images are uint8 (H, W, 3) RGB of one shape; a label may hold several lines (``"blurry\\n24.10 dB"``), its text
    shrunk to fit the panel's width (down to a scale where it may be cut off on very narrow frames). Returns uint8
    (band + H, n * W + (n - 1) * separator, 3), each panel its image pixel for pixel below the band (whose height
    :func:`label_band_height` gives). Raises ValueError for no panels, panels that are not uint8 (H, W, 3) of one
    shape, or a negative separator.
    """
    if not panels:
        raise ValueError("labelled_strip needs at least one panel")
    shape = panels[0][1].shape
    for label, image in panels:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape != shape:
            raise ValueError(
                f"labelled_strip needs uint8 (H, W, 3) panels of one shape; {label!r} is {image.dtype} {image.shape}"
                f" against {shape}"
            )
    if separator < 0:
        raise ValueError(f"separator={separator}: must be 0 or more")
    height, width = shape[:2]
    labels = [label for label, _ in panels]
    band = label_band_height(labels, width)
    scale = min(_text_scale(label.split("\n"), width) for label in labels)
    step = _line_height(scale)
    ascent = cv2.getTextSize("Ag", _FONT, scale, 1)[0][1]  # one baseline per row, whatever the line's letters
    count = len(panels)
    strip = np.zeros((band + height, count * width + (count - 1) * separator, 3), np.uint8)
    for index, (label, image) in enumerate(panels):
        left = index * (width + separator)
        strip[band:, left : left + width] = image
        panel_band = strip[:band, left : left + width]  # a view: text drawn here stays inside this panel's band
        for row, line in enumerate(label.split("\n")):
            baseline = _MARGIN + row * step + ascent + 1
            cv2.putText(panel_band, line, (_MARGIN, baseline), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def comparison_strip(scored: Sequence[tuple[str, np.ndarray, float]], sharp: np.ndarray) -> np.ndarray:
    """One frame's comparison picture (:func:`labelled_strip`): each ``(name, image, psnr)`` of ``scored``
    (``blurry``, ``deblurred``) labelled with its name and PSNR against ``sharp``, then ``sharp``, 4 pixels apart."""
    panels = [(f"{name}\n{psnr:.2f} dB", image) for name, image, psnr in scored]
    return labelled_strip([*panels, ("sharp", sharp)], separator=4)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_END = len(_PNG_SIGNATURE) + 8 + 13 + 4  # the signature and the IHDR chunk, always first
#: chunks (and text bytes) read from a PNG's head at most, looking for its text
_MOST_CHUNKS = 64
_MOST_TEXT_BYTES = 1 << 16


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, text: Mapping[str, str] | None = None) -> bytes:
    """``image`` (uint8 (H, W, 3) RGB) as PNG bytes, holding ``text`` as ``tEXt`` chunks right after its header;
    ValueError for an image that is not uint8 (H, W, 3) or a key or text PNG cannot hold (Latin-1, keys 1 to 79)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_png needs uint8 (H, W, 3) RGB, instead got {image.dtype} {image.shape}")
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {image.shape} image as PNG")
    data = encoded.tobytes()
    chunks = []
    for key, value in (text or {}).items():
        if not 1 <= len(key) <= 79 or "\0" in key or "\0" in value:
            raise ValueError(f"PNG text key {key!r}: 1 to 79 characters, no NUL")
        chunks.append(_chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")))
    return data[:_PNG_HEADER_END] + b"".join(chunks) + data[_PNG_HEADER_END:]


def png_text(path: str | os.PathLike) -> dict[str, str]:
    """The ``tEXt`` entries before the pixels of the PNG at ``path`` (the head of the file only is read); empty for
    anything that is not a PNG or cannot be read."""
    found: dict[str, str] = {}
    try:
        with open(path, "rb") as file:
            if file.read(len(_PNG_SIGNATURE)) != _PNG_SIGNATURE:
                return {}
            for _ in range(_MOST_CHUNKS):
                head = file.read(8)
                if len(head) < 8:
                    break
                length, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND"):
                    break
                if kind == b"tEXt" and length <= _MOST_TEXT_BYTES:
                    key, _, value = file.read(length).partition(b"\0")
                    found[key.decode("latin-1")] = value.decode("latin-1")
                    file.seek(4, os.SEEK_CUR)
                else:
                    file.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return {}
    return found
