"""Out-of-distribution images: pictures of another kind, resized to a data set's input shape.

Sources, by the name `--ood-source` takes:
- `fashion_mnist`: Fashion-MNIST clothing (real photographs), read from Debian's
  dataset-fashion-mnist package or Keras' cache; not bundled, so only where installed.
- `letters`: capital letters A-Z rendered from matplotlib's bundled DejaVu fonts,
  randomly rotated, scaled and shifted; needs no download, white on black like MNIST.
- `photos`: random crops of scikit-learn's two bundled sample photographs.
`auto` picks Fashion-MNIST where it is installed (letters when the data set is
Fashion-MNIST itself, or when it is missing).
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline import data
from pipeline.errors import UsageError, choice_error

log = logging.getLogger(__name__)

OOD_SOURCES = ("auto", "fashion_mnist", "letters", "photos")

_LETTER_FONTS = ("DejaVu Sans", "DejaVu Serif", "DejaVu Sans Mono")
_TEMPLATE_PIXELS = 64  # letters are drawn at this size, then transformed and shrunk


def resolve_source(source: str, dataset: str) -> str:
    """The concrete source `auto` stands for on this machine, for `dataset`."""
    if source not in OOD_SOURCES:
        raise choice_error("out-of-distribution source", source, OOD_SOURCES)
    if source != "auto":
        return source
    if dataset != "fashion_mnist" and _fashion_mnist_installed():
        return "fashion_mnist"
    return "letters"


def images(
    source: str, count: int, spec: data.DatasetSpec, seed: int = 0
) -> tuple[np.ndarray, str]:
    """`count` images in [0, 1] shaped like `spec`'s inputs, and a description of their source.

    Args:
      source: one of OOD_SOURCES.
      count: images wanted, >= 0.
      spec: the target data set; its shape (height, width, channels) is matched.
    """
    source = resolve_source(source, spec.name)
    rng = np.random.default_rng(seed)
    if source == "fashion_mnist":
        raw, where = _fashion_mnist_raw()
        pick = rng.choice(len(raw), count, replace=count > len(raw))
        x, described = raw[pick].astype(np.float32) / 255.0, f"fashion_mnist ({where})"
    elif source == "letters":
        x, described = _letters(count, rng), "letters A-Z rendered from DejaVu fonts"
    else:
        x, described = _photo_crops(count, rng), "crops of scikit-learn's sample photographs"
    return _fit_shape(x, spec.image_shape), described


def _fashion_mnist_installed() -> bool:
    return data.DEBIAN_FASHION_MNIST.is_dir() or (data.KERAS_CACHE / "fashion-mnist").is_dir()


def _fashion_mnist_raw() -> tuple[np.ndarray, str]:
    if not _fashion_mnist_installed():
        raise UsageError(
            "OOD_SOURCE=fashion_mnist needs Fashion-MNIST: install Debian's dataset-fashion-mnist "
            "or place it in Keras' cache; or choose OOD_SOURCE=letters"
        )
    raw, where = data.load_raw("fashion_mnist")
    return raw["x_test"], where  # (10000, 28, 28) uint8; the test split suffices


def _fit_shape(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Resizes (N, H, W[, C]) images in [0, 1] to (N, *shape) with area averaging."""
    import tensorflow as tf

    h, w, c = shape
    if x.ndim == 3:
        x = x[..., None]
    if len(x) == 0:
        return np.zeros((0, h, w, c), np.float32)
    x = tf.image.resize(x, (h, w), method="area").numpy()
    if x.shape[-1] != c:
        # Grey to colour repeats the channel; colour to grey takes the luminance.
        x = np.repeat(x, c, -1) if x.shape[-1] == 1 else x @ np.array([[0.299], [0.587], [0.114]])
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def _letter_templates() -> np.ndarray:
    """(26 * fonts, 64, 64) float images of white capital letters on black."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    templates = []
    for family in _LETTER_FONTS:
        for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            fig = Figure(figsize=(1, 1), dpi=_TEMPLATE_PIXELS, facecolor="black")
            fig.text(
                0.5,
                0.5,
                letter,
                color="white",
                family=family,
                size=66,
                weight="bold",
                ha="center",
                va="center",
            )
            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            rgba = np.asarray(canvas.buffer_rgba(), dtype=np.float32)  # (64, 64, 4)
            templates.append(rgba[..., 0] / 255.0)
    return np.stack(templates)


def _letters(count: int, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    templates = _letter_templates()
    out = np.empty((count, _TEMPLATE_PIXELS, _TEMPLATE_PIXELS), np.float32)
    centre = (_TEMPLATE_PIXELS - 1) / 2
    for i in range(count):
        # A random rotation (+-20 degrees), scale (0.8..1.1) and shift, as handwriting varies.
        angle = np.deg2rad(rng.uniform(-20, 20))
        scale = rng.uniform(0.8, 1.1)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
        shift = rng.uniform(-4, 4, size=2)
        offset = centre - rot @ (centre + shift)
        out[i] = ndimage.affine_transform(
            templates[rng.integers(len(templates))], rot, offset=offset, order=1
        )
    return out


def _photo_crops(count: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two (427, 640, 3) uint8 photographs
    size = 96
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        top = rng.integers(photo.shape[0] - size)
        left = rng.integers(photo.shape[1] - size)
        out[i] = photo[top : top + size, left : left + size] / 255.0
    return out
