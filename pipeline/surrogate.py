"""Briefly trained models: the project's own architecture, fitted for a few epochs.

Data checks need a model before the real one is trained: an attacker's
surrogate to craft adversarial examples, a feature extractor whose
penultimate-layer activations separate natural from critical inputs, and the
reference models of a membership-exposure score. A few epochs of the same
architecture suffice for all three and keep the cost to a fraction of a run.
"""

from __future__ import annotations

import numpy as np

from pipeline import models

PENULTIMATE_BATCH = 1024


def train_brief(
    x: np.ndarray,
    y: np.ndarray,
    model_name: str,
    num_classes: int,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
):
    """Builds `model_name` and trains it with Adam on (x, y) for `epochs` (>= 1); returns it."""
    import tensorflow as tf

    model = models.build(model_name, x.shape[1:], num_classes, seed=seed)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return model


def penultimate(model, x: np.ndarray) -> np.ndarray:
    """The activations feeding the `logits` layer, (N, width), as float32."""
    import tensorflow as tf

    extractor = tf.keras.Model(model.inputs, model.get_layer("logits").input)
    return extractor.predict(x, batch_size=PENULTIMATE_BATCH, verbose=0).astype(np.float32)
