"""DP-SGD steps: clip each example's gradient to an L2 bound, sum, add Gaussian noise.

`make_fast_model` wraps a functional Keras model in `FastDPModel`, whose
train_step gets every per-example gradient norm and the clipped gradient sum
from one forward and one backward pass: the backward pass stops at each
trainable layer's output z (dL/dz), and the registry functions of
pipeline.dp.registry turn the layer inputs and dL/dz into per-example norms
and into the weight gradient of the clip-weighted loss, without materialising
per-example gradients where the ghost norm is cheaper.

`make_tfp_fast_model` and `make_optimizer` are tensorflow-privacy's own two
implementations (its DPModel with two passes per step, and DPKerasSGDOptimizer
with per-microbatch gradients), kept as references and for comparison.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import gradient_clipping_utils

from pipeline.dp import registry as dp_registry
from pipeline.errors import UsageError


def clip_weights(norms: tf.Tensor, l2_norm_clip: float) -> tf.Tensor:
    """Per-example factors min(1, C / |g_i|) that scale each gradient to norm <= C."""
    return l2_norm_clip / tf.maximum(norms, l2_norm_clip)


class FastDPModel(tf.keras.Model):
    """A functional model whose train_step is DP-SGD with fast per-example clipping.

    The deployed model is a plain functional model over the same layers
    (pipeline.train.deployable), so nothing of this class is saved.
    """

    def configure_dp(
        self,
        l2_norm_clip: float,
        noise_multiplier: float,
        num_microbatches: int | None,
        normalizer: int | None,
        registry=None,
    ):
        """Sets the DP-SGD parameters.

        Args:
          l2_norm_clip: per-example (or per-microbatch) gradient L2 bound C, > 0.
          noise_multiplier: noise standard deviation over C, >= 0.
          num_microbatches: None clips each example; else the batch is split into this many
            groups, each clipped as one (they must divide the batch size).
          normalizer: divide the noisy sum by this constant (the expected batch size under
            Poisson sampling, where the actual size must stay private); None divides by the
            number of clipped units in the batch.
        """
        self.l2_norm_clip = float(l2_norm_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.num_microbatches = num_microbatches
        self.normalizer = normalizer
        self.layer_registry = registry or dp_registry.make_registry()
        dp_registry.check_model(self, self.layer_registry)
        self._per_example_loss = None

    def _loss_per_example(self, y, logits):
        if self._per_example_loss is None:
            config = self.loss.get_config()
            config["reduction"] = tf.keras.losses.Reduction.NONE
            self._per_example_loss = self.loss.__class__.from_config(config)
        return self._per_example_loss(y, logits)

    def clipped_gradient_sum(self, x, y):
        """Sum over the batch of per-example gradients clipped to l2_norm_clip.

        Returns (gradients in trainable_variables order, per-example norms before clipping,
        logits).
        """
        tape = tf.GradientTape(watch_accessed_variables=False)

        def registered(layer, args, kwargs):
            if not layer.trainable_weights:
                return layer(*args, **kwargs), None
            fn = self.layer_registry.lookup(layer)
            base, outputs, grads_fn = fn(layer, args, kwargs, tape, self.num_microbatches)
            return outputs, (base, grads_fn, layer)

        with tape:
            logits, per_layer = gradient_clipping_utils.model_forward_pass(self, x, registered)
            losses = self._loss_per_example(y, logits)  # (batch,)
            if self.num_microbatches is not None:
                losses = tf.reduce_mean(tf.reshape(losses, [self.num_microbatches, -1]), 1)
            summed = tf.reduce_sum(losses)
        per_layer = [p for p in per_layer if p is not None]
        base_grads = tape.gradient(
            summed, [p[0] for p in per_layer], unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        squared = tf.add_n([fn(g) for (_, fn, _), g in zip(per_layer, base_grads, strict=True)])
        norms = tf.sqrt(squared)
        weights = clip_weights(norms, self.l2_norm_clip)

        by_variable = {}
        for (_, fn, layer), g in zip(per_layer, base_grads, strict=True):
            for var, grad in zip(layer.trainable_weights, fn.clipped(g, weights), strict=True):
                by_variable[var.ref()] = by_variable.get(var.ref(), 0) + grad
        grads = [by_variable[v.ref()] for v in self.trainable_variables]
        return grads, norms, logits

    def train_step(self, data):
        x, y, sample_weight = tf.keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            # Weights would scale losses before clipping and change the sensitivity.
            raise UsageError("fast DP-SGD takes no sample weights; weight by resampling instead")
        grads, norms, logits = self.clipped_gradient_sum(x, y)

        # Noise on the sum, then the mean: std C*sigma / denominator, as in Abadi et al. (2016).
        denominator = (
            tf.cast(self.normalizer, tf.float32)
            if self.normalizer is not None
            else tf.cast(tf.shape(norms)[0], tf.float32)
        )
        stddev = self.l2_norm_clip * self.noise_multiplier
        if stddev > 0:
            # One draw per variable: the independent random ops run in parallel.
            grads = [g + tf.random.normal(tf.shape(g), stddev=stddev) for g in grads]
        noisy = [g / denominator for g in grads]
        self.optimizer.apply_gradients(zip(noisy, self.trainable_variables, strict=True))

        # The reported loss is the true (unclipped) loss of the batch.
        self.compiled_loss(y, logits, regularization_losses=self.losses)
        self.compiled_metrics.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}


def make_fast_model(model, l2_norm_clip, noise_multiplier, num_microbatches=None, normalizer=None):
    """A FastDPModel over the layers of functional `model` (weights shared)."""
    dp_model = FastDPModel(model.inputs, model.outputs, name=model.name)
    dp_model.configure_dp(l2_norm_clip, noise_multiplier, num_microbatches, normalizer)
    return dp_model


def make_tfp_fast_model(model, l2_norm_clip, noise_multiplier, num_microbatches=None):
    """tensorflow-privacy's DPModel (two passes per step) with this project's layer registry."""
    from tensorflow_privacy.privacy.keras_models.dp_keras_model import DPModel

    registry = dp_registry.make_registry()
    dp_registry.check_model(model, registry)
    return DPModel(
        l2_norm_clip,
        noise_multiplier,
        num_microbatches,
        False,  # use_xla: XLA compilation of this step is slower than it saves on CPU
        registry,
        inputs=model.inputs,
        outputs=model.outputs,
        name=model.name,
    )


def make_optimizer(l2_norm_clip, noise_multiplier, num_microbatches, learning_rate):
    """tensorflow-privacy's DPKerasSGDOptimizer: per-microbatch gradients, the reference."""
    from tensorflow_privacy.privacy.optimizers.dp_optimizer_keras import DPKerasSGDOptimizer

    return DPKerasSGDOptimizer(
        l2_norm_clip=l2_norm_clip,
        noise_multiplier=noise_multiplier,
        num_microbatches=num_microbatches,
        learning_rate=learning_rate,
    )
