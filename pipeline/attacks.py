"""Evasion attacks on logits, through CleverHans' TF2 implementations.

All attacks take a model (or any callable) that maps a batch of inputs in
[clip_min, clip_max] to logits, never probabilities, and perturb within an
L-infinity ball of radius `eps`.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import UsageError, require

ATTACKS = ("fgsm", "pgd")


def _cleverhans(name: str):
    return require(f"cleverhans.tf2.attacks.{name}", "cleverhans==4.0.0", "adversarial attacks")


def check_eps(eps: float) -> None:
    if not eps >= 0:
        raise UsageError(f"Expected eps >= 0, got eps={eps}")


def fgsm(model_fn, x, eps: float, y=None, clip_min: float = 0.0, clip_max: float = 1.0):
    """Fast gradient sign method: one signed-gradient step of size eps (Goodfellow et al., 2015)."""
    check_eps(eps)
    attack = _cleverhans("fast_gradient_method").fast_gradient_method
    return attack(model_fn, x, eps, np.inf, clip_min=clip_min, clip_max=clip_max, y=y)


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
      step_size: per-step size; None uses 2.5 * eps / steps, as Madry et al.
    """
    check_eps(eps)
    if steps < 1:
        raise UsageError(f"Expected pgd steps >= 1, got steps={steps}")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    if not step_size > 0 and eps > 0:
        raise UsageError(f"Expected pgd step_size > 0, got step_size={step_size}")
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


def adversarial_examples(model_fn, x, y, attack: str, eps: float, batch_size: int = 256, **kw):
    """Crafts adversarial versions of numpy arrays `x` (labels `y`) batch by batch."""
    import tensorflow as tf

    if attack not in ATTACKS:
        raise UsageError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")
    fn = fgsm if attack == "fgsm" else pgd
    out = []
    for i in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[i : i + batch_size])
        yb = tf.convert_to_tensor(y[i : i + batch_size])
        out.append(np.asarray(fn(model_fn, xb, eps, y=yb, **kw)))
    return np.concatenate(out) if out else x.copy()
