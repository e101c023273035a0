"""Labelled pictures: frames side by side, each under a band that names it (``blurry 24.1 dB | deblurred ...``).

Used by ``cdvd-demo`` (``comparison.png``) and by validation's image strip in TensorBoard. Only numpy and OpenCV:
nothing here imports torch, Lightning or the video modules.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def labelled_strip(
    panels: Sequence[tuple[str, np.ndarray]], *, background: int = 0, ink: int = 255, separator: int = 0
) -> np.ndarray:
    """Frames of one size next to each other, each under a band holding its label.

    Args:
        panels: ``(label, image)`` pairs, left to right; images uint8 (H, W, 3) RGB of one shape; a label may hold
            several lines (``"blurry\\n24.10 dB"``). The text shrinks to fit the panel's width (down to a scale
            where it may be cut off on very narrow frames).
        background: grey level of the band and of the separators.
        ink: grey level of the text.
        separator: width in pixels of the bar between panels.

    Returns:
        uint8 (band + H, n * W + (n - 1) * separator, 3): below the band, each panel is its image pixel for pixel;
        :func:`label_band_height` gives the band's height.

    Raises:
        ValueError: no panels, panels that are not uint8 (H, W, 3) of one shape, or a negative separator.
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
    strip = np.full((band + height, count * width + (count - 1) * separator, 3), background, np.uint8)
    for index, (label, image) in enumerate(panels):
        left = index * (width + separator)
        strip[band:, left : left + width] = image
        panel_band = strip[:band, left : left + width]  # a view: text drawn here stays inside this panel's band
        for row, line in enumerate(label.split("\n")):
            baseline = _MARGIN + row * step + ascent + 1
            cv2.putText(panel_band, line, (_MARGIN, baseline), _FONT, scale, (ink, ink, ink), 1, cv2.LINE_AA)
    return strip
