"""``cdvd-export``: the network to ONNX and OpenVINO IR for deployment, each file checked against torch
(:mod:`cdvd.export`).

    cdvd-export checkpoint=pretrained/CDVD_TSP_GOPRO.pt output=exported/
    cdvd-export checkpoint=model.ckpt formats=[onnx] parts=[stage,flow,reconstruction]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from cdvd.atomic import atomic_destination
from cdvd.checkpoints import load_model
from cdvd.cli.common import CONFIG_PATH, check_writable_place, run_cli, run_hydra
from cdvd.config_checks import check_count, check_positive_number
from cdvd.data.sources import check_apart, special_kind
from cdvd.errors import ConfigError
from cdvd.export import PARTS, export_onnx, export_openvino, verify_export

logger = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}
CHECK_REPORT = "export_check.json"
"""Each exported file's agreement to torch, written beside them."""


def _plan(cfg: DictConfig) -> tuple[Path, list[tuple[str, str, Path]]]:
    """The exports asked for: ``(format, part, path)``, all checked before the model is loaded."""
    if not cfg.checkpoint:
        raise ConfigError("no checkpoint given: pass checkpoint=PATH (an original .pt or a cdvd .ckpt)")
    if not Path(cfg.checkpoint).is_file():
        raise ConfigError(f"checkpoint not found: {cfg.checkpoint} (pass checkpoint=PATH of an existing file)")
    formats, parts = list(cfg.formats), list(cfg.parts)
    for name in formats:
        if name not in FORMATS:
            raise ConfigError(f"formats: {name} is not one of {', '.join(FORMATS)}")
    for part in parts:
        if part not in PARTS:
            raise ConfigError(f"parts: {part} is not one of {', '.join(PARTS)}")
    check_positive_number("tolerance", cfg.tolerance)
    sides = [check_count("check_size", side, 4) for side in cfg.check_size]
    if len(sides) != 2 or any(side % 4 for side in sides):
        raise ConfigError(f"check_size={list(cfg.check_size)}: expected [H, W], multiples of 4 (e.g. [72, 100])")
    output = Path(cfg.output)
    jobs = [(name, part, output / f"{part}{FORMATS[name]}") for name in formats for part in parts]
    check_destination(output, written_files(output, jobs), checkpoint=Path(cfg.checkpoint), overwrite=cfg.overwrite)
    return output, jobs


def written_files(output: Path, jobs: list[tuple[str, str, Path]]) -> list[Path]:
    """Every file an export writes: each exported file (an OpenVINO ``.xml`` with its ``.bin``) and the report."""
    files = [path for _, _, path in jobs]
    files += [path.with_suffix(".bin") for name, _, path in jobs if name == "openvino"]
    return [*files, output / CHECK_REPORT]


def check_destination(output: Path, files: list[Path], *, checkpoint: Path, overwrite: bool) -> None:
    """Before the model loads: ``output`` is a folder (or can be made) that takes files, none of ``files`` is a
    folder, a FIFO or a device or the checkpoint itself, and none exists unless ``overwrite`` (the files of an
    earlier export are replaced only when asked, as anything else there).

    Raises:
        ConfigError: naming ``output`` and the path in the way.
    """
    if (output.exists() or output.is_symlink()) and not output.is_dir():
        kind = special_kind(output) or "a file"
        raise ConfigError(f"output={output} is {kind}: the exported files go into a folder; pass output=DIR")
    check_writable_place(output, "output")
    for path in files:
        check_apart({"output": path}, {"checkpoint": checkpoint})
        kind = "a folder" if path.is_dir() else special_kind(path)
        if kind is not None:
            raise ConfigError(
                f"output={output}: {path} is {kind}, where the export writes a file; pass another output="
            )
    existing = [str(path) for path in files if path.exists() or path.is_symlink()]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(f"{', '.join(existing)} {verb}: pass overwrite=true to replace, or another output=")


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Export every (format, part) asked for and check each file against torch at ``check_size``.

    Raises:
        ConfigError: a bad setting, a missing extra, or an exported file whose output differs from torch's by more
            than ``tolerance``.
    """
    output, jobs = _plan(cfg)
    model = load_model(cfg.checkpoint, "cpu", corr_backend="torch").eval()
    size = tuple(int(s) for s in cfg.check_size)
    checks = []
    for name, part, path in jobs:
        try:
            if name == "onnx":
                export_onnx(model, path, part=part)
            else:
                export_openvino(model, path, part=part)
            check = verify_export(model, path, part=part, size=size)
        except ImportError as err:
            raise ConfigError(f"formats={name} needs the optional extra: pip install 'cdvd[export]' ({err})") from err
        logger.info("%s: max abs difference to torch %.2e, PSNR %.1f dB", path, check.max_abs_diff, check.psnr)
        if not check.max_abs_diff <= float(cfg.tolerance):
            raise ConfigError(
                f"{path} differs from torch by {check.max_abs_diff:.2e} (tolerance={cfg.tolerance}): not trusted"
            )
        checks.append(check.as_dict())
    report = {"checkpoint": str(cfg.checkpoint), "settings": OmegaConf.to_container(cfg), "checks": checks}
    with atomic_destination(output / CHECK_REPORT) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
def _main(cfg: DictConfig) -> None:
    report = run_cli(run_export, cfg, "cdvd-export")
    logger.info("%d exported file(s) checked against torch: %s", len(report["checks"]), cfg.output)


def main() -> None:
    """The console script: Hydra's command line (non-ASCII values quoted, its errors as one line: run_hydra)."""
    run_hydra(_main, "cdvd-export")


if __name__ == "__main__":
    main()
