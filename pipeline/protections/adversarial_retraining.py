"""PROT=adv-retrain: train normally, then retrain on clean and adversarial training data.

After the "train" phase, adversarial versions of a share `adv_ratio` of the
training set are crafted against the trained model (the attack, radius and
PGD settings of PROT=adv), and a "retrain" phase continues training on the
union of clean and adversarial examples. Both phases are in history.json;
the deployed model is the retraining phase's best epoch.

Unlike PROT=adv, the adversarial examples are crafted once, against the
first model: the retrained model is robust to them, and less so to examples
crafted against itself, which the robustness evaluation measures.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from pipeline import attacks, data
from pipeline.protections.adversarial import (
    AdversarialOptions,
    RobustnessLog,
    add_shared_arguments,
    epoch_robust_accuracy,
    options_from_args,
)
from pipeline.protections.base import Protection

log = logging.getLogger(__name__)

RETRAIN_PHASE = "retrain"


def default_retrain_epochs(epochs: int) -> int:
    """A fifth of the training epochs, at least 1: the retraining set is twice as large."""
    return max(1, math.ceil(epochs / 5))


class AdversarialRetraining(Protection):
    """Plain training, then retraining on clean plus crafted adversarial examples."""

    name = "adv-retrain"

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.options is None:
            self.options = AdversarialOptions.for_dataset(cfg.dataset)
        self._robustness = RobustnessLog()
        self._splits = None
        self._crafted = 0
        self._crafting_seconds = 0.0

    @classmethod
    def add_arguments(cls, parser) -> None:
        add_shared_arguments(parser)
        parser.add_argument(
            "--retrain-epochs",
            type=int,
            default=None,
            help="epochs of the retraining phase (default: a fifth of EPOCHS, at least 1)",
        )

    @classmethod
    def options_from_args(cls, args) -> AdversarialOptions:
        return options_from_args(args)

    @property
    def retrain_epochs(self) -> int:
        given = self.options.retrain_epochs
        return given if given is not None else default_retrain_epochs(self.cfg.epochs)

    def prepare_data(self, splits):
        self._splits = splits
        return splits

    def epoch_logs(self, epoch: int, model) -> dict:
        return self._robustness.record(epoch_robust_accuracy(model, self._splits, self.options))

    def after_fit(self, trainer, model):
        splits, opts = trainer.splits, self.options
        n = max(1, int(round(opts.adv_ratio * len(splits.x_train))))
        # A seeded choice, so a resumed run crafts from the same examples.
        chosen = np.sort(np.random.default_rng(self.cfg.seed).permutation(len(splits.x_train))[:n])
        lo, hi = splits.preprocessing.value_range

        start = time.perf_counter()
        x_adv = attacks.adversarial_examples(
            model,
            splits.x_train[chosen],
            splits.y_train[chosen],
            opts.attack,
            opts.adv_eps,
            clip_min=lo,
            clip_max=hi,
            desc=f"crafting {opts.attack} examples",
            **opts.attack_kwargs(),
        )
        self._crafting_seconds = time.perf_counter() - start
        self._crafted = n
        log.info(
            "crafted %d %s examples at eps %.4g against the trained model in %.1f s",
            n,
            opts.attack,
            opts.adv_eps,
            self._crafting_seconds,
        )

        x = np.concatenate([splits.x_train, x_adv])
        y = np.concatenate([splits.y_train, splits.y_train[chosen]])
        train_ds = data.make_dataset(x, y, self.cfg.batch_size, shuffle=True, seed=self.cfg.seed)
        return trainer.fit_phase(model, RETRAIN_PHASE, self.retrain_epochs, train_ds)

    def metrics(self) -> dict:
        return {
            **self.options.describe(),
            "retrain_epochs": self.retrain_epochs,
            "adversarial_examples": self._crafted,
            "crafting_seconds": round(self._crafting_seconds, 3),
        }


PROTECTION = AdversarialRetraining
