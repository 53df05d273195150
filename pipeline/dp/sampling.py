"""Poisson sampling: every step includes each training example independently with rate q.

This is the sampling the DP-SGD privacy analysis assumes (Abadi et al. 2016;
dp_accounting's PoissonSampledDpEvent). Batches have variable size, mean
q * N. Shuffled fixed-size batches (pipeline.data.make_dataset) are the
common practice instead, and make the reported epsilon an approximation.
"""

from __future__ import annotations

import itertools

import numpy as np


def poisson_batches(x, y, sampling_rate: float, steps: int, seed: int, first_epoch: int = 0):
    """A tf.data pipeline of `steps` Poisson-sampled batches per iteration (one epoch).

    Each iteration of the dataset (Keras iterates once per epoch) draws fresh samples,
    seeded by (seed, epoch), so that resumed runs do not repeat an earlier epoch's batches.

    Args:
      x, y: training arrays, first axis = examples.
      sampling_rate: q in (0, 1].
      steps: batches per epoch, >= 1.
      seed: the run's seed.
      first_epoch: index of the epoch the first iteration trains (after resumption).
    """
    import tensorflow as tf

    epochs = itertools.count(first_epoch)
    n = len(x)

    def batches():
        rng = np.random.default_rng([seed, next(epochs)])
        for _ in range(steps):
            idx = np.flatnonzero(rng.random(n) < sampling_rate)
            yield x[idx], y[idx]

    spec = (
        tf.TensorSpec((None, *x.shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.as_dtype(y.dtype)),
    )
    ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
    return ds.apply(tf.data.experimental.assert_cardinality(steps)).prefetch(2)
