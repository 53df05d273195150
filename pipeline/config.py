"""Training configuration: one frozen dataclass that validates itself.

The command line (`--batch-size`) and the Makefile (`BATCH_SIZE=`) use the
same names as the fields (`batch_size`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError, choice_error

STRATEGIES = ("default", "mirrored", "multiworker")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What to train and how.

    Attributes:
      dataset: one of pipeline.data.DATASETS.
      prot: one of pipeline.protections.PROTECTIONS ("none" trains unprotected).
      model: one of pipeline.models.MODELS; empty picks the protection's model if it has one
        (he_mlp for PROT=he), else the data set's default (cnn for cifar10).
      epochs: full passes over the training split, >= 1 (50 in the reference experiments).
      batch_size: examples per step, >= 1.
      learning_rate: > 0; None uses the protection's default (Adam's 1e-3; SGD's 0.5 under DP).
      seed: seeds the split, the initial weights and the shuffling.
      data_dir: a local .npz file or folder; None uses Keras' cache.
      out: the folder that holds run folders.
      run_name: the run folder's name; empty means "<dataset>-<prot>".
      val_fraction: share of the training data held out for choosing the best epoch, in (0, 0.5].
      train_samples: use only this many training examples (for quick runs); None uses all.
      strategy: "default", "mirrored" (several GPUs, or logical CPUs) or "multiworker".
      replicas: logical CPU devices that "mirrored" creates on a host without GPUs, >= 2.
      device: a label for the training device; empty detects it.
      evaluations: post-training evaluations to run ("all", "none" or names).
      options: the protection's own settings, validated by the protection.
    """

    dataset: str = "digits"
    prot: str = "none"
    model: str = ""
    epochs: int = 50
    batch_size: int = 128
    learning_rate: float | None = None
    seed: int = 0
    data_dir: str | None = None
    out: str = "runs"
    run_name: str = ""
    val_fraction: float = 0.1
    train_samples: int | None = None
    strategy: str = "default"
    replicas: int = 2
    device: str = ""
    evaluations: tuple[str, ...] = ("all",)
    options: Any = None

    def __post_init__(self):
        from pipeline import data, models, protections

        data.get_spec(self.dataset)
        if self.prot not in protections.PROTECTIONS:
            raise choice_error("protection", self.prot, list(protections.PROTECTIONS))
        if self.model and self.model not in models.MODELS:
            raise choice_error("model", self.model, models.MODELS)
        if self.strategy not in STRATEGIES:
            raise choice_error("strategy", self.strategy, STRATEGIES)
        _positive("epochs", self.epochs)
        _positive("batch_size", self.batch_size)
        if self.learning_rate is not None:
            _positive("learning_rate", self.learning_rate)
        _positive("replicas", self.replicas)
        if self.train_samples is not None:
            _positive("train_samples", self.train_samples)
        if not 0 < self.val_fraction <= 0.5:
            raise UsageError(
                f"Expected 0 < val_fraction <= 0.5, got val_fraction={self.val_fraction}"
            )
        if self.seed < 0:
            raise UsageError(f"Expected seed >= 0, got seed={self.seed}")
        if self.data_dir is not None and not Path(self.data_dir).exists():
            raise UsageError(
                f"DATA_DIR {self.data_dir} does not exist; point it at an .npz file or a folder"
            )

    @property
    def model_name(self) -> str:
        from pipeline import data, protections

        return (
            self.model
            or protections.get(self.prot).default_model
            or data.get_spec(self.dataset).default_model
        )

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / (self.run_name or f"{self.dataset}-{self.prot}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model_name
        d["options"] = (
            dataclasses.asdict(self.options)
            if dataclasses.is_dataclass(self.options)
            else self.options
        )
        # As JSON reads it back (tuples become lists), so a saved config compares equal.
        return json.loads(json.dumps(d))


# Fields that may change between a run and its resumption without changing what is trained.
RESUMABLE_CHANGES = ("epochs", "out", "run_name", "device", "evaluations", "strategy", "replicas")


def _positive(name: str, value) -> None:
    if value is None or value <= 0:
        raise UsageError(f"Expected {name} > 0, got {name}={value}")
