"""Small clips written in one pass, for tests and bug reports."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_test_video(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    fps: Fraction | int = 25,
    *,
    audio: bool = True,
    codec: str = "libx264",
    audio_codec: str = "aac",
    rotation: int = 0,
) -> Path:
    """Write uint8 (H, W, 3) RGB ``frames`` of one, even, size to ``path`` in one pass (the container follows the
    suffix: ``.mp4``, ``.mkv``, ``.mov``, ``.avi``...) and return it as a :class:`Path`.

    H.264 by default, with (``audio``) a 440 Hz tone as long as the video in ``audio_codec``; ``rotation`` stores a
    display rotation flag (counter-clockwise degrees), as phones do. MP4 and MOV files get their index at the front
    (``faststart``), as streaming-ready files have it.
    """
    path = Path(path)
    rate = Fraction(fps)
    faststart = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".m4v", ".mov") else {}
    with av.open(str(path), "w", options=faststart) as out:
        video = out.add_stream(codec, rate=rate, options={"preset": "veryfast"} if codec == "libx264" else {})
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio_codec, rate=44100, layout="mono") if audio else None
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            fmt = av.codec.Codec(audio_codec, "w").audio_formats[0].name
            samples = math.ceil(len(frames) / rate * 44100)
            t = np.arange(samples) / 44100
            tone = (0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
            resampler = av.AudioResampler(format=fmt, layout="mono", rate=44100)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                for resampled in resampler.resample(chunk):
                    out.mux(sound.encode(resampled))
            out.mux(sound.encode(None))
    return path
