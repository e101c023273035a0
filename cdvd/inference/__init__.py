"""Deblurring whole videos: the engine, tiling, sinks, the runner and the settings of the command lines.

- :mod:`cdvd.inference.engine`: :class:`VideoDeblurrer`, the network over a video (streaming or per window);
- :mod:`cdvd.inference.tiling`: overlapping tiles for frames too large for memory;
- :mod:`cdvd.inference.sinks`: PNG folders and video files behind one protocol;
- :mod:`cdvd.inference.runner`: :func:`deblur_videos`, every video of an input into its sink, resumable;
- :mod:`cdvd.inference.settings`: the checked settings of ``cdvd-deblur``/``cdvd-eval`` and the engine they build.
"""

from cdvd.inference.engine import VideoDeblurrer, extended_positions
from cdvd.inference.runner import VideoReport, deblur_videos
from cdvd.inference.tiling import TileSpec, tile_regions, tile_weights

__all__ = [
    "TileSpec",
    "VideoDeblurrer",
    "VideoReport",
    "deblur_videos",
    "extended_positions",
    "tile_regions",
    "tile_weights",
]
