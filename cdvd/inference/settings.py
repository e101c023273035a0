"""The settings of ``cdvd-deblur`` and ``cdvd-eval``, checked once into typed objects.

The defaults live in one place, the YAML files (``configs/deblur.yaml``, ``configs/eval.yaml``); these dataclasses
say what each setting must be. :func:`deblur_settings` and :func:`eval_settings` turn a composed config into them,
and every wrong value is one :class:`cdvd.errors.ConfigError` that names the setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig

from cdvd.checkpoints import given_checkpoint, load_model
from cdvd.data.sources import check_apart, check_not_special
from cdvd.errors import ConfigError, UserError
from cdvd.evaluation.protocol import check_frame_set
from cdvd.inference.engine import VideoDeblurrer
from cdvd.inference.sinks import VideoOutputOptions
from cdvd.inference.tiling import TileSpec
from cdvd.models.correlation import cupy_available
from cdvd.runtime import resolve_cache_dir
from cdvd.settings import count, number, read_settings
from cdvd.video.formats import OUTPUT_FORMATS, check_encoder


@dataclass
class TileSettings:
    """``tile.size``: side of the square tiles (``None``: whole frames); ``tile.overlap``: pixels shared."""

    size: int | None
    overlap: int


@dataclass
class DeblurSettings:
    """Everything ``cdvd-deblur`` reads; see ``configs/deblur.yaml`` for each one's meaning and default."""

    input: str | None
    output: str | None
    checkpoint: str | None
    device: str
    precision: str
    backend: str
    channels_last: bool
    compile: bool
    cache_dir: str | None
    streaming: bool
    tile: TileSettings
    corr_backend: str
    split: str
    fps: float | None = number()  # null: the input's
    progress: bool
    num_shards: int  # its range: cdvd.data.sources.shard_sources
    shard: int
    overwrite: bool
    reuse_memory: bool
    codec: str | None
    crf: int | None
    preset: str
    audio: bool
    compare: bool
    segment_frames: int

    def __post_init__(self) -> None:
        self._check_video()
        self.tile_spec()  # checks the tile now, before any work

    def _check_video(self) -> None:
        # the encoder settings, and with a video output whether its container takes them: one check, the writer's
        container = OUTPUT_FORMATS.get(Path(self.output).suffix.lower()) if self.output else None
        try:
            check_encoder(container, self.codec, crf=self.crf, preset=self.preset, segment_frames=self.segment_frames)
        except ValueError as err:
            raise ConfigError(str(err)) from err

    def read_paths(self) -> dict[str, Path]:
        """The paths the run reads, by setting (:func:`check_run_paths` keeps every output apart from them)."""
        return {"input": Path(self.input)} if self.input else {}

    def written_paths(self) -> dict[str, Path]:
        """The paths the run writes, by setting."""
        return {"output": Path(self.output)} if self.output else {}

    def video_options(self) -> VideoOutputOptions:
        """The encoder settings of a video file output (the settings of the same names)."""
        return VideoOutputOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(VideoOutputOptions)})

    def tile_spec(self) -> TileSpec | None:
        """The tiling, or ``None`` for whole frames."""
        if self.tile.size is None:
            return None
        try:
            return TileSpec(size=int(self.tile.size), overlap=int(self.tile.overlap))
        except ValueError as err:
            raise ConfigError(f"tile.size={self.tile.size} tile.overlap={self.tile.overlap}: {err}") from err


@dataclass
class EvalSettings(DeblurSettings):
    """Everything ``cdvd-eval`` reads: the deblurring settings and the scoring ones (``configs/eval.yaml``)."""

    results: str | None
    gt: str | None
    frames: str
    crop_border: int | None = count(0)  # null: the protocol's
    pictures: bool

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            check_frame_set(self.frames)
        except ValueError as err:
            raise ConfigError(str(err)) from err

    def report_path(self) -> Path:
        """The JSON report (``output``); its CSV goes beside it."""
        return Path(self.output or "metrics.json")

    def picture_paths(self) -> dict[str, Path]:
        """With ``pictures=true``: the worst and the best frame's pictures beside the report (``NAME_worst.png``,
        ``NAME_best.png`` for ``NAME.json``), by which; empty otherwise."""
        report = self.report_path()
        return {w: report.with_name(f"{report.stem}_{w}.png") for w in ("worst", "best")} if self.pictures else {}

    def results_path(self) -> Path | None:
        """The frames scored: ``results``, or with ``input=`` (deblurred first) ``results/`` beside the report."""
        if self.results:
            return Path(self.results)
        return self.report_path().parent / "results" if self.input else None

    def read_paths(self) -> dict[str, Path]:
        paths = {key: Path(value) for key, value in (("input", self.input), ("gt", self.gt)) if value}
        results = self.results_path()
        if results is not None:  # scored (with input=, written first)
            paths["results"] = results
        return paths

    def written_paths(self) -> dict[str, Path]:
        results = self.results_path()
        pictures = {f"output ({which} picture)": path for which, path in self.picture_paths().items()}
        return {"output": self.report_path(), **({"results": results} if self.input and results else {}), **pictures}


S = TypeVar("S", DeblurSettings, EvalSettings)


def _tile_node(tile: Any) -> Any:
    # the README's short form tile=512: that size, a sixteenth of it as overlap (at most 64)
    if isinstance(tile, int) and not isinstance(tile, bool):
        return {"size": tile, "overlap": min(64, tile // 16 * 4)}
    if tile is None:
        return {"size": None, "overlap": 64}
    return tile


def _settings(schema: type[S], cfg: DictConfig) -> S:
    values = {field.name: cfg.get(field.name) for field in dataclasses.fields(schema)}
    return read_settings(schema, {**values, "tile": _tile_node(values["tile"])})


def check_run_paths(settings: DeblurSettings) -> None:
    """Before anything is read or written: no path the run reads is a FIFO, a device or a socket (a read would
    block or never end), and no path it writes is at, inside or over one it reads
    (:func:`cdvd.data.sources.check_apart`), whatever each is. The one place ``cdvd-deblur`` and ``cdvd-eval``
    check their paths against each other.

    Raises:
        DataError: a path to read that is not a file or folder.
        ConfigError: an output at, in or over an input, naming both settings.
    """
    reads = settings.read_paths()
    for key, path in reads.items():
        check_not_special(path, key)
    for key, path in settings.written_paths().items():
        check_apart({key: path}, {other: read for other, read in reads.items() if other != key})


def deblur_settings(cfg: DictConfig) -> DeblurSettings:
    """The checked settings of ``cdvd-deblur`` from its composed config."""
    return _settings(DeblurSettings, cfg)


def eval_settings(cfg: DictConfig) -> EvalSettings:
    """The checked settings of ``cdvd-eval`` from its composed config."""
    return _settings(EvalSettings, cfg)


def build_deblurrer(settings: DeblurSettings) -> VideoDeblurrer:
    """Load ``settings.checkpoint`` and wrap it in the engine with the device, precision, streaming and tiling.

    Raises:
        ConfigError: no checkpoint given, or a device the machine lacks.
        CheckpointError: the checkpoint is missing or does not load.
    """
    checkpoint = given_checkpoint(settings.checkpoint)
    if settings.corr_backend == "cupy" and not cupy_available():
        raise ConfigError(
            "corr_backend=cupy needs a CUDA GPU and cupy (pip install 'cdvd[cuda]'); use corr_backend=auto"
        )
    try:  # each value is checked by the class that owns it (the model, the engine); here it becomes a ConfigError
        model = load_model(checkpoint, "cpu", corr_backend=settings.corr_backend)  # a missing file: CheckpointError
        return VideoDeblurrer(
            model,
            device=settings.device,
            precision=settings.precision,
            streaming=settings.streaming,
            tile=settings.tile_spec(),
            backend=settings.backend,
            channels_last=settings.channels_last,
            compile=settings.compile,
            cache_dir=resolve_cache_dir(settings.cache_dir),
        )
    except UserError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err
