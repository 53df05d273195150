"""Evasion attacks on logits, through CleverHans' TF2 implementations.

All attacks take a model (or any callable) that maps a batch of inputs in
[clip_min, clip_max] to logits, never probabilities, and perturb within an
L-infinity ball of radius `eps`, except the one-pixel attack, which changes
one pixel to any value.

- `fgsm`: one signed-gradient step of size eps (Goodfellow et al., 2015).
- `fgsm-rs`: FGSM from a uniformly random start, with a step of 1.25 * eps,
  projected back into the ball (Wong et al., "Fast is better than free", 2020);
  the cheap attack for adversarial training.
- `pgd`: projected gradient descent with a random start (Madry et al., 2018).
- `one_pixel`: differential evolution over one pixel's position and value
  (Su et al., "One pixel attack for fooling deep neural networks", 2019).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from pipeline.errors import UsageError, choice_error, require

ATTACKS = ("fgsm", "fgsm-rs", "pgd")

# L-infinity radii in [0, 1] pixel scale that the literature reports for each kind of data set.
MNIST_LIKE_EPSILONS = (0.1, 0.3)
CIFAR10_EPSILONS = (8 / 255,)

# Wong et al. (2020): a step of 1.25 * eps from a random start avoids FGSM training's
# catastrophic overfitting at MNIST/CIFAR radii while still leaving the ball reachable.
FGSM_RS_STEP_FACTOR = 1.25


@functools.cache
def _cleverhans(name: str):
    return require(f"cleverhans.tf2.attacks.{name}", "cleverhans==4.0.0", "adversarial attacks")


def load_cleverhans() -> None:
    """Imports CleverHans' attacks now: fails early if missing, and keeps imports out of traces."""
    _cleverhans("fast_gradient_method")
    _cleverhans("projected_gradient_descent")


def check_eps(eps: float) -> None:
    if not eps >= 0:
        raise UsageError(f"Expected eps >= 0, got eps={eps}")


def check_attack(attack: str) -> None:
    if attack not in ATTACKS:
        raise choice_error("attack", attack, ATTACKS)


def check_pgd(eps: float, steps: int, step_size: float | None) -> None:
    """Refuses PGD settings CleverHans cannot run: steps >= 1, 0 < step_size <= eps."""
    check_eps(eps)
    if steps < 1:
        raise UsageError(f"Expected pgd_steps >= 1, got pgd_steps={steps}")
    if step_size is not None and eps > 0 and not 0 < step_size <= eps:
        raise UsageError(
            f"Expected 0 < pgd_step_size <= eps, got pgd_step_size={step_size}, eps={eps}"
        )


def dataset_epsilons(spec) -> tuple[float, ...]:
    """The L-infinity radii at which a data set's models are evaluated (pixel scale [0, 1])."""
    return MNIST_LIKE_EPSILONS if spec.mnist_like else CIFAR10_EPSILONS


def fgsm(model_fn, x, eps: float, y=None, clip_min: float = 0.0, clip_max: float = 1.0):
    """Fast gradient sign method: one signed-gradient step of size eps (Goodfellow et al., 2015)."""
    check_eps(eps)
    attack = _cleverhans("fast_gradient_method").fast_gradient_method
    return attack(model_fn, x, eps, np.inf, clip_min=clip_min, clip_max=clip_max, y=y)


def fgsm_random_start(
    model_fn,
    x,
    eps: float,
    y=None,
    step_size: float | None = None,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
):
    """FGSM from a uniform random point of the eps ball, projected back (Wong et al., 2020).

    Args:
      eps: L-infinity radius, >= 0.
      step_size: the signed-gradient step, > 0; None uses 1.25 * eps, as Wong et al.
    """
    import tensorflow as tf

    check_eps(eps)
    if eps == 0:
        return x
    step_size = FGSM_RS_STEP_FACTOR * eps if step_size is None else step_size
    x = tf.cast(x, tf.float32)
    start = x + tf.random.uniform(tf.shape(x), -eps, eps, dtype=x.dtype)
    start = tf.clip_by_value(start, clip_min, clip_max)
    stepped = fgsm(model_fn, start, step_size, y=y, clip_min=clip_min, clip_max=clip_max)
    # The step may leave the ball (step_size > eps); project back, then into the pixel range.
    adv = x + tf.clip_by_value(stepped - x, -eps, eps)
    return tf.clip_by_value(adv, clip_min, clip_max)


def pgd(
    model_fn,
    x,
    eps: float,
    steps: int = 40,
    step_size: float | None = None,
    y=None,
    rand_init: bool = True,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
):
    """Projected gradient descent with a random start (Madry et al., 2018).

    Args:
      steps: gradient steps, >= 1.
      step_size: per-step size in (0, eps]; None uses 2.5 * eps / steps, as Madry et al.
    """
    check_pgd(eps, steps, step_size)
    if step_size is None:
        # CleverHans refuses steps larger than eps, which 2.5 * eps / steps is for steps < 3.
        step_size = min(2.5 * eps / steps, eps)
    if eps == 0:
        return x
    attack = _cleverhans("projected_gradient_descent").projected_gradient_descent
    return attack(
        model_fn,
        x,
        eps,
        step_size,
        steps,
        np.inf,
        clip_min=clip_min,
        clip_max=clip_max,
        y=y,
        rand_init=rand_init,
        sanity_checks=False,
    )


def craft(model_fn, x, y, attack: str, eps: float, **kw):
    """One batch of adversarial examples (tensors in, tensor out); usable inside tf.function.

    Args:
      attack: "fgsm", "fgsm-rs" or "pgd".
      kw: steps, step_size, rand_init for "pgd"; step_size for "fgsm-rs"; clip_min, clip_max.
    """
    check_attack(attack)
    if attack == "fgsm":
        return fgsm(model_fn, x, eps, y=y, **kw)
    if attack == "fgsm-rs":
        return fgsm_random_start(model_fn, x, eps, y=y, **kw)
    return pgd(model_fn, x, eps, y=y, **kw)


def adversarial_examples(
    model_fn, x, y, attack: str, eps: float, batch_size: int = 256, desc: str | None = None, **kw
):
    """Crafts adversarial versions of numpy arrays `x` (labels `y`) batch by batch.

    Args:
      model_fn: a Keras model or callable from inputs to logits.
      attack: "fgsm", "fgsm-rs" or "pgd"; kw as for `craft`.
      eps: L-infinity radius, >= 0, in the inputs' scale.
      desc: shows a progress bar with this label; None shows none.
    """
    import tensorflow as tf
    from tqdm import tqdm

    check_attack(attack)
    check_eps(eps)
    if attack == "pgd":
        check_pgd(eps, kw.get("steps", 40), kw.get("step_size"))
    out = []
    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=desc, disable=desc is None, unit="batch"):
        xb = tf.convert_to_tensor(x[i : i + batch_size])
        yb = tf.convert_to_tensor(y[i : i + batch_size])
        out.append(np.asarray(craft(model_fn, xb, yb, attack, eps, **kw)))
    return np.concatenate(out) if out else x.copy()


def one_pixel(
    logits_fn,
    x: np.ndarray,
    y: np.ndarray,
    max_iterations: int = 100,
    population: int = 400,
    seed: int = 0,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    desc: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Untargeted one-pixel attack by differential evolution (Su et al., 2019).

    Each candidate is (row, column, one value per channel); DE minimises the
    true class's softmax probability and stops as soon as a candidate is
    misclassified. As in the paper: population 400, mutation 0.5, no crossover.

    Args:
      logits_fn: maps a float32 batch (n, h, w, c) to logits (a Keras model works).
      x: (n, h, w, c) images in [clip_min, clip_max]; y: (n,) int labels.
      max_iterations: DE generations per image, >= 1.
      population: candidates per generation, >= 5 (rounded up to a multiple of 2 + c).
      seed: seeds DE, for reproducible figures.
      desc: shows a progress bar over the images with this label; None shows none.
    Returns:
      (adversarial images, success mask): success[i] is True where the model
      misclassifies the changed image.
    """
    from scipy.optimize import differential_evolution
    from tqdm import tqdm

    if max_iterations < 1:
        raise UsageError(f"Expected max_iterations >= 1, got max_iterations={max_iterations}")
    if population < 5:
        raise UsageError(f"Expected population >= 5, got population={population}")
    n, h, w, c = x.shape
    bounds = [(0, h), (0, w)] + [(clip_min, clip_max)] * c
    popsize = math.ceil(population / len(bounds))  # scipy counts per parameter
    adv, success = x.copy(), np.zeros(n, dtype=bool)

    for i in tqdm(range(n), desc=desc, disable=desc is None, unit="image"):
        search = _PixelSearch(logits_fn, x[i], int(y[i]))
        differential_evolution(
            search.true_class_probability,
            bounds,
            strategy="rand1bin",
            maxiter=max_iterations,
            popsize=popsize,
            mutation=0.5,
            recombination=1.0,  # every parameter from the mutant: no crossover
            rng=np.random.default_rng(seed + i),
            callback=search.stop,
            polish=False,
            tol=0.0,  # run until success or max_iterations, as the paper
            vectorized=True,
            updating="deferred",
        )
        if search.found is not None:
            adv[i], success[i] = search.found, True
    return adv, success


class _PixelSearch:
    """DE's objective for one image: the true class's probability; remembers a success."""

    def __init__(self, logits_fn, image: np.ndarray, label: int):
        self.logits_fn, self.image, self.label = logits_fn, image, label
        self.found: np.ndarray | None = None

    def true_class_probability(self, candidates: np.ndarray) -> np.ndarray:
        # candidates: (2 + c, S) under vectorized=True; returns (S,)
        images = _place_pixels(self.image, candidates)
        logits = np.asarray(self.logits_fn(images), dtype=np.float64)
        fooled = np.flatnonzero(logits.argmax(1) != self.label)
        if fooled.size and self.found is None:
            self.found = images[fooled[0]]
        return _softmax(logits)[:, self.label]

    def stop(self, intermediate_result) -> bool:
        return self.found is not None


def _place_pixels(image: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Copies of `image` (h, w, c), each with one pixel set from a column of `candidates`."""
    h, w, c = image.shape
    s = candidates.shape[1]
    rows = np.clip(candidates[0].astype(np.int64), 0, h - 1)
    cols = np.clip(candidates[1].astype(np.int64), 0, w - 1)
    images = np.repeat(image[None], s, axis=0)  # (S, h, w, c)
    images[np.arange(s), rows, cols, :] = candidates[2:].T.astype(image.dtype)
    return images


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
