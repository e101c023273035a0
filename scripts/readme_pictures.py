"""Make the README's opening picture from the real blurry footage the project ships (``tests/fixtures/real/``).

    python scripts/readme_pictures.py --checkpoint pretrained/CDVD_TSP_DVD_Convergent.pt
    python scripts/readme_pictures.py --checkpoint outputs/demo/RUN/checkpoints/last.ckpt \\
        --caption "demo network, 80 steps on synthetic data"

Each clip is deblurred whole through ``cdvd.deblur`` (the pipeline of ``cdvd-deblur``) on the CPU in fp32, and its
middle frame is pictured as blurry | deblurred (``cdvd.evaluation.pictures.labelled_strip``), one row per clip,
enlarged ``--scale`` times (nearest neighbour) for the page. There is no ground truth for real footage: each panel is
labelled with a no-reference sharpness, the variance of the Laplacian of its grey levels at the original size
(higher: more edge contrast; noise raises it too). The caption names the weights; the command and what it used are
printed, for the README.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

import cdvd
from cdvd.data.io import list_frames, read_rgb, write_rgb
from cdvd.evaluation.pictures import labelled_strip

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "fixtures" / "real"
CLIPS = [REAL / "smartphone_shake" / "VID_20150409_162802", REAL / "adobe240_blur"]
SEPARATOR = 4


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey levels of a uint8 RGB image (no reference needed)."""
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def clip_name(clip: Path) -> str:
    """A shipped clip's name (its folder under ``tests/fixtures/real``), or the folder's name."""
    return clip.relative_to(REAL).parts[0] if clip.is_relative_to(REAL) else clip.name


def clip_row(clip: Path, checkpoint: Path, work: Path, scale: int) -> tuple[np.ndarray, str]:
    """Deblur ``clip`` (a folder of frames) and picture its middle frame: the strip and a line saying what it is."""
    output = work / clip.name
    cdvd.deblur(clip, output, checkpoint, device="cpu", precision="fp32", progress=False)
    frames = list_frames(clip)
    middle = frames[len(frames) // 2]
    blurry = read_rgb(middle)
    deblurred = read_rgb(output / clip.name / f"{middle.stem}.png")
    before, after = sharpness(blurry), sharpness(deblurred)
    panels = [
        (f"blurry ({clip_name(clip)})\nsharpness {before:.1f}", enlarge(blurry, scale)),
        (f"deblurred\nsharpness {after:.1f}", enlarge(deblurred, scale)),
    ]
    line = f"{middle.relative_to(ROOT)} ({len(frames)} frames deblurred): sharpness {before:.1f} -> {after:.1f}"
    return labelled_strip(panels, separator=SEPARATOR), line


def stack(rows: list[np.ndarray], caption: str) -> np.ndarray:
    """The rows one under the other (narrower ones padded), 4 black pixels apart, over a band holding ``caption``."""
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, SEPARATOR), (0, width - row.shape[1]), (0, 0))) for row in rows]
    band = labelled_strip([(caption, np.zeros((0, width, 3), np.uint8))])  # the band alone: the caption
    return np.concatenate([*padded, band])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the weights (.pt or .ckpt); nothing is fetched")
    parser.add_argument("--clip", type=Path, action="append", help="a folder of frames (repeatable; default: both)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "images" / "before_after.png")
    parser.add_argument("--scale", type=int, default=3, help="enlargement for the page (nearest neighbour)")
    parser.add_argument("--caption", help="the line under the picture (default: the checkpoint's name)")
    args = parser.parse_args()
    if not args.checkpoint.is_file():
        parser.error(f"--checkpoint {args.checkpoint}: no such file")
    if args.scale < 1:
        parser.error(f"--scale {args.scale}: must be 1 or more")
    clips = args.clip or CLIPS
    for clip in clips:
        if not clip.is_dir() or not list_frames(clip):
            parser.error(f"--clip {clip}: not a folder of frames")
    caption = args.caption or f"weights: {args.checkpoint.name}"

    rows, lines = [], []
    with tempfile.TemporaryDirectory() as work:
        for clip in clips:
            row, line = clip_row(clip.resolve(), args.checkpoint, Path(work), args.scale)
            rows.append(row)
            lines.append(line)
    write_rgb(args.output, stack(rows, caption))
    print(f"$ python {shlex.join(sys.argv)}")  # noqa: T201 - the provenance, for the README
    print(f"weights: {args.checkpoint} (sha256 {sha256(args.checkpoint)}), cdvd {cdvd.__version__}, cpu fp32")  # noqa: T201
    print("\n".join(lines))  # noqa: T201
    print(f"wrote {args.output}")  # noqa: T201


if __name__ == "__main__":
    main()
