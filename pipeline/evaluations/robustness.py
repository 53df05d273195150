"""Robustness: accuracy under FGSM and PGD at the data set's radii, and one-pixel success rate.

Every run is attacked the same way, so protections can be compared:
FGSM and PGD (random start, step 2.5 * eps / steps) on a fixed sample of
the test set at each of the data set's L-infinity radii (MNIST-like 0.1 and
0.3, CIFAR-10 8/255, in [0, 1] pixel scale), with the true labels; and the
one-pixel attack (Su et al., 2019) on a smaller sample of correctly
classified test images, whose success rate is the share it misclassifies.

Quick runs (digits, or TRAIN_SAMPLES set) get a small budget that costs
seconds; full runs attack 1,000 images and give the one-pixel attack
Su et al.'s population of 400 (see the budgets below).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from pipeline import attacks

log = logging.getLogger(__name__)

SAMPLE_SEED = 0  # the same test sample for every run of a data set


@dataclasses.dataclass(frozen=True)
class RobustnessBudget:
    """How much attacking one evaluation does.

    Attributes:
      samples: test images attacked by FGSM and PGD (fewer if the test set is smaller).
      pgd_steps: PGD's gradient steps; 40 as Madry et al. on MNIST, 20 on CIFAR-10.
      one_pixel_samples: correctly classified test images given to the one-pixel attack.
      one_pixel_population: DE candidates per generation (400 in Su et al.).
      one_pixel_iterations: DE generations at most (100 in Su et al.), >= 1.
    """

    samples: int
    pgd_steps: int
    one_pixel_samples: int
    one_pixel_population: int
    one_pixel_iterations: int


# Smoke-test sizes: figures are comparable between runs of the same budget only.
QUICK_BUDGET = RobustnessBudget(
    samples=500,
    pgd_steps=10,
    one_pixel_samples=10,
    one_pixel_population=40,
    one_pixel_iterations=10,
)
# One-pixel: Su et al.'s population, half their generations and 50 images, because the attack
# costs up to population * generations forward passes per image: 100 images at their full
# 100 generations took about 10 minutes for the MNIST MLP on a loaded 2-core CPU.
MNIST_LIKE_BUDGET = RobustnessBudget(
    samples=1000,
    pgd_steps=40,
    one_pixel_samples=50,
    one_pixel_population=400,
    one_pixel_iterations=50,
)
CIFAR10_BUDGET = RobustnessBudget(
    samples=1000,
    pgd_steps=20,
    one_pixel_samples=50,
    one_pixel_population=400,
    one_pixel_iterations=50,
)


def budget_for(cfg, spec) -> RobustnessBudget:
    if spec.name == "digits" or cfg.train_samples is not None:
        return QUICK_BUDGET
    return MNIST_LIKE_BUDGET if spec.mnist_like else CIFAR10_BUDGET


def predictions(logits_fn, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate(
        [np.argmax(logits_fn(x[i : i + batch_size]), 1) for i in range(0, len(x), batch_size)]
    )


def accuracy(logits_fn, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(predictions(logits_fn, x) == y))


def evaluate(model, splits, cfg, budget: RobustnessBudget | None = None) -> dict:
    """Attacks a fixed test sample; returns the metrics.json["robustness"] entry."""
    import tensorflow as tf

    spec = splits.spec
    budget = budget or budget_for(cfg, spec)
    lo, hi = splits.preprocessing.value_range
    progress = budget != QUICK_BUDGET  # progress bars only where attacks take minutes

    # Eager calls: a tf.function here would be traced again for every model evaluated.
    def logits_fn(x):
        return model(tf.convert_to_tensor(x, tf.float32), training=False).numpy()

    order = np.random.default_rng(SAMPLE_SEED).permutation(len(splits.x_test))
    sample = order[: budget.samples]
    x, y = splits.x_test[sample], splits.y_test[sample]
    result = {
        "clean_accuracy": accuracy(logits_fn, x, y),
        "samples": int(len(x)),
        "attacks": [],
    }

    for eps in attacks.dataset_epsilons(spec):
        for attack, kw in (("fgsm", {}), ("pgd", {"steps": budget.pgd_steps})):
            desc = f"robustness: {attack} at eps {eps:.3g}" if progress else None
            x_adv = attacks.adversarial_examples(
                model, x, y, attack, eps, clip_min=lo, clip_max=hi, desc=desc, **kw
            )
            result["attacks"].append(
                {
                    "attack": attack,
                    "eps": float(eps),
                    "steps": kw.get("steps"),
                    "accuracy": accuracy(logits_fn, x_adv, y),
                }
            )

    # One pixel: on correctly classified images, in the same fixed order.
    # Five times the wanted count leaves enough correct ones for any model worth attacking.
    pool = order[: 5 * budget.one_pixel_samples]
    correct = predictions(logits_fn, splits.x_test[pool]) == splits.y_test[pool]
    chosen = pool[correct][: budget.one_pixel_samples]
    _, success = attacks.one_pixel(
        logits_fn,
        splits.x_test[chosen],
        splits.y_test[chosen],
        max_iterations=budget.one_pixel_iterations,
        population=budget.one_pixel_population,
        seed=SAMPLE_SEED,
        clip_min=lo,
        clip_max=hi,
        desc="robustness: one-pixel attack" if progress else None,
    )
    result["one_pixel"] = {
        "success_rate": float(success.mean()) if len(success) else 0.0,
        "samples": int(len(chosen)),
        "population": budget.one_pixel_population,
        "max_iterations": budget.one_pixel_iterations,
    }
    log.info(
        "robustness: clean %.3f; %s; one-pixel success %.3f on %d images",
        result["clean_accuracy"],
        ", ".join(f"{a['attack']}@{a['eps']:.3g} {a['accuracy']:.3f}" for a in result["attacks"]),
        result["one_pixel"]["success_rate"],
        len(chosen),
    )
    return result
