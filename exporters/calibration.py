"""Representative data for int8 quantisation: which images fix the activation ranges.

Full-integer quantisation (TFLite int8, the Edge TPU, TensorRT INT8) runs the
float model on a few hundred representative images and records each tensor's
range. By default these are training images, the data the model was fitted to.
For a differentially private model that matters: the ranges are computed from
training images outside DP-SGD, so they are not covered by its (epsilon,
delta) guarantee. `calibration="test"` or an .npz of public images avoids that.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from exporters.source import Source
from pipeline.errors import UsageError

log = logging.getLogger(__name__)

SOURCES = ("train", "test")
DEFAULT_SAMPLES = 300


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Preprocessed representative images and where they came from (for the manifest)."""

    x: np.ndarray  # (samples, *input_shape), float32
    source: str  # "train", "test" or the path of an .npz

    def describe(self) -> dict:
        return {"source": self.source, "samples": int(len(self.x))}


def check_source(calibration: str) -> None:
    """Accepts "train", "test" or an existing .npz file of raw images."""
    if calibration in SOURCES:
        return
    path = Path(calibration)
    if path.suffix != ".npz" or not path.is_file():
        raise UsageError(
            f"unknown calibration {calibration!r}; choose train, test or an existing .npz "
            "file of raw public images (key x or x_train)"
        )


def representative(source: Source, calibration: str, samples: int, seed: int = 0) -> Calibration:
    """Draws `samples` representative images (a seeded random subset) for `source`'s model.

    Args:
      calibration: "train" (the run's training split), "test" (its test split) or an
        .npz file of raw images shaped like the data set's (key "x" or "x_train").
      samples: how many images, >= 1 (a few hundred fix the ranges well).
    """
    check_source(calibration)
    if samples < 1:
        raise UsageError(f"Expected calibration_samples >= 1, got calibration_samples={samples}")
    key = ("calibration", calibration, samples, seed)
    if key in source.cache:
        return source.cache[key]

    if calibration == "train":
        pool = source.splits.x_train
        log.info(
            "calibration reads %d training images of %s",
            min(samples, len(pool)),
            source.dataset,
        )
        if source.is_dp:
            log.warning(
                "%s is differentially private, but int8 calibration reads its training images "
                "outside DP-SGD: the quantisation ranges are not covered by its guarantee; "
                "use --calibration test or an .npz of public images",
                source.name,
            )
    elif calibration == "test":
        pool = source.splits.x_test
        log.info("calibration reads %d test images of %s", min(samples, len(pool)), source.dataset)
    else:
        pool = source.preprocessing(_raw_images(Path(calibration), source.input_shape))
        log.info("calibration reads %d images from %s", min(samples, len(pool)), calibration)

    order = np.random.default_rng(seed).permutation(len(pool))[:samples]
    result = Calibration(np.ascontiguousarray(pool[order], dtype=np.float32), calibration)
    source.cache[key] = result
    return result


def _raw_images(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path) as npz:
            name = next((k for k in ("x", "x_train") if k in npz.files), None)
            if name is None:
                raise UsageError(
                    f"{path} holds {npz.files}; it needs raw images under x or x_train"
                )
            raw = npz[name]
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable .npz file ({exc})") from None
    if raw.ndim < 2 or int(np.prod(raw.shape[1:])) != int(np.prod(input_shape)):
        raise UsageError(
            f"{path} holds images shaped {raw.shape[1:]}; the model takes {input_shape}"
        )
    return raw
