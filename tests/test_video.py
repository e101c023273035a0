"""Video files through PyAV: probing, reading with integrity warnings, and the resumable, atomic segment writer."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cdvd.atomic import TEMP_MARK
from cdvd.errors import DataError
from cdvd.video import (
    DecodedFrame,
    FrameTap,
    SegmentedVideoWriter,
    VideoInfo,
    compare_path,
    file_fingerprint,
    is_video_path,
    probe_video,
    read_video_frames,
    side_by_side,
    upright,
    writable_destination,
    write_test_video,
    written_with,
)

N_FRAMES = 20
H, W = 32, 48


def make_frames(n: int = N_FRAMES, size: tuple[int, int] = (H, W), seed: int = 0) -> list[np.ndarray]:
    """Smooth moving waves and a moving square (motion, so B-frames occur; each frame unlike the next), uint8 RGB."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(n):
        image = np.stack(
            [
                128 + 90 * np.sin((xx + 3 * t) / 6),
                128 + 90 * np.cos((yy - 2 * t) / 5),
                128 + 60 * np.sin((xx + yy) / 7 + t / 3),
            ],
            axis=-1,
        )
        x0 = (2 * t) % (w - 8)
        image[4:12, x0 : x0 + 8] = rng.integers(0, 256, 3)
        frames.append(image.astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """H.264 + AAC clips of 20 frames at 25 fps, 48x32, in .mp4, .mkv and .avi."""
    folder = tmp_path_factory.mktemp("clips")
    frames = make_frames()
    return {ext: write_test_video(folder / f"clip.{ext}", frames, 25) for ext in ("mp4", "mkv", "avi")}


def decode_all(path: Path) -> list[np.ndarray]:
    return [frame.image for frame in read_video_frames(path)]


def stream_packets(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def audio_end(path: Path) -> float:
    """Seconds at which the first audio track ends."""
    with av.open(str(path)) as container:
        last = [p for p in container.demux(container.streams.audio[0]) if p.size][-1]
        return float((last.pts + last.duration) * last.time_base)


def write_all(path: Path, source: Path, *, stop_after: int | None = None, **kwargs) -> SegmentedVideoWriter:
    """Write ``source``'s frames to ``path`` (through ``finish``), or only the first ``stop_after`` without it."""
    info = probe_video(source)
    kwargs.setdefault("audio_source", source)
    writer = SegmentedVideoWriter(path, info=info, **kwargs)
    done = writer.frames_done()
    for frame in read_video_frames(source):
        if frame.index < done:
            continue
        if stop_after is not None and frame.index >= stop_after:
            return writer
        writer.write(frame.image, frame.pts)
    writer.finish()
    return writer


# ------------------------------------------------------------------------------------------------------------
# probing and reading


def test_is_video_path() -> None:
    assert is_video_path("a/b/Clip.MP4") and is_video_path("x.mkv") and is_video_path("x.webm")
    assert not is_video_path("frame.png") and not is_video_path("folder")


def test_probe_states_what_the_container_says(clips: dict[str, Path]) -> None:
    info = probe_video(clips["mp4"])
    assert (info.width, info.height, info.frame_rate, info.frame_count) == (W, H, Fraction(25), N_FRAMES)
    assert info.codec == "h264" and info.duration == pytest.approx(0.8, abs=0.05)
    assert info.audio is not None and (info.audio.codec, info.audio.sample_rate, info.audio.channels) == (
        "aac",
        44100,
        1,
    )
    mkv = probe_video(clips["mkv"])
    assert mkv.frame_count is None and mkv.expected_frames == N_FRAMES  # Matroska states no count, only a duration


def test_probe_unreadable_file_names_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="junk.mp4"):
        probe_video(junk)
    with pytest.raises(DataError, match="missing.mkv"):
        read_video_frames(tmp_path / "missing.mkv")


@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi"])
def test_read_back_frames_rate_and_timestamps(clips: dict[str, Path], ext: str) -> None:
    reader = read_video_frames(clips[ext])
    frames = list(reader)
    assert reader.decoded == len(frames) == N_FRAMES and reader.problems == [] and reader.complete
    assert reader.info.frame_rate == 25
    seconds = [f.pts * reader.info.time_base for f in frames]
    assert np.diff(seconds).tolist() == pytest.approx([1 / 25] * (N_FRAMES - 1), abs=1e-3)  # AVI starts at 1/25
    sources = make_frames()
    for i, frame in enumerate(frames):
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        errors = [np.abs(frame.image.astype(int) - s).mean() for s in sources]
        # 4:2:0 alone costs ~4 levels on frames this small; the nearest source must be this very frame
        assert errors[i] < 12 and int(np.argmin(errors)) == i


def test_rotation_flag_is_applied_to_the_pixels(tmp_path: Path) -> None:
    frames = make_frames(3)
    path = write_test_video(tmp_path / "phone.mp4", frames, 30, audio=False, rotation=90)
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (H, W, 90)
    first = next(iter(read_video_frames(path))).image
    assert first.shape == (W, H, 3)
    turned = [np.abs(first.astype(int) - np.rot90(frames[0], k)).mean() for k in (1, -1)]
    assert turned[0] < 12 < turned[1]  # counter-clockwise, as FFmpeg's players turn it


def test_upright_turns_counter_clockwise() -> None:
    image = np.arange(6).reshape(2, 3, 1)
    assert upright(image, 0) is image
    assert upright(image, 90)[:, :, 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert upright(image, -90)[:, :, 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert upright(image, 180)[:, :, 0].tolist() == [[5, 4, 3], [2, 1, 0]]


@pytest.mark.parametrize("ext", ["mp4", "mkv", "avi"])
def test_truncated_input_warns_with_both_counts(
    clips: dict[str, Path], tmp_path: Path, ext: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = clips[ext].read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    reader = read_video_frames(cut)
    with caplog.at_level(logging.WARNING, logger="cdvd.video"):
        decoded = sum(1 for _ in reader)
    assert 0 < decoded < N_FRAMES and reader.decoded == decoded
    assert reader.problems, "a short read must be reported"
    message = reader.problems[-1]
    assert str(cut) in message and f"decoded {decoded} frames" in message and str(N_FRAMES) in message
    assert message in caplog.text


def test_corrupt_bytes_part_way_warn_with_the_counts(
    clips: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = bytearray(clips["mkv"].read_bytes())
    rng = np.random.default_rng(0)
    for offset in range(len(data) // 3, len(data) // 3 + 2000, 50):
        data[offset : offset + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(data))
    reader = read_video_frames(bad)
    with caplog.at_level(logging.WARNING, logger="cdvd.video"):
        decoded = sum(1 for _ in reader)
    # the demuxer loses the rest of the file: reported with both counts
    assert 0 < decoded < N_FRAMES
    assert any(str(bad) in p and f"decoded {decoded} frames" in p and str(N_FRAMES) in p for p in reader.problems)
    assert all(p in caplog.text for p in reader.problems)


def test_no_decodable_frame_is_an_error(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips["mp4"].read_bytes()  # faststart: the index comes first, then the media data
    cut = tmp_path / "empty.mp4"
    cut.write_bytes(data[: data.index(b"mdat") + 4])
    with pytest.raises(DataError, match="empty.mp4"):
        list(read_video_frames(cut))


# ------------------------------------------------------------------------------------------------------------
# writing


@pytest.mark.parametrize("ext", ["mp4", "mkv", "mov"])
def test_h264_aac_in_gives_h264_with_the_same_aac_track_out(clips: dict[str, Path], tmp_path: Path, ext: str) -> None:
    source = clips["mp4"]
    out = tmp_path / f"sharp.{ext}"
    writer = write_all(out, source, segment_frames=6, fingerprint={"checkpoint": "abc", "tile": 0})
    assert writer.output_is_current() and written_with(out) == writer.manifest()
    assert written_with(out)["fingerprint"] == {"checkpoint": "abc", "tile": 0} and written_with(source) is None
    info = probe_video(out)
    assert info.codec == "h264" and info.frame_rate == 25 and (info.width, info.height) == (W, H)
    assert info.audio is not None and info.audio.codec == "aac"
    reader = read_video_frames(out)
    frames = list(reader)
    assert len(frames) == N_FRAMES and reader.problems == []
    # the source's timestamps (Matroska shifts audio and video together past the AAC priming), and the sound
    # copied packet for packet (not re-encoded)
    seconds = [f.pts * info.time_base for f in frames]
    assert [t - seconds[0] for t in seconds] == pytest.approx([i / 25 for i in range(N_FRAMES)], abs=1e-3)
    assert stream_packets(out, "audio") == stream_packets(source, "audio")
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
    assert not (tmp_path / f".sharp.{ext}.parts").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"sharp.{ext}"]  # no temp files left


def test_webm_gets_vp9_and_opus(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "sharp.webm"
    writer = write_all(out, clips["mkv"], segment_frames=8)
    assert writer.output_is_current()
    info = probe_video(out)
    assert info.codec == "vp9" and info.audio is not None and info.audio.codec == "opus"
    assert audio_end(out) == pytest.approx(audio_end(clips["mkv"]), abs=0.03)  # re-encoded, same length
    reader = read_video_frames(out)
    assert sum(1 for _ in reader) == N_FRAMES and reader.problems == [] and info.frame_rate == 25


def test_pcm_sound_is_reencoded_to_aac_for_mp4_and_copied_into_mkv(tmp_path: Path) -> None:
    source = write_test_video(tmp_path / "pcm.mkv", make_frames(8), 25, audio_codec="pcm_s16le")
    write_all(tmp_path / "o.mp4", source, segment_frames=4)
    write_all(tmp_path / "o.mkv", source, segment_frames=4)
    assert probe_video(tmp_path / "o.mp4").audio.codec == "aac"
    assert audio_end(tmp_path / "o.mp4") == pytest.approx(audio_end(source), abs=0.03)
    assert stream_packets(tmp_path / "o.mkv", "audio") == stream_packets(source, "audio")


def test_interrupted_and_resumed_write_equals_an_uninterrupted_one(clips: dict[str, Path], tmp_path: Path) -> None:
    source = clips["mp4"]
    whole = tmp_path / "whole.mp4"
    write_all(whole, source, segment_frames=4)
    reference = decode_all(whole)

    # a crash mid-segment: 9 frames in, the writer dropped without finish()
    out = tmp_path / "resumed.mp4"
    writer = write_all(out, source, segment_frames=4, stop_after=9)
    del writer
    gc.collect()
    parts = tmp_path / ".resumed.mp4.parts"
    assert not out.exists()
    # what a kill leaves of a longer segment: a temp file being written, a renamed file without its record
    (parts / "seg_000002.mkv.tmp").write_bytes(b"\x1a\x45\xdf\xa3 half a segment")
    (parts / "seg_000003.mkv").write_bytes(b"\x1a\x45\xdf\xa3 no record")
    (parts / "output.tmp.mp4").write_bytes(b"half a joined file")  # a kill during finish()

    resumed = SegmentedVideoWriter(out, info=probe_video(source), segment_frames=4, audio_source=source)
    assert resumed.frames_done() == 8  # two complete segments; the partial ones removed
    assert sorted(p.name for p in parts.iterdir()) == [
        ".cdvd-owner.json",  # the marker that makes the folder the project's to clear
        "manifest.json",
        "seg_000000.json",
        "seg_000000.mkv",
        "seg_000001.json",
        "seg_000001.mkv",
    ]
    del resumed
    write_all(out, source, segment_frames=4)
    got = decode_all(out)
    assert len(got) == N_FRAMES and all(np.array_equal(a, b) for a, b in zip(got, reference, strict=True))
    assert stream_packets(out, "video") == stream_packets(whole, "video")  # bit-identical, in fact


def test_kill_between_segments_then_resume(clips: dict[str, Path], tmp_path: Path) -> None:
    """A real SIGKILL right after a segment completed; the rerun starts at that segment's end."""
    source, out = clips["mp4"], tmp_path / "killed.mkv"
    script = (
        "import os, signal, sys\n"
        "from cdvd.video import SegmentedVideoWriter, probe_video, read_video_frames\n"
        "src, out = sys.argv[1], sys.argv[2]\n"
        "w = SegmentedVideoWriter(out, info=probe_video(src), segment_frames=5, audio_source=src)\n"
        "for f in read_video_frames(src):\n"
        "    w.write(f.image, f.pts)\n"
        "    if f.index == 9: os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(source), str(out)], check=False)
    assert result.returncode == -9 and not out.exists()
    writer = SegmentedVideoWriter(out, info=probe_video(source), segment_frames=5, audio_source=source)
    assert writer.frames_done() == 10
    del writer
    write_all(out, source, segment_frames=5)
    whole = tmp_path / "whole.mkv"
    write_all(whole, source, segment_frames=5)
    assert all(np.array_equal(a, b) for a, b in zip(decode_all(out), decode_all(whole), strict=True))
    assert len(decode_all(out)) == N_FRAMES


def test_other_fingerprint_or_settings_discard_old_parts(clips: dict[str, Path], tmp_path: Path) -> None:
    source, out = clips["mp4"], tmp_path / "o.mp4"
    info = probe_video(source)
    del_writer = write_all(out, source, segment_frames=4, stop_after=8, fingerprint={"checkpoint": "aaa"})
    del del_writer
    same = SegmentedVideoWriter(out, info=info, segment_frames=4, fingerprint={"checkpoint": "aaa"})
    assert same.frames_done() == 8
    same.abort()  # one writer of an output at a time: this one gives it back
    other_crf = SegmentedVideoWriter(out, info=info, segment_frames=4, crf=30, fingerprint={"checkpoint": "aaa"})
    assert other_crf.frames_done() == 0
    other_crf.abort()
    write_all(out, source, segment_frames=4, stop_after=8, fingerprint={"checkpoint": "aaa"})
    other = SegmentedVideoWriter(out, info=info, segment_frames=4, fingerprint={"checkpoint": "bbb"})
    assert other.frames_done() == 0 and not other.output_is_current()
    parts = tmp_path / ".o.mp4.parts"
    assert sorted(p.name for p in parts.iterdir()) == [".cdvd-owner.json", "manifest.json"]
    assert json.loads((parts / "manifest.json").read_text())["fingerprint"] == {"checkpoint": "bbb"}


def test_finished_output_is_current_only_for_its_own_manifest(clips: dict[str, Path], tmp_path: Path) -> None:
    source, out = clips["mp4"], tmp_path / "o.mkv"
    write_all(out, source, fingerprint={"checkpoint": "aaa"})
    info = probe_video(source)
    assert SegmentedVideoWriter(out, info=info, fingerprint={"checkpoint": "aaa"}).output_is_current()
    assert not SegmentedVideoWriter(out, info=info, fingerprint={"checkpoint": "bbb"}).output_is_current()
    assert not SegmentedVideoWriter(out, info=info, fingerprint={"checkpoint": "aaa"}, crf=20).output_is_current()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mkv"]  # asking touched nothing


def test_segment_without_its_record_is_not_reused(clips: dict[str, Path], tmp_path: Path) -> None:
    source, out = clips["mp4"], tmp_path / "o.mkv"
    write_all(out, source, segment_frames=4, stop_after=12)
    parts = tmp_path / ".o.mkv.parts"
    (parts / "seg_000001.json").unlink()  # killed between renaming the media and writing its record
    writer = SegmentedVideoWriter(out, info=probe_video(source), segment_frames=4)
    assert writer.frames_done() == 4
    assert sorted(p.name for p in parts.iterdir()) == [
        ".cdvd-owner.json",
        "manifest.json",
        "seg_000000.json",
        "seg_000000.mkv",
    ]


@pytest.mark.parametrize("room", ["none", "for_parts"])
def test_full_disk_is_an_error_and_leaves_no_output(clips: dict[str, Path], tmp_path: Path, room: str) -> None:
    """On a tiny tmpfs: the disk fills while segments are written, or (``for_parts``) while they are joined."""
    info = probe_video(clips["mp4"])
    noise = [np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8) for i in range(N_FRAMES)]

    def write(folder: Path) -> SegmentedVideoWriter:
        writer = SegmentedVideoWriter(folder / "out.mp4", info=info, crf=0, segment_frames=10)
        for image in noise:
            writer.write(image)
        return writer  # 20 frames: two complete segments, finish() only joins them

    size = 3 * 4096  # the manifest and a little
    if room == "for_parts":  # room for the parts, not for the joined copy
        measure = tmp_path / "measure"
        measure.mkdir()
        write(measure)
        size += sum(-(-p.stat().st_size // 4096) * 4096 for p in (measure / ".out.mp4.parts").iterdir())
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        with pytest.raises(DataError, match="out.mp4"):
            write(mount).finish()
        # no output, no temp file beside it; the parts only where a segment was complete (none: nothing useful)
        assert [p.name for p in mount.iterdir()] == ([".out.mp4.parts"] if room == "for_parts" else [])
        assert not any(p.name.endswith(".tmp") or TEMP_MARK in p.name for p in mount.rglob("*"))
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_unwritable_destination_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="a_file"):
        writable_destination(blocker / "out.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(DataError, match="folder"):
        writable_destination(tmp_path / "dir.mp4")
    assert writable_destination(tmp_path / "new" / "out.mkv") == tmp_path / "new" / "out.mkv"
    assert list((tmp_path / "new").iterdir()) == []
    info = VideoInfo(tmp_path / "in.mp4", W, H, Fraction(25), Fraction(1, 25), N_FRAMES, 0.8, "h264")
    with pytest.raises(DataError, match="a_file"):
        SegmentedVideoWriter(blocker / "out.mp4", info=info).frames_done()


def test_settings_the_container_cannot_take_name_the_setting(tmp_path: Path) -> None:
    info = VideoInfo(tmp_path / "in.mp4", W, H, Fraction(25), Fraction(1, 25), N_FRAMES, 0.8, "h264")
    with pytest.raises(ValueError, match="codec=libx264"):
        SegmentedVideoWriter(tmp_path / "o.webm", info=info, codec="libx264")
    with pytest.raises(ValueError, match="codec=no-such-codec"):
        SegmentedVideoWriter(tmp_path / "o.mp4", info=info, codec="no-such-codec")
    with pytest.raises(ValueError, match="output="):
        SegmentedVideoWriter(tmp_path / "o.avi", info=info)
    with pytest.raises(ValueError, match="crf=52"):
        SegmentedVideoWriter(tmp_path / "o.mp4", info=info, crf=52)
    with pytest.raises(ValueError, match="preset=fastest"):
        SegmentedVideoWriter(tmp_path / "o.mkv", info=info, preset="fastest")
    with pytest.raises(ValueError, match="pix_fmt=rgb48le"):
        SegmentedVideoWriter(tmp_path / "o.mp4", info=info, pix_fmt="rgb48le")
    assert not any(tmp_path.iterdir())


def test_finish_without_frames_is_an_error(tmp_path: Path) -> None:
    info = VideoInfo(tmp_path / "in.mp4", W, H, Fraction(25), Fraction(1, 25), N_FRAMES, 0.8, "h264")
    with pytest.raises(DataError, match="no frames"):
        SegmentedVideoWriter(tmp_path / "o.mp4", info=info).finish()
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(("name", "pix_fmt"), [("o.mkv", "yuv444p"), ("o.mp4", "yuv444p"), ("o.webm", "yuv420p")])
def test_odd_sized_frames_keep_their_size_and_timestamps_are_filled_in(
    tmp_path: Path, name: str, pix_fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    """H.264 holds odd sizes in 4:4:4 only (said in one line), VP9 in 4:2:0 too; nothing is padded."""
    info = VideoInfo(tmp_path / "in.mp4", 47, 31, Fraction(30), Fraction(1, 30), None, None, "h264")
    with caplog.at_level(logging.INFO, logger="cdvd.video"):
        writer = SegmentedVideoWriter(tmp_path / name, info=info, segment_frames=3)
    assert writer.pix_fmt == pix_fmt
    assert ("47x31 frames" in caplog.text) == (pix_fmt == "yuv444p")
    sources = make_frames(5, size=(31, 47))
    for image in sources:
        writer.write(image)  # no timestamps: one frame period apart
    writer.finish()
    out = probe_video(tmp_path / name)
    assert (out.width, out.height, out.frame_rate) == (47, 31, 30)
    frames = list(read_video_frames(tmp_path / name))
    assert len(frames) == 5 and all(f.image.shape == (31, 47, 3) for f in frames)
    for i, frame in enumerate(frames):  # the pixels in place: each frame nearest its own source, unshifted
        errors = [np.abs(frame.image.astype(int) - s).mean() for s in sources]
        assert errors[i] < 12 and int(np.argmin(errors)) == i
    seconds = [f.pts * out.time_base for f in frames]
    assert np.diff(seconds).tolist() == pytest.approx([1 / 30] * 4, abs=1e-3)


def test_an_odd_size_the_pixel_format_cannot_hold_is_padded_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info = VideoInfo(tmp_path / "in.mp4", 47, 31, Fraction(30), Fraction(1, 30), None, None, "h264")
    with caplog.at_level(logging.WARNING, logger="cdvd.video"):
        writer = SegmentedVideoWriter(tmp_path / "o.mkv", info=info, pix_fmt="yuv420p", segment_frames=3)
    assert "47x31 frames" in caplog.text and "48x32" in caplog.text  # before any frame
    for image in make_frames(3, size=(31, 47)):
        writer.write(image)
    writer.finish()
    assert (probe_video(tmp_path / "o.mkv").width, probe_video(tmp_path / "o.mkv").height) == (48, 32)


# ------------------------------------------------------------------------------------------------------------
# helpers


def test_side_by_side() -> None:
    left = np.zeros((4, 3, 3), np.uint8)
    right = np.full((4, 5, 3), 9, np.uint8)
    both = side_by_side(left, right, separator=2)
    assert both.shape == (4, 10, 3)
    assert (both[:, :3] == 0).all() and (both[:, 3:5] == 255).all() and (both[:, 5:] == 9).all()
    assert side_by_side(left, right, separator=0).shape == (4, 8, 3)
    with pytest.raises(ValueError, match="one height"):
        side_by_side(left, np.zeros((5, 3, 3), np.uint8))


def test_file_fingerprint_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    path.write_bytes(b"a" * 1000)
    first = file_fingerprint(path)
    assert file_fingerprint(path) == first
    path.write_bytes(b"a" * 999 + b"b")
    assert file_fingerprint(path) != first
    os.utime(path)
    assert file_fingerprint(path)["size"] == 1000


def test_frame_tap_remembers_the_latest_frames() -> None:
    frames = [DecodedFrame(i, 100 + 7 * i, np.full((2, 2, 3), i, np.uint8)) for i in range(6)]
    tap = FrameTap(frames, keep=3, images=True)
    seen = []
    for image in tap:
        seen.append(int(image[0, 0, 0]))
        assert tap.pts(len(seen) - 1) == 100 + 7 * (len(seen) - 1)
    assert seen == list(range(6))
    assert tap.frame(4).image[0, 0, 0] == 4 and tap.pts(3) == 121
    with pytest.raises(KeyError, match="frame 2"):
        tap.pts(2)
    light = FrameTap(frames, keep=2)
    list(light)
    assert light.pts(5) == 135 and light.frame(5).image.size == 0  # timestamps only


def test_compare_path() -> None:
    assert compare_path(Path("out/sharp.mkv")) == Path("out/sharp_compare.mkv")
