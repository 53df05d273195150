"""Each training record's exposure to membership inference, from paired reference models.

A record is exposed when training on it changes the model's confidence in its
label far more than it would change for a typical record; a likelihood-ratio
attack (Carlini et al., "Membership Inference Attacks From First Principles",
2022) exploits exactly that gap. This is a cheap offline version of it: pairs
of reference models of the project's architecture are trained briefly on the
two halves of a fresh random split, so that every record is in the training
set of exactly one model of each pair and out of the other. The exposure of a
record is its mean logit-scaled confidence (LiRA's phi) in the models that
trained on it minus that in the models that did not, divided by the standard
deviation of phi over all records in the models that did not (LiRA's fixed
variance, suited to few reference models).
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm import tqdm

from pipeline import surrogate
from pipeline.errors import UsageError

log = logging.getLogger(__name__)

PREDICT_BATCH = 1024


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's phi = log(p_y / (1 - p_y)) from logits, as z_y - logsumexp(z_other), stably."""
    logits = logits.astype(np.float64)
    true = logits[np.arange(len(labels)), labels]
    others = logits.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    peak = others.max(axis=1, keepdims=True)
    return true - (peak[:, 0] + np.log(np.exp(others - peak).sum(axis=1)))


def scores(
    x: np.ndarray,
    y: np.ndarray,
    model_name: str,
    num_classes: int,
    reference_models: int = 4,
    epochs: int = 2,
    seed: int = 0,
) -> np.ndarray:
    """(N,) exposure of each record (x, y) in standard deviations; higher is more exposed.

    Args:
      reference_models: models to train, an even number >= 2; each pair costs one
        pass of `epochs` over the whole set.
      epochs: training epochs of each reference model, >= 1.
    """
    if reference_models < 2 or reference_models % 2:
        raise UsageError(
            f"Expected an even reference_models >= 2, got reference_models={reference_models}"
        )
    n = len(x)
    phi_in, phi_out = np.zeros(n), np.zeros(n)
    rng = np.random.default_rng(seed)
    for pair in tqdm(range(reference_models // 2), desc="reference model pairs", leave=False):
        halves = np.array_split(rng.permutation(n), 2)
        for side, members in enumerate(halves):
            model = surrogate.train_brief(
                x[members], y[members], model_name, num_classes, epochs, seed + 2 * pair + side
            )
            phi = logit_confidence(model.predict(x, batch_size=PREDICT_BATCH, verbose=0), y)
            is_member = np.zeros(n, bool)
            is_member[members] = True
            phi_in[is_member] += phi[is_member]
            phi_out[~is_member] += phi[~is_member]
    phi_in /= reference_models // 2
    phi_out /= reference_models // 2
    spread = float(np.std(phi_out)) or 1.0
    return (phi_in - phi_out) / spread
