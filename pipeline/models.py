"""The project's two models, and their differential-privacy-ready variants.

Both output logits: the softmax is applied at evaluation and export time, so
losses and attacks see logits.

- `mlp`: 784-512-512-10 with ReLU (669,706 parameters on 28x28 inputs); its
  input size follows the data set, so `digits` works too.
- `he_mlp`: flatten -> dense(32) -> x*x -> dense(10) for homomorphic encryption
  (PROT=he): the square is the one activation CKKS evaluates exactly, with one
  ciphertext product, and the depth of the whole network is three rescalings.
  The width is a power of two so that a ciphertext's slots split into equal
  blocks (pipeline/he.py). 2,410 parameters on 8x8 inputs, 25,450 on 28x28.
- `cnn`: a VGG-style network for CIFAR-10 (5,874,250 parameters; 5,870,666 in
  its DP-ready form), built only from layers that convert to full-int8 TFLite,
  the Edge TPU, OpenVINO and ONNX: Conv2D, BatchNormalization (folded into the
  convolution at conversion), ReLU, MaxPooling2D, Flatten and Dense, all with
  static shapes and 4-D tensors at most.

DP-ready variants have no BatchNormalization, because it mixes the examples of
a batch and per-example clipping cannot bound that. GroupNormalization breaks
full-int8 TFLite conversion and LayerNormalization converts to shape-dynamic
operations the Edge TPU does not run, so the DP-ready CNN uses no
normalisation and tanh activations, which DP-SGD research (Papernot et al.,
"Tempered Sigmoid Activations for Deep Learning with Differential Privacy",
2020) found to train better than ReLU under clipping.
"""

from __future__ import annotations

from pipeline.errors import UsageError, choice_error

MODELS = ("mlp", "cnn", "he_mlp")
HE_HIDDEN_UNITS = 32


def build(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int = 10,
    dp_ready: bool = False,
    seed: int | None = None,
):
    """Builds an uncompiled Keras model that outputs logits.

    Args:
      name: "mlp", "cnn" or "he_mlp".
      input_shape: one example's shape, NHWC without the batch axis.
      num_classes: output logits.
      dp_ready: no BatchNormalization (and tanh for the CNN), for per-example clipping.
      seed: seeds the weight initialisers, for reproducible runs.
    """
    import tensorflow as tf

    if name not in MODELS:
        raise choice_error("model", name, MODELS)
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    if name == "he_mlp":
        return _he_mlp(tf.keras, tuple(input_shape), num_classes, HE_HIDDEN_UNITS)
    builder = _mlp if name == "mlp" else _cnn
    return builder(tf.keras, tuple(input_shape), num_classes, dp_ready)


def he_mlp(input_shape: tuple[int, ...], num_classes: int = 10, hidden_units: int = 32, seed=None):
    """Builds the square-activation MLP for encrypted inference, with `hidden_units` (a power of 2)."""
    import tensorflow as tf

    if hidden_units < 1 or hidden_units & (hidden_units - 1):
        raise UsageError(
            f"Expected hidden_units a power of two >= 1, got hidden_units={hidden_units}"
        )
    if seed is not None:
        tf.keras.utils.set_random_seed(seed)
    return _he_mlp(tf.keras, tuple(input_shape), num_classes, hidden_units)


def _he_mlp(keras, input_shape, num_classes, hidden_units):
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten()(inputs)  # (batch, h*w*c)
    x = layers.Dense(hidden_units, name="dense_1")(x)
    # x*x as a built-in layer: it saves, loads and converts (TFLite, ONNX) without custom code.
    x = layers.Multiply(name="square")([x, x])
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="he_mlp")


def _mlp(keras, input_shape, num_classes, dp_ready):
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Flatten()(inputs)  # (batch, h*w*c)
    x = layers.Dense(512, activation="relu", name="dense_1")(x)
    x = layers.Dense(512, activation="relu", name="dense_2")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="mlp_dp" if dp_ready else "mlp")


def _cnn(keras, input_shape, num_classes, dp_ready):
    layers = keras.layers
    activation = "tanh" if dp_ready else "relu"
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for block, filters in enumerate((64, 128, 256), start=1):
        for conv in (1, 2):
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=True, name=f"conv{block}_{conv}"
            )(x)
            if not dp_ready:
                # momentum 0.9: the moving statistics settle within an epoch on small data too.
                x = layers.BatchNormalization(momentum=0.9, name=f"bn{block}_{conv}")(x)
            x = layers.Activation(activation, name=f"act{block}_{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{block}")(x)  # halves height and width
    x = layers.Flatten()(x)  # (batch, 4*4*256) on 32x32 inputs
    x = layers.Dense(1024, activation=activation, name="dense_1")(x)
    if not dp_ready:
        x = layers.Dropout(0.3)(x)
    x = layers.Dense(512, activation=activation, name="dense_2")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, logits, name="cnn_dp" if dp_ready else "cnn")
