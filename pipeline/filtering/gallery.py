"""A grid picture of dropped training records, with their labels and scores."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_IMAGES = 64


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
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = min(len(images), MAX_IMAGES)
    cols = max(1, min(8, shown))
    rows = max(1, math.ceil(shown / cols))
    fig = Figure(figsize=(1.3 * cols, 1.5 * rows + 0.4))
    FigureCanvasAgg(fig)
    for i in range(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        image = images[i]
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(np.clip(image, 0, 1))
        ax.set_title(
            f"{class_names[int(labels[i])]} {record_scores[i]:.2f}",
            fontsize=7,
            color="red" if planted[i] else "black",
        )
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()

    # Rename into place, so a reader never sees half a file.
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return shown
