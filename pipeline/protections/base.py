"""The protection interface, and `none`: plain training with Adam.

A protection changes one or more steps of a run and reports what it did:

  prepare_data  -> filter or extend the training data (anomaly filtering)
  build_model   -> choose the model variant (DP-ready) or wrap it (adversarial train_step)
  compile       -> choose the optimizer and loss (DP-SGD)
  train_dataset -> choose how batches are sampled (Poisson sampling)
  epoch_logs    -> extra per-epoch figures for history.json (epsilon so far)
  after_fit     -> further phases (adversarial retraining)
  metrics       -> final figures for metrics.json
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import TrainConfig
    from pipeline.data import Splits
    from pipeline.train import Trainer


class Protection:
    """No protection: the model trains with Adam on all training data."""

    name = "none"
    dp_ready_model = False
    # The model an empty MODEL selects for this protection; "" follows the data set.
    default_model = ""
    # The optimizer's step size when LEARNING_RATE is not given (Adam's usual default).
    default_learning_rate = 1e-3

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.options = cfg.options

    @property
    def learning_rate(self) -> float:
        return self.cfg.learning_rate or self.default_learning_rate

    # --- configuration ----------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Adds this protection's options; their names match the Makefile variables."""

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> Any:
        """A validated, frozen options object built from parsed arguments."""
        return None

    # --- training steps ---------------------------------------------------

    def prepare_data(self, splits: Splits) -> Splits:
        return splits

    def build_model(self, input_shape, num_classes):
        from pipeline import models

        return models.build(
            self.cfg.model_name, input_shape, num_classes, self.dp_ready_model, self.cfg.seed
        )

    def compile(self, model) -> None:
        import tensorflow as tf

        model.compile(
            optimizer=tf.keras.optimizers.Adam(self.learning_rate),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    def train_dataset(self, splits: Splits):
        from pipeline.data import make_dataset

        return make_dataset(
            splits.x_train, splits.y_train, self.cfg.batch_size, shuffle=True, seed=self.cfg.seed
        )

    def epoch_logs(self, epoch: int, model) -> dict:
        """Extra figures recorded in history.json after `epoch` (0-based)."""
        return {}

    def after_fit(self, trainer: Trainer, model):
        """Runs further training phases; returns the model to deploy."""
        return model

    def metrics(self) -> dict:
        """Figures this protection adds to metrics.json."""
        return {}


PROTECTION = Protection
