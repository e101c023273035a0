"""The page of ``cdvd-app`` (Gradio Blocks): upload, the settings that matter, Run with a progress bar and ETA, a
before/after slider on any frame, the side-by-side video and the download of the result.

Gradio is imported here only, when :func:`serve` runs (``pip install 'cdvd[app]'``); what each button does is a
function of :mod:`cdvd.app.jobs`. Runs are queued one at a time (the CPU or GPU does one clip at a time; a second
user's run waits its turn). A refused upload or setting is one line on the page (the :class:`cdvd.errors.UserError`'s
message), never a traceback.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

from cdvd import backends, hardware
from cdvd.app.jobs import AppSettings, FrameClock, JobResult, deblur_upload, frame_pair, progress_line
from cdvd.errors import ConfigError, UserError, user_message

logger = logging.getLogger(__name__)

DEVICES = ["auto", "cpu", "cuda"]


def import_gradio(settings: AppSettings) -> ModuleType:
    """Gradio, set to keep its files inside the working folder and to call no one (no analytics, no version check).

    Gradio reads ``GRADIO_TEMP_DIR`` (its copies of uploads and results) when it is imported: set first. It also
    imports matplotlib at each request, whose font cache would go to the home folder: ``MPLCONFIGDIR`` keeps it in
    the working folder too.

    Raises:
        ConfigError: Gradio is not installed (the message says how to install it).
    """
    os.environ["GRADIO_TEMP_DIR"] = str(settings.workdir / "uploads")
    os.environ["MPLCONFIGDIR"] = str(settings.workdir / "matplotlib")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    try:
        import gradio
    except ImportError as err:
        raise ConfigError("cdvd-app needs Gradio, which is not installed: pip install 'cdvd[app]'") from err
    return gradio


def deblur_choices(
    device: str, precision: str, backend: str, tile_size: float | None, configured: Any
) -> dict[str, Any]:
    """The page's choices as ``cdvd-deblur`` settings. Tile size 0 or empty: whole frames; the configured size: the
    configured tile (its overlap); another size: ``cdvd-deblur``'s short form ``tile=SIZE``, whose overlap follows
    the size."""
    size = int(tile_size) if tile_size else None
    configured_size = configured.get("size") if isinstance(configured, dict) else configured
    tile = configured if size == configured_size else size
    return {"device": device, "precision": precision, "backend": backend, "tile": tile}


def _summary(result: JobResult) -> str:
    engine = result.engine
    line = (
        f"**{result.frames} frames** deblurred in {result.seconds:.1f} s on {engine.get('device')} "
        f"({engine.get('precision')}, {engine.get('backend')})."
    )
    return line + "".join(f"\n\n⚠ {warning}" for warning in result.warnings)


def build_page(gr: ModuleType, settings: AppSettings) -> Any:
    """The Blocks of the page (not launched)."""
    first = settings.deblur
    tile = first["tile"]
    size = tile.get("size") if isinstance(tile, dict) else tile

    tracker = gr.Progress()  # Gradio gives each run its own bar where a handler's argument defaults to one

    def run(files: list[str] | None, device: str, precision: str, backend: str, tile_size: float | None,
            progress: Any = tracker) -> tuple[Any, ...]:  # fmt: skip
        clock = FrameClock()

        def on_frame(video: str, done: int, total: int | None) -> None:
            line = progress_line(video, done, total, clock.per_frame(done))
            progress((done, total), desc=line, unit="frames")

        try:
            progress(0, desc="checking the upload and loading the checkpoint")
            result = deblur_upload(files or [], settings, deblur_choices(device, precision, backend, tile_size, tile),
                                   on_frame)  # fmt: skip
            middle = result.frames // 2
            pair = frame_pair(result, middle)
        except UserError as err:
            raise gr.Error(user_message(err), duration=60, print_exception=False) from None
        last = result.frames - 1
        frame = gr.Slider(minimum=0, maximum=last, value=middle, step=1, interactive=last > 0)
        return result, _summary(result), pair, frame, str(result.compare), str(result.result)

    def show_frame(result: JobResult | None, index: float) -> Any:
        if result is None:
            return gr.skip()
        try:
            return frame_pair(result, int(index))
        except UserError as err:
            raise gr.Error(user_message(err), print_exception=False) from None

    with gr.Blocks(title="cdvd: deblur a clip") as page:
        gr.Markdown(
            "## Deblur a clip with CDVD-TSP\n"
            f"Checkpoint `{settings.checkpoint.name}`. Upload a video, or its frames as images, choose where it runs "
            "and press **Run**: the page shows the progress, then the clip before and after, and the result to "
            "download. Runs take turns, one at a time."
        )
        job = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Video, or its frames (images)", file_count="multiple", elem_id="upload")
                with gr.Row():
                    device = gr.Dropdown(DEVICES, value=first.get("device"), label="Device", allow_custom_value=True)
                    precision = gr.Dropdown(list(hardware.PRECISIONS), value=first.get("precision"), label="Precision")
                with gr.Row():
                    backend = gr.Dropdown(list(backends.BACKENDS), value=first.get("backend"), label="Backend")
                    tile_size = gr.Number(value=size or 0, label="Tile size (0: whole frames)",
                                          precision=0, minimum=0, step=4)  # fmt: skip
                start = gr.Button("Run", variant="primary", elem_id="run")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                before_after = gr.ImageSlider(label="Before | after", format="png", elem_id="before-after")
                frame = gr.Slider(minimum=0, maximum=1, value=0, step=1, label="Frame", interactive=False,
                                  elem_id="frame")  # fmt: skip
                compare = gr.Video(label="Side by side: blurry | deblurred", elem_id="compare")
                download = gr.File(label="Deblurred video", elem_id="result")
        start.click(
            run,
            inputs=[upload, device, precision, backend, tile_size],
            outputs=[job, status, before_after, frame, compare, download],
        )
        frame.input(show_frame, inputs=[job, frame], outputs=[before_after], trigger_mode="always_last")
    return page


def serve(settings: AppSettings, gr: ModuleType | None = None) -> None:
    """Serve the page on ``settings.host:settings.port`` until Ctrl-C; runs are queued one at a time.

    Raises:
        ConfigError: Gradio is missing, or the port cannot be had.
    """
    gr = gr or import_gradio(settings)
    page = build_page(gr, settings)
    page.queue(default_concurrency_limit=1)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own requests to itself at start-up
    logger.info("cdvd-app: uploads and results go to %s", settings.workdir)
    try:
        page.launch(
            server_name=settings.host,
            server_port=settings.port,
            share=False,
            max_file_size=settings.max_upload_bytes,
            allowed_paths=[str(settings.workdir / "jobs")],
            footer_links=[],
        )
    except OSError as err:  # Gradio's own (no strerror, advice on its launch() arguments), or the socket's
        reason = err.strerror or "the port is taken, or the host is not an address of this machine"
        raise ConfigError(
            f"cannot serve on {settings.host}:{settings.port} ({reason}): pass another port= or host="
        ) from err
