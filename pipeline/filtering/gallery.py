"""A grid picture of dropped training records, with their labels and scores."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_IMAGES = 64
COLUMNS = 8
TILE_PIXELS = 56  # small images are enlarged (nearest neighbour) to at least this size
CAPTION_PIXELS = 14
GAP_PIXELS = 4


def mosaic(images: np.ndarray, columns: int = COLUMNS) -> tuple[np.ndarray, int]:
    """(H, W, 3) picture of images (N, h, w, c) in [0, 1] tiled in rows, and the tile size.

    Each tile sits below a blank band for its caption; empty cells stay white.
    """
    n, h, w, _ = images.shape
    zoom = max(1, math.ceil(TILE_PIXELS / max(h, w)))
    tile = np.repeat(np.repeat(images, zoom, 1), zoom, 2)  # (N, h*zoom, w*zoom, c)
    if tile.shape[-1] == 1:
        tile = np.repeat(tile, 3, -1)
    th, tw = tile.shape[1:3]
    cell_h, cell_w = th + CAPTION_PIXELS + GAP_PIXELS, tw + GAP_PIXELS
    rows = max(1, math.ceil(n / columns))
    canvas = np.ones((rows * cell_h, columns * cell_w, 3), np.float32)
    for i in range(n):
        top = (i // columns) * cell_h + CAPTION_PIXELS
        left = (i % columns) * cell_w
        canvas[top : top + th, left : left + tw] = np.clip(tile[i], 0, 1)
    return canvas, max(th, tw)


def save_grid(
    path: str | os.PathLike,
    images: np.ndarray,
    labels: np.ndarray,
    record_scores: np.ndarray,
    planted: np.ndarray,
    class_names: Sequence[str],
    title: str = "",
) -> int:
    """Writes a PNG of up to MAX_IMAGES records, in the order given; returns how many it shows.

    Args:
      images: (N, H, W, C) in [0, 1]; grey when C is 1.
      planted: (N,) bool; planted records' captions are red, clean ones black.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = min(len(images), MAX_IMAGES)
    columns = max(1, min(COLUMNS, shown))
    # Nothing removed still gives a picture (one blank tile), so the file always exists.
    blank = np.ones((1, *images.shape[1:]), np.float32)
    picture, tile = mosaic(np.asarray(images[:shown], np.float32) if shown else blank, columns)
    dpi = 100
    height, width = picture.shape[:2]
    fig = Figure(figsize=(width / dpi, (height + 24) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)  # the Agg canvas renders to files only, without a display
    ax = fig.add_axes((0, 0, 1, height / (height + 24)))
    ax.imshow(picture, interpolation="nearest")
    ax.axis("off")
    cell_h, cell_w = tile + CAPTION_PIXELS + GAP_PIXELS, tile + GAP_PIXELS
    for i in range(shown):
        ax.text(
            (i % columns) * cell_w + tile / 2,
            (i // columns) * cell_h + CAPTION_PIXELS - 3,
            f"{class_names[int(labels[i])]} {record_scores[i]:.2f}"[:18],
            ha="center",
            fontsize=6.5,
            color="red" if planted[i] else "black",
        )
    fig.text(0.5, 1 - 4 / (height + 24), title or " ", ha="center", va="top", fontsize=8)

    # Rename into place, so a reader never sees half a file.
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, format="png", dpi=dpi)
    os.replace(tmp, path)
    return shown
