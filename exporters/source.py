"""The trained run an export starts from: its Keras model, data, preprocessing and settings.

A run folder (runs/<dataset>-<prot>/, written by pipeline.train) holds
model.keras, config.json, preprocessing.json and metrics.json. Everything an
exporter derives from the run and may need twice (the Keras model's test
predictions, adversarial examples, the int8 TFLite model that both
`tflite-int8` and `edgetpu` ship) is computed once per process and kept here.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import data, runs
from pipeline.errors import UsageError

log = logging.getLogger(__name__)

PREDICT_BATCH_SIZE = 256


@dataclasses.dataclass
class Source:
    """A trained model with the data it was trained and tested on.

    Attributes:
      name: the run's name (its folder name), used for exports/<name>/.
      run_dir: the run folder, or None for a model built in memory (tests).
      dataset, prot, model_name: what the run trained.
      preprocessing: raw pixels to model input, as recorded by the run.
      model: the Keras model (outputs logits).
      splits: the run's data splits, preprocessed.
      metrics: the run's metrics.json ({} for an in-memory model).
    """

    name: str
    run_dir: Path | None
    dataset: str
    prot: str
    model_name: str
    preprocessing: data.Preprocessing
    model: Any
    splits: data.Splits
    metrics: dict = dataclasses.field(default_factory=dict)
    cache: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def spec(self) -> data.DatasetSpec:
        return self.splits.spec

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape, NHWC without the batch axis."""
        return tuple(self.preprocessing.input_shape)

    @property
    def is_dp(self) -> bool:
        """Whether the run claims a differential-privacy guarantee."""
        return self.prot.startswith("dp") or "epsilon" in self.metrics.get("protection", {})

    def source_description(self) -> dict:
        """The manifest's "source" entry."""
        return {
            "run": self.name,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "dataset": self.dataset,
            "prot": self.prot,
            "model": self.model_name,
            "test_accuracy": self.metrics.get("test_accuracy"),
            "protection": self.metrics.get("protection", {}),
        }

    def keras_logits(self, x: np.ndarray) -> np.ndarray:
        """The Keras model's logits for preprocessed inputs, in batches."""
        return np.asarray(self.model.predict(x, batch_size=PREDICT_BATCH_SIZE, verbose=0))

    def keras_test_predictions(self) -> np.ndarray:
        """The Keras model's top-1 classes on the whole test split (computed once)."""
        if "keras_test_top1" not in self.cache:
            top1 = np.argmax(self.keras_logits(self.splits.x_test), axis=1)
            self.cache["keras_test_top1"] = top1
            self._check_reported_accuracy(float(np.mean(top1 == self.splits.y_test)))
        return self.cache["keras_test_top1"]

    def _check_reported_accuracy(self, accuracy: float) -> None:
        # A different accuracy than training reported means other test data or another model.
        reported = self.metrics.get("test_accuracy")
        if reported is not None and abs(reported - accuracy) > 1e-4:
            log.warning(
                "%s: the Keras model scores %.4f on the test data loaded here, but its run "
                "reported %.4f: the data (DATA_DIR) differs from the training machine's",
                self.name,
                accuracy,
                reported,
            )


def load(run_dir: str | Path, data_dir: str | None = None) -> Source:
    """Loads a finished run folder; a missing or unfinished run is a UsageError.

    Args:
      run_dir: the run folder (runs/<name>).
      data_dir: where the data set lies on this machine; None uses the run's own setting.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(
            f"run folder {run_dir} does not exist; train it first ('make train DATASET=.. "
            "PROT=..') or name an existing one with RUN=runs/<name>"
        )
    model_path = run_dir / runs.MODEL_FILE
    for needed in (runs.CONFIG_FILE, runs.PREPROCESSING_FILE, runs.MODEL_FILE):
        if not (run_dir / needed).is_file():
            raise UsageError(
                f"{run_dir} has no trained model ({needed} is missing): the run has not "
                "finished; start the same 'make train' command again to complete it"
            )
    config = runs.read_json(run_dir / runs.CONFIG_FILE)
    preprocessing = data.Preprocessing.from_dict(runs.read_json(run_dir / runs.PREPROCESSING_FILE))
    metrics_path = run_dir / runs.METRICS_FILE
    metrics = runs.read_json(metrics_path) if metrics_path.is_file() else {}
    if not metrics:
        log.warning("%s has no %s; the run may be unfinished", run_dir, runs.METRICS_FILE)

    splits = data.load(
        config["dataset"],
        data_dir if data_dir is not None else config.get("data_dir"),
        config.get("val_fraction", 0.1),
        config.get("seed", 0),
        config.get("train_samples"),
    )
    if splits.preprocessing != preprocessing:
        raise UsageError(
            f"{run_dir}/{runs.PREPROCESSING_FILE} ({preprocessing}) differs from the data "
            f"loader's ({splits.preprocessing}); retrain the run with this version"
        )

    import tensorflow as tf

    try:
        model = tf.keras.models.load_model(model_path, compile=False)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"{model_path} cannot be loaded ({str(exc).splitlines()[0]}); train the run again"
        ) from None
    return Source(
        name=run_dir.name,
        run_dir=run_dir,
        dataset=config["dataset"],
        prot=config.get("prot", "none"),
        model_name=config.get("model") or splits.spec.default_model,
        preprocessing=preprocessing,
        model=model,
        splits=splits,
        metrics=metrics,
    )
