"""Plants critical inputs in a training set, so that a data filter can be scored against them.

A seeded `rate` share of the training records is replaced in place (the set
keeps its size, and each planted record stands where a clean one stood):
- `adversarial`: PGD examples (L-inf eps ADVERSARIAL_EPS) against a briefly trained
  surrogate of the same architecture, with their true labels;
- `label-flip`: the image unchanged, the label replaced by a random other class;
- `noise`: the image with Gaussian noise of standard deviation NOISE_STD, true label;
- `out-of-distribution`: an image of another kind (pipeline.ood), random label.
Planted images are rounded to the data set's raw pixel grid, as they would be
stored, so the quantisation itself gives nothing away.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from pipeline import attacks, ood, surrogate
from pipeline.data import Splits
from pipeline.errors import UsageError, choice_error

log = logging.getLogger(__name__)

INJECT_KINDS = ("none", "adversarial", "label-flip", "noise", "out-of-distribution")
MAX_INJECT_RATE = 0.5
ADVERSARIAL_EPS = 0.1  # of the [0, 1] input range
ADVERSARIAL_STEPS = 10
NOISE_STD = 0.3  # of the [0, 1] input range


@dataclasses.dataclass(frozen=True)
class Injection:
    """What was planted: positions in the training set, and how."""

    kind: str
    rate: float
    indices: np.ndarray  # sorted positions in x_train of the planted records
    source: str  # what the planted records are made of
    seconds: float

    @property
    def count(self) -> int:
        return int(len(self.indices))

    def to_dict(self) -> dict:
        return {
            "inject": self.kind,
            "inject_rate": self.rate,
            "injected_count": self.count,
            "inject_source": self.source,
            "inject_seconds": round(self.seconds, 3),
        }


def check(kind: str, rate: float) -> None:
    """Validates an injection request: a known kind, and 0 < rate <= 0.5 unless kind is none."""
    if kind not in INJECT_KINDS:
        raise choice_error("inject kind", kind, INJECT_KINDS)
    if kind == "none":
        if rate != 0:
            raise UsageError(
                f"INJECT_RATE={rate} needs INJECT=<kind>; choose one of: "
                f"{', '.join(INJECT_KINDS[1:])}"
            )
    elif not 0 < rate <= MAX_INJECT_RATE:
        raise UsageError(f"Expected 0 < inject_rate <= {MAX_INJECT_RATE}, got inject_rate={rate}")


def inject(
    splits: Splits,
    kind: str,
    rate: float,
    seed: int = 0,
    model_name: str = "mlp",
    surrogate_epochs: int = 2,
    ood_source: str = "auto",
) -> tuple[Splits, Injection]:
    """Replaces round(rate * n) seeded training records by critical inputs of `kind`.

    Args:
      kind: one of INJECT_KINDS; "none" returns the splits unchanged.
      rate: share of the training set to plant, in (0, 0.5].
      model_name: the surrogate's architecture for `adversarial`.
      surrogate_epochs: its training epochs, >= 1.
      ood_source: one of pipeline.ood.OOD_SOURCES for `out-of-distribution`.
    """
    check(kind, rate)
    start = time.perf_counter()
    if kind == "none":
        return splits, Injection(kind, 0.0, np.zeros(0, np.int64), "", 0.0)

    rng = np.random.default_rng([seed, INJECT_KINDS.index(kind)])
    n = len(splits.x_train)
    count = int(round(rate * n))
    indices = np.sort(rng.choice(n, count, replace=False))
    x, y = splits.x_train.copy(), splits.y_train.copy()
    num_classes = splits.spec.num_classes

    if kind == "adversarial":
        # The attacker's surrogate sees the clean training set, as a model trained on it would.
        model = surrogate.train_brief(
            splits.x_train, splits.y_train, model_name, num_classes, surrogate_epochs, seed
        )
        x[indices] = attacks.adversarial_examples(
            model, x[indices], y[indices], "pgd", ADVERSARIAL_EPS, steps=ADVERSARIAL_STEPS
        )
        source = (
            f"PGD eps {ADVERSARIAL_EPS}, {ADVERSARIAL_STEPS} steps, against a {model_name} "
            f"trained {surrogate_epochs} epochs"
        )
    elif kind == "label-flip":
        # A random other class: adding 1..K-1 modulo K never returns the true label.
        y[indices] = (y[indices] + rng.integers(1, num_classes, count)) % num_classes
        source = "uniformly random other class"
    elif kind == "noise":
        x[indices] = x[indices] + rng.normal(0.0, NOISE_STD, x[indices].shape).astype(np.float32)
        source = f"Gaussian noise, std {NOISE_STD}"
    else:
        x[indices], source = ood.images(ood_source, count, splits.spec, seed)
        y[indices] = rng.integers(0, num_classes, count)

    x[indices] = _to_raw_grid(x[indices], splits)
    seconds = time.perf_counter() - start
    log.info(
        "injected %d %s records (%.1f%%, %s), %.1f s", count, kind, 100 * rate, source, seconds
    )
    return splits.replace(x_train=x, y_train=y), Injection(kind, rate, indices, source, seconds)


def _to_raw_grid(x: np.ndarray, splits: Splits) -> np.ndarray:
    low, high = splits.preprocessing.value_range
    scale = np.float32(splits.preprocessing.scale)
    return (np.round(np.clip(x, low, high) / scale) * scale).astype(np.float32)
