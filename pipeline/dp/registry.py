"""Per-example gradient norms of a layer from its inputs and the gradient at its output.

Extends tensorflow-privacy's fast-gradient-clipping `LayerRegistry` (Dense and
Embedding only) with Conv2D, LayerNormalization and GroupNormalization. Each
registry function keeps tensorflow-privacy's contract: it returns
`(base_vars, outputs, sqr_norm_fn)`, where `sqr_norm_fn(dL/d base_vars)` gives
the per-example squared gradient norms of the layer's trainable weights. The
functions here return a `LayerGradients` object as `sqr_norm_fn`, which also
gives the clip-weighted gradient sum, so that pipeline.dp.clipping needs one
forward and one backward pass per step instead of tensorflow-privacy's two.

Linear layers (Dense, Conv2D) see the layer as `z_t = W a_t + b` at positions
t (one position for a Dense layer on a vector, every output pixel for a
convolution, whose a_t are the input patches). The per-example weight gradient
is `sum_t a_t g_t^T` with g_t = dL/dz_t. Its squared norm is either computed
from the materialised per-example gradient (cost ~ T*K*C per example) or with
the "ghost norm" identity `sum_{t,s} (a_t.a_s)(g_t.g_s)` (cost ~ T^2*(K+C)),
whichever is cheaper for the layer's shape (Li et al. 2022; Bu et al. 2023).
docs/dp.md derives both.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import layer_registry

from pipeline.errors import UsageError


class LayerGradients:
    """A layer's per-example squared gradient norms and clip-weighted gradient sum.

    Called with dL/d(base_vars) (tensorflow-privacy's `sqr_norm_fn` contract) it
    returns squared norms of shape (batch,); `clipped(grads, weights)` returns
    `sum_i weights_i * grad_i` for each of the layer's trainable weights, in the
    order of `layer.trainable_weights`.
    """

    def __call__(self, base_grads) -> tf.Tensor:
        raise NotImplementedError

    def clipped(self, base_grads, clip_weights: tf.Tensor) -> list[tf.Tensor]:
        raise NotImplementedError


class _LinearGradients(LayerGradients):
    """Gradients of `z_t = W a_t + b` over positions t, per example (or per microbatch).

    Args:
      patches: (batch, T, K) inputs at each position (K = fan-in).
      kernel_shape: the layer's kernel shape, whose size is K * C.
      use_bias: whether the layer has a bias of size C.
      num_microbatches: None for per-example norms; else the batch is split into this many
        equal groups whose positions are pooled (the loss is then a mean per microbatch).
    """

    def __init__(self, patches, kernel_shape, use_bias: bool, num_microbatches=None):
        self.positions = patches.shape[1]
        self.patches = _group(patches, num_microbatches)  # (n, T, K)
        self.kernel_shape = kernel_shape
        self.use_bias = use_bias
        self.num_microbatches = num_microbatches
        self._per_example = None

    def _grads(self, base_grads):
        g = tf.reshape(base_grads, [-1, self.positions, base_grads.shape[-1]])
        return _group(g, self.num_microbatches)

    def __call__(self, base_grads):
        g = self._grads(base_grads)  # (n, T, C)
        a = self.patches
        positions, fan_in, fan_out = self.positions, a.shape[2], g.shape[2]
        # Ghost norm costs ~T^2 (K + C) per example, materialising ~T K C. Microbatches pool
        # their examples' positions, which favours materialising.
        ghost = positions * (fan_in + fan_out) < fan_in * fan_out
        if positions == 1 and self.num_microbatches is None:
            # One position: |a g^T|^2 = |a|^2 |g|^2 (Goodfellow 2015).
            sq = tf.reduce_sum(tf.square(a[:, 0]), 1) * tf.reduce_sum(tf.square(g[:, 0]), 1)
        elif ghost and self.num_microbatches is None:
            gram_a = tf.einsum("ntk,nsk->nts", a, a)  # (n, T, T)
            gram_g = tf.einsum("ntc,nsc->nts", g, g)
            sq = tf.reduce_sum(gram_a * gram_g, axis=[1, 2])
        else:
            self._per_example = tf.einsum("ntk,ntc->nkc", a, g)  # (n, K, C)
            sq = tf.reduce_sum(tf.square(self._per_example), axis=[1, 2])
        if self.use_bias:
            sq += tf.reduce_sum(tf.square(tf.reduce_sum(g, 1)), 1)
        return sq

    def clipped(self, base_grads, clip_weights):
        g = self._grads(base_grads)
        weighted = g * clip_weights[:, None, None]
        if self._per_example is not None:
            kernel = tf.einsum("n,nkc->kc", clip_weights, self._per_example)
        else:
            kernel = tf.einsum("ntk,ntc->kc", self.patches, weighted)
        out = [tf.reshape(kernel, self.kernel_shape)]
        if self.use_bias:
            out.append(tf.reduce_sum(weighted, axis=[0, 1]))
        return out


def _group(x, num_microbatches):
    """(batch, T, K) -> (num_microbatches, batch / num_microbatches * T, K)."""
    if num_microbatches is None:
        return x
    return tf.reshape(x, [num_microbatches, -1, x.shape[-1]])


def _linear_output(layer, inputs, tape):
    """The layer's pre-activation z (watched by `tape`) and its activated output."""
    activation = layer.activation
    layer.activation = None
    try:
        z = layer(inputs)
    finally:
        layer.activation = activation
    tape.watch(z)
    return z, (activation(z) if activation else z)


def dense(layer, input_args, input_kwargs, tape, num_microbatches=None):
    """Registry function for tf.keras.layers.Dense (any input rank)."""
    if input_kwargs or len(input_args) != 1:
        raise UsageError(f"layer {layer.name!r} (Dense) must be called on one tensor")
    (inputs,) = input_args
    z, outputs = _linear_output(layer, inputs, tape)
    positions = int(np.prod(inputs.shape[1:-1]))  # 1 on a vector input
    patches = tf.reshape(inputs, [-1, positions, inputs.shape[-1]])
    return (
        z,
        outputs,
        _LinearGradients(patches, layer.kernel.shape, layer.use_bias, num_microbatches),
    )


def check_conv2d(layer) -> None:
    """Refuses Conv2D settings the patch computation does not cover."""
    problems = []
    if layer.data_format != "channels_last":
        problems.append(f"data_format={layer.data_format}")
    if tuple(layer.dilation_rate) != (1, 1):
        problems.append(f"dilation_rate={layer.dilation_rate}")
    if getattr(layer, "groups", 1) != 1:
        problems.append(f"groups={layer.groups}")
    if str(layer.padding).lower() not in ("same", "valid"):
        problems.append(f"padding={layer.padding}")
    if problems:
        raise UsageError(
            f"layer {layer.name!r} (Conv2D) has {', '.join(problems)}, which fast per-example "
            "clipping does not support; use channels_last, dilation 1, groups 1, or DP_IMPL=optimizer"
        )


def conv2d(layer, input_args, input_kwargs, tape, num_microbatches=None):
    """Registry function for tf.keras.layers.Conv2D (channels_last, no dilation or groups)."""
    check_conv2d(layer)
    if input_kwargs or len(input_args) != 1:
        raise UsageError(f"layer {layer.name!r} (Conv2D) must be called on one tensor")
    (inputs,) = input_args
    z, outputs = _linear_output(layer, inputs, tape)
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    # Patches flatten (kh, kw, c_in) in the kernel's own order, so W reshapes to (K, C).
    patches = tf.image.extract_patches(
        inputs, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], layer.padding.upper()
    )  # (batch, h_out, w_out, kh*kw*c_in)
    patches = tf.reshape(patches, [-1, patches.shape[1] * patches.shape[2], patches.shape[-1]])
    return (
        z,
        outputs,
        _LinearGradients(patches, layer.kernel.shape, layer.use_bias, num_microbatches),
    )


class _AffineGradients(LayerGradients):
    """Gradients of `y = x_hat * gamma + beta` (normalisation layers), materialised per example.

    gamma and beta are small (one value per channel), so their per-example gradients
    cost no more than the layer's forward pass.
    """

    def __init__(self, x_hat, param_axes, weights, num_microbatches=None):
        self.x_hat = x_hat  # normalised input, (batch, ...)
        self.reduce_axes = [a for a in range(1, x_hat.shape.rank) if a not in param_axes]
        self.weights = weights  # [("gamma"|"beta", shape)] in trainable_weights order
        self.num_microbatches = num_microbatches

    def _per_example(self, grads):
        out = []
        for name, shape in self.weights:
            term = grads * self.x_hat if name == "gamma" else grads
            g = tf.reshape(tf.reduce_sum(term, self.reduce_axes), [tf.shape(grads)[0], *shape])
            if self.num_microbatches is not None:
                g = tf.reduce_sum(tf.reshape(g, [self.num_microbatches, -1, *shape]), 1)
            out.append(g)
        return out

    def __call__(self, grads):
        return tf.add_n(
            [
                tf.reduce_sum(tf.square(g), list(range(1, g.shape.rank)))
                for g in self._per_example(grads)
            ]
        )

    def clipped(self, grads, clip_weights):
        return [tf.tensordot(clip_weights, g, 1) for g in self._per_example(grads)]


def _affine(layer, x_hat, param_axes, tape, num_microbatches):
    """Applies gamma and beta as the layer does; the output is what the tape differentiates."""
    shape = [1] * x_hat.shape.rank
    for a in param_axes:
        shape[a] = x_hat.shape[a]
    y = x_hat
    weights = [
        ("gamma" if var is getattr(layer, "gamma", None) else "beta", tuple(var.shape))
        for var in layer.trainable_weights
    ]
    if getattr(layer, "scale", False):
        y = y * tf.reshape(layer.gamma, shape)
    if getattr(layer, "center", False):
        y = y + tf.reshape(layer.beta, shape)
    tape.watch(y)
    return y, y, _AffineGradients(x_hat, param_axes, weights, num_microbatches)


def layer_normalization(layer, input_args, input_kwargs, tape, num_microbatches=None):
    """Registry function for tf.keras.layers.LayerNormalization."""
    (inputs,) = input_args
    axes = [a % inputs.shape.rank for a in layer.axis]
    mean, var = tf.nn.moments(inputs, axes, keepdims=True)
    x_hat = (inputs - mean) * tf.math.rsqrt(var + layer.epsilon)
    return _affine(layer, x_hat, axes, tape, num_microbatches)


def group_normalization(layer, input_args, input_kwargs, tape, num_microbatches=None):
    """Registry function for tf.keras.layers.GroupNormalization (channel axis last)."""
    (inputs,) = input_args
    rank = inputs.shape.rank
    if layer.axis % rank != rank - 1:
        raise UsageError(
            f"layer {layer.name!r} (GroupNormalization) must normalise the last axis for fast "
            "clipping; use axis=-1 or DP_IMPL=optimizer"
        )
    channels = inputs.shape[-1]
    shape = tf.concat([tf.shape(inputs)[:-1], [layer.groups, channels // layer.groups]], 0)
    grouped = tf.reshape(inputs, shape)  # (batch, ..., groups, channels per group)
    axes = [*range(1, rank - 1), rank]  # every axis but batch and group
    mean, var = tf.nn.moments(grouped, axes, keepdims=True)
    x_hat = tf.reshape((grouped - mean) * tf.math.rsqrt(var + layer.epsilon), tf.shape(inputs))
    return _affine(layer, x_hat, [rank - 1], tape, num_microbatches)


def make_registry() -> layer_registry.LayerRegistry:
    """tensorflow-privacy's registry with this module's functions for the project's layers."""
    registry = layer_registry.LayerRegistry()
    registry.insert(tf.keras.layers.Dense, dense)
    registry.insert(tf.keras.layers.Conv2D, conv2d)
    registry.insert(tf.keras.layers.LayerNormalization, layer_normalization)
    registry.insert(tf.keras.layers.GroupNormalization, group_normalization)
    return registry


def check_model(model, registry: layer_registry.LayerRegistry) -> None:
    """Refuses a model with a trainable layer that has no registry function, naming the layer."""
    for layer in _leaf_layers(model):
        if not layer.trainable_weights:
            continue
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            raise UsageError(
                f"layer {layer.name!r} (BatchNormalization) mixes the examples of a batch, so "
                "per-example clipping cannot bound it; use the DP-ready model (PROT=dp builds it)"
            )
        if not registry.is_elem(layer):
            raise UsageError(
                f"layer {layer.name!r} ({type(layer).__name__}) has no per-example gradient-norm "
                "function, so fast DP clipping cannot train it; add one to pipeline/dp/registry.py "
                "or use DP_IMPL=optimizer"
            )
        if len(layer.inbound_nodes) > 1:
            # Its per-example gradient sums over the calls; per-call norms would understate it.
            raise UsageError(
                f"layer {layer.name!r} ({type(layer).__name__}) is called more than once; fast DP "
                "clipping needs each trainable layer called once (use DP_IMPL=optimizer)"
            )
        if isinstance(layer, tf.keras.layers.Conv2D):
            check_conv2d(layer)


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer
