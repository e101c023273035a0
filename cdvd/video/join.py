"""Joining the segments of :class:`cdvd.video.writer.SegmentedVideoWriter` into one file, with the sound track.

The segments' packets are remuxed (no re-encode) with the output timestamps recorded for their frames; the first
audio track of the source is copied where the container takes its codec, else re-encoded (AAC, or Opus for WebM).
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from cdvd.errors import DataError
from cdvd.video.formats import FINGERPRINT_TAG, can_copy
from cdvd.video.segments import Segment, segment_name

logger = logging.getLogger(__name__)

TimedPackets = Iterator[tuple[Fraction, av.Packet]]


def mux_segments(
    tmp: Path,
    *,
    final_path: Path,
    container_format: str,
    manifest: Mapping[str, Any],
    work_dir: Path,
    segments: Sequence[Segment],
    time_base: Fraction,
    at: Callable[[int], int],
    total: int,
    audio_source: Path | None,
) -> None:
    """Write the complete ``segments`` of ``work_dir`` (and the first audio track of ``audio_source``) into ``tmp``
    (FFmpeg's muxer ``container_format``), which the caller renames onto ``final_path`` (named in messages).

    ``manifest`` is stored as JSON in the container tag :data:`cdvd.video.formats.FINGERPRINT_TAG`; ``at(i)`` is the
    output timestamp, in ``time_base``, of frame ``i`` of the whole video (extrapolated outside it); ``total`` is
    the number of frames, and anything else muxed is an error.

    Raises:
        DataError: a segment differs from its record, or the written file does not hold ``total`` frames.
    """
    options = {"movflags": "+faststart+use_metadata_tags"} if container_format in ("mp4", "mov") else {}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(av.open(str(tmp), "w", format=container_format, options=options))
        out.metadata[FINGERPRINT_TAG] = json.dumps(dict(manifest), sort_keys=True)
        first = stack.enter_context(av.open(str(work_dir / segment_name(0, ".mkv"))))
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        video = out.add_stream_from_template(template)
        video.time_base = time_base
        audio_packets = _audio(out, stack, audio_source, container_format, final_path)
        muxed = 0

        # decode order is the encoder's; decode timestamps are one frame apart, ``delay`` frames before the
        # packet's position (the largest reordering depth of any segment, so every dts <= its pts)
        delay = max(max(i - min(p, d) for i, (p, d) in enumerate(s.packets)) for s in segments)

        def video_packets() -> TimedPackets:
            start = 0
            for seg in segments:
                with av.open(str(work_dir / segment_name(seg.index, ".mkv"))) as part:
                    stream = part.streams.video[0]
                    if stream.codec_context.extradata != extradata:
                        raise DataError(f"{work_dir}: segment {seg.index} has other codec headers")
                    packets = (p for p in part.demux(stream) if p.size)  # lazily: segments can be large
                    try:
                        for i, (packet, (p, _)) in enumerate(zip(packets, seg.packets, strict=True)):
                            packet.time_base = time_base
                            packet.pts, packet.dts = at(start + p), at(start + i - delay)
                            packet.duration = at(start + p + 1) - at(start + p)
                            packet.stream = video
                            yield packet.dts * time_base, packet
                    except ValueError as err:  # zip(strict=True): another packet count than recorded
                        raise DataError(f"{work_dir}: segment {seg.index} lost packets") from err
                start += seg.frames

        for _, packet in heapq.merge(video_packets(), audio_packets, key=lambda item: item[0]):
            out.mux(packet)
            muxed += packet.stream is video
        out.close()
        if muxed != total:
            raise DataError(f"cannot write video {final_path}: {muxed} of {total} frames muxed")
        with av.open(str(tmp)) as check:  # the container must state what we wrote, where it states a count
            stated = check.streams.video[0].frames
            if stated and stated != total:
                raise DataError(f"cannot write video {final_path}: it holds {stated} of {total} frames")


def _audio(
    out: Any, stack: contextlib.ExitStack, audio_source: Path | None, container_format: str, final_path: Path
) -> TimedPackets:
    """Add the audio track of ``audio_source`` to ``out``; the packets to mux, with their times."""
    if audio_source is None:
        return iter(())
    try:
        source = stack.enter_context(av.open(str(audio_source)))
    except (av.FFmpegError, OSError) as err:
        raise DataError(f"cannot read the sound track of {audio_source}: {err}") from err
    if not source.streams.audio:
        return iter(())
    stream = source.streams.audio[0]
    name = stream.codec_context.codec.canonical_name
    if can_copy(container_format, stream):
        track = out.add_stream_from_template(stream)
        logger.debug("%s: sound track (%s) copied", final_path, name)
        return _copied_audio(source, stream, track)
    target = "libopus" if container_format == "webm" else "aac"
    logger.info("%s: the %s container cannot hold %s sound; re-encoding it to %s", final_path, container_format,
                name, target)  # fmt: skip
    return _encoded_audio(source, stream, out, target)


def _timed(packets: Iterable[av.Packet]) -> TimedPackets:
    """Packets with their decode time in seconds (their presentation time where they have no decode time)."""
    for packet in packets:
        yield (packet.dts if packet.dts is not None else packet.pts) * packet.time_base, packet


def _copied_audio(source: Any, stream: Any, track: Any) -> TimedPackets:
    for time, packet in _timed(p for p in source.demux(stream) if p.size and p.pts is not None):
        packet.stream = track  # after its time is taken, in the source's time base
        yield time, packet


def _encoded_audio(source: Any, stream: Any, out: Any, codec: str) -> TimedPackets:
    rate = stream.sample_rate or 48000
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        rate = 48000
    layout = "mono" if (stream.channels or 2) == 1 else "stereo"
    track = out.add_stream(codec, rate=rate, layout=layout)
    fmt = av.codec.Codec(codec, "w").audio_formats[0].name
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    for packet in source.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError:
            continue
        for frame in frames:
            for resampled in resampler.resample(frame):
                yield from _timed(track.encode(resampled))
    for resampled in resampler.resample(None):
        yield from _timed(track.encode(resampled))
    yield from _timed(track.encode(None))
