"""What ``cdvd-app`` does with an upload, without the page: check it, copy it into a job folder of its own inside
the working folder, deblur it there with the library pipeline (:func:`cdvd.inference.pipeline.deblur`), and read
frames back for the before/after view.

Nothing here imports gradio: the page (:mod:`cdvd.app.page`) only calls these functions, and each rule is tested
here in-process. Every file a job writes is under ``workdir`` (the uploads Gradio receives too, see
:func:`cdvd.app.page.serve`); a refused upload writes nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from cdvd.atomic import probe_writable
from cdvd.checkpoints import given_checkpoint
from cdvd.data.io import IMAGE_EXTENSIONS, read_rgb
from cdvd.errors import ConfigError, DataError, UserError
from cdvd.settings import count, number, read_settings
from cdvd.video import VIDEO_SUFFIXES, compare_path, read_video, read_video_frames

if TYPE_CHECKING:  # the pipeline (torch) loads when a run starts, not when the page's rules are imported
    from cdvd.inference.runner import FrameCallback

logger = logging.getLogger(__name__)

RESULT_NAME = "result.mp4"
"""The deblurred video of a job (H.264, as ``cdvd-deblur output=result.mp4`` writes it)."""
FRAMES_FOLDER = "frames"
"""The folder an upload of still frames is copied into (the video's name in the progress and the manifest)."""
_KINDS = f"a video file ({' '.join(sorted(VIDEO_SUFFIXES))}) or its frames as images ({' '.join(IMAGE_EXTENSIONS)})"


@dataclass(frozen=True)
class AppSettings:
    """``cdvd-app``'s settings (``configs/app.yaml``), checked: where to serve, what to run, where to write."""

    checkpoint: Path
    host: str
    port: int
    workdir: Path
    max_upload_bytes: int
    deblur: dict[str, Any] = field(default_factory=dict)
    """The page's first choices of ``device``, ``precision``, ``backend`` and ``tile`` (``cdvd-deblur``'s: the tile
    ``{"size", "overlap"}``, or the short form ``tile=SIZE`` whose overlap follows the size)."""


@dataclass
class AppConfig:
    """``configs/app.yaml`` as checked, before :func:`app_settings` resolves it into :class:`AppSettings`."""

    checkpoint: str | None
    host: str
    port: int = count(1)
    workdir: str | None  # null: cdvd-app in the system's temporary folder ($TMPDIR, else /tmp)
    max_upload_mb: float = number()
    device: str
    precision: str
    backend: str
    tile: Any  # cdvd-deblur's {size, overlap}, or the short form tile=SIZE

    def __post_init__(self) -> None:
        if self.port > 65535:
            raise ConfigError(f"port={self.port}: must be 1..65535")
        if not isinstance(self.tile, dict | None) and (isinstance(self.tile, bool) or not isinstance(self.tile, int)):
            raise ConfigError(f"tile={self.tile}: pass tile.size=N (a multiple of 4, or null) and tile.overlap=N")


def app_settings(cfg: DictConfig) -> AppSettings:
    """The checked settings of ``cdvd-app`` (a checkpoint given); nothing is written yet (:func:`make_workdir`).

    Raises:
        ConfigError: a setting that cannot work, named.
    """
    config = read_settings(AppConfig, cfg)
    checkpoint = given_checkpoint(config.checkpoint)  # that it loads: check_engine, before serving
    workdir = Path(config.workdir or Path(tempfile.gettempdir()) / "cdvd-app").expanduser().resolve()
    return AppSettings(
        checkpoint=checkpoint.resolve(),
        host=config.host,
        port=config.port,
        workdir=workdir,
        max_upload_bytes=int(config.max_upload_mb * 1024 * 1024),
        deblur={"device": config.device, "precision": config.precision, "backend": config.backend, "tile": config.tile},
    )


def make_workdir(settings: AppSettings) -> None:
    """Make the working folder and its ``jobs/`` (kept between runs of ``cdvd-app``).

    Raises:
        ConfigError: it cannot be made or written (naming ``workdir=``).
    """
    try:
        probe_writable(settings.workdir / "jobs")
    except OSError as err:
        raise ConfigError(
            f"workdir={settings.workdir}: cannot write there ({err.strerror or err}); pass workdir=DIR"
        ) from err


def check_engine(settings: AppSettings) -> None:
    """Load the checkpoint and build the engine with the page's first choices (device, precision, backend, tile) as
    every run will: a broken checkpoint or a setting the machine cannot run is one line at start, not at the first
    run.

    Raises:
        UserError: the checkpoint or a setting, named.
    """
    from cdvd.inference.pipeline import settings_from
    from cdvd.inference.settings import build_deblurrer

    build_deblurrer(settings_from(checkpoint=str(settings.checkpoint), cache_dir=str(cache_dir(settings)),
                                  **settings.deblur))  # fmt: skip


def cache_dir(settings: AppSettings) -> Path:
    """Where ``backend=openvino`` keeps its compiled network: inside the working folder, as everything else."""
    return settings.workdir / "cache"


@dataclass(frozen=True)
class Upload:
    """A checked upload: one video file, or frames (images of one size) in the order given."""

    kind: str
    """``video`` or ``frames``."""
    files: tuple[Path, ...]


def _refuse(name: str, reason: str) -> UserError:
    return DataError(f"{name}: {reason}; upload {_KINDS}")


def _check_video(path: Path) -> None:
    try:
        read_video(path, max_frames=1)  # opens the container and decodes a frame: the content decides
    except DataError as err:
        raise _refuse(path.name, "not a video that can be read") from err


def _check_frames(paths: Sequence[Path]) -> None:
    shapes: dict[str, tuple[int, ...]] = {}  # by name, in the order given
    for path in paths:
        if path.name.startswith("."):
            raise _refuse(path.name, "a hidden file, not a frame")
        if path.name in shapes:
            raise DataError(f"{path.name}: uploaded twice; each frame of a clip needs a name of its own")
        try:
            shape = shapes[path.name] = read_rgb(path).shape
        except DataError as err:
            raise _refuse(path.name, "not an image that can be read") from err
        first, size = next(iter(shapes.items()))
        if shape != size:
            raise DataError(
                f"{path.name} is {shape[1]}x{shape[0]} but {first} is {size[1]}x{size[0]}: "
                "the frames of a clip must all have one size"
            )


def check_upload(paths: Sequence[str | os.PathLike], max_bytes: int) -> Upload:
    """What was uploaded, checked by content: one video file that decodes, or images that decode, all of one size.

    The suffix says what a file claims to be (a video or an image); opening it with the video reader or the image
    decoder says whether it is. Names are the uploaded files' own (their paths' last part).

    Raises:
        DataError: nothing, too much, or anything else was uploaded (named, with what is accepted).
    """
    files = tuple(Path(p) for p in paths)
    if not files:
        raise DataError(f"nothing uploaded: upload {_KINDS}")
    for path in files:
        if not path.is_file():
            raise DataError(f"{path.name}: not a file; upload {_KINDS}")
    total = sum(path.stat().st_size for path in files)
    if total > max_bytes:
        raise DataError(
            f"the upload is {total / 2**20:.3g} MB, more than cdvd-app's max_upload_mb={max_bytes / 2**20:.3g}"
        )
    suffixes = {path.suffix.lower() for path in files}
    if suffixes <= VIDEO_SUFFIXES:
        if len(files) > 1:
            raise DataError(f"{len(files)} videos uploaded: one video at a time (or the frames of one clip)")
        _check_video(files[0])
        return Upload("video", files)
    if suffixes <= set(IMAGE_EXTENSIONS):
        _check_frames(files)
        return Upload("frames", files)
    known = VIDEO_SUFFIXES | set(IMAGE_EXTENSIONS)
    odd = next((path for path in files if path.suffix.lower() not in known), None)
    if odd is not None:
        raise _refuse(odd.name, "neither a video nor an image by its name")
    raise DataError(f"videos and images uploaded together: upload {_KINDS}")


def new_job(workdir: Path) -> Path:
    """A fresh folder ``workdir/jobs/<time>-<random>`` for one run (never one that exists)."""
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    job = workdir / "jobs" / name
    job.mkdir(parents=True, exist_ok=False)
    return job


def stage_upload(upload: Upload, job: Path) -> Path:
    """Copy the upload into ``job/input/`` (never read in place: the run owns its copy); the path to deblur."""
    folder = job / "input"
    if upload.kind == "frames":
        folder = folder / FRAMES_FOLDER
    folder.mkdir(parents=True)
    for path in upload.files:
        shutil.copyfile(path, folder / path.name)
    return folder if upload.kind == "frames" else folder / upload.files[0].name


@dataclass(frozen=True)
class JobResult:
    """A finished run: the input it read, the deblurred video, the side-by-side video and what it took."""

    job: Path
    input: Path
    result: Path
    compare: Path
    frames: int
    seconds: float
    engine: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    """What went wrong reading the input (a damaged video: the frames kept), in words."""


def deblur_upload(
    paths: Sequence[str | os.PathLike],
    settings: AppSettings,
    choices: dict[str, Any] | None = None,
    on_frame: FrameCallback | None = None,
) -> JobResult:
    """Check the uploaded files ``paths``, copy them into a new job folder and deblur them into ``job/result.mp4``
    with the side-by-side ``job/result_compare.mp4``, as ``cdvd-deblur input=... output=result.mp4 compare=true``
    does. ``choices``: ``cdvd-deblur`` settings chosen on the page (``device``, ``precision``, ``backend``, ``tile``)
    over the app's; ``on_frame``: progress, after each frame written.

    Raises:
        UserError: a refused upload or setting (the job folder is then removed: a refused run leaves nothing).
    """
    from cdvd.inference.pipeline import deblur

    upload = check_upload(paths, settings.max_upload_bytes)
    job = new_job(settings.workdir)
    started = time.perf_counter()
    try:
        source = stage_upload(upload, job)
        result = deblur(
            source,
            job / RESULT_NAME,
            settings.checkpoint,
            on_frame=on_frame,
            compare=True,
            progress=False,
            cache_dir=str(cache_dir(settings)),
            **{**settings.deblur, **(choices or {})},
        )
    except UserError:
        shutil.rmtree(job, ignore_errors=True)  # the job's own folder, made above
        raise
    logger.info("job %s: %d frames deblurred into %s", job.name, result.written, result.output)
    return JobResult(
        job=job,
        input=source,
        result=result.output,
        compare=compare_path(result.output),
        frames=result.written,
        seconds=time.perf_counter() - started,
        engine=dict(result.engine),
        warnings=[warning for report in result.videos for warning in report.warnings],
    )


def frame_pair(result: JobResult, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of the job's input (as read for deblurring) and of its deblurred video, uint8 RGB.

    Raises:
        DataError: ``index`` is not a frame of the clip.
    """
    from cdvd.data.sources import discover_sources

    if not 0 <= index < result.frames:
        raise DataError(f"frame {index}: the clip has frames 0..{result.frames - 1}")
    (source,) = discover_sources(result.input)
    before = next(image for k, image in enumerate(source) if k == index)
    after = next(frame.image for frame in read_video_frames(result.result) if frame.index == index)
    return before, after


class FrameClock:
    """Seconds a frame while a run goes on: after the first frame, measured from it (the first frame also pays for
    loading the checkpoint and filling the engine's window, which would inflate the ETA)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None

    def per_frame(self, done: int) -> float:
        """Seconds a frame, now that ``done`` frames are written."""
        now = time.perf_counter()
        if self.first is None or done <= 1:
            self.first = now
            return now - self.started
        return (now - self.first) / (done - 1)


def progress_line(video: str, done: int, total: int | None, each: float) -> str:
    """``clip: frame 3 of 6, 0.80 s a frame, about 2 s left`` (``each``: seconds a frame, :class:`FrameClock`)."""
    if total is None:
        return f"{video}: frame {done}, {each:.2f} s a frame"
    return f"{video}: frame {done} of {total}, {each:.2f} s a frame, about {each * (total - done):.0f} s left"
