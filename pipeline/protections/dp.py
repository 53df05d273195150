"""PROT=dp: DP-SGD. Clip each example's gradient to L2 norm C, add N(0, (sigma C)^2) to the sum.

  make train DATASET=mnist PROT=dp EPSILON=3 EPOCHS=30
  python -m pipeline.train --dataset mnist --prot dp --noise-multiplier 1.1 --sampling poisson

Privacy is accounted with dp_accounting (RDP and PLD, the tighter reported):
epsilon per epoch goes to history.json, the final figures to
metrics.json["protection"]. Implementations (DP_IMPL): `fast` (one pass,
pipeline.dp.clipping), `optimizer` (tensorflow-privacy's DPKerasSGDOptimizer,
per-microbatch gradients: the reference) and `tfp-fast` (tensorflow-privacy's
DPModel with this project's layer registry). docs/dp.md has the details.
"""

from __future__ import annotations

import dataclasses
import logging
import math

from pipeline import runs
from pipeline.errors import UsageError, choice_error, require
from pipeline.protections.base import Protection

log = logging.getLogger(__name__)

IMPLEMENTATIONS = ("fast", "optimizer", "tfp-fast")
SAMPLINGS = ("shuffle", "poisson")
DEFAULT_NOISE_MULTIPLIER = 1.1
DEFAULT_DELTA = 1e-5
# SGD's step under DP: clipped, noisy, averaged gradients are small, so DP-SGD needs a far
# larger learning rate than Adam's 1e-3; used when LEARNING_RATE is not given.
DP_LEARNING_RATE = 0.5


@dataclasses.dataclass(frozen=True)
class DPOptions:
    """DP-SGD settings.

    Attributes:
      l2_norm_clip: per-example gradient L2 bound C, > 0. Smaller clips bias the gradient
        more; larger ones need more noise for the same signal-to-noise ratio.
      noise_multiplier: noise std over C, >= 0 (0: no privacy). A larger one costs
        accuracy and buys privacy. None: computed from `epsilon`, else 1.1.
      epsilon: target epsilon, > 0; the noise multiplier is then computed for the
        configured epochs, batch size and data size. Exclusive with noise_multiplier.
      delta: in (0, 1/N); None uses 1e-5 (or 0.1/N when 1e-5 >= 1/N).
      dp_impl: "fast" (default), "optimizer" (tensorflow-privacy's microbatch optimizer)
        or "tfp-fast" (tensorflow-privacy's DPModel).
      sampling: "shuffle" (fixed batches; epsilon is then an approximation) or "poisson"
        (each example joins each batch with rate batch_size / N, as the analysis assumes).
      microbatches: clip groups of batch_size / microbatches examples instead of single
        examples, >= 1, dividing the batch size; None clips each example.
    """

    l2_norm_clip: float = 1.0
    noise_multiplier: float | None = None
    epsilon: float | None = None
    delta: float | None = None
    dp_impl: str = "fast"
    sampling: str = "shuffle"
    microbatches: int | None = None

    def __post_init__(self):
        if not self.l2_norm_clip > 0 or not math.isfinite(self.l2_norm_clip):
            raise UsageError(f"Expected l2_norm_clip > 0, got l2_norm_clip={self.l2_norm_clip}")
        if self.noise_multiplier is not None and not self.noise_multiplier >= 0:
            raise UsageError(
                f"Expected noise_multiplier >= 0, got noise_multiplier={self.noise_multiplier}"
            )
        if self.epsilon is not None:
            if not self.epsilon > 0:
                raise UsageError(f"Expected epsilon > 0, got epsilon={self.epsilon}")
            if self.noise_multiplier == 0:
                raise UsageError(
                    f"noise_multiplier=0 gives no privacy, so no epsilon={self.epsilon} can hold; "
                    "leave NOISE_MULTIPLIER out to compute it from EPSILON"
                )
            if self.noise_multiplier is not None:
                raise UsageError(
                    "give NOISE_MULTIPLIER or EPSILON, not both: the noise is computed from EPSILON"
                )
        if self.delta is not None and not 0 < self.delta < 1:
            raise UsageError(f"Expected 0 < delta < 1, got delta={self.delta}")
        if self.dp_impl not in IMPLEMENTATIONS:
            raise choice_error("DP_IMPL", self.dp_impl, IMPLEMENTATIONS)
        if self.sampling not in SAMPLINGS:
            raise choice_error("SAMPLING", self.sampling, SAMPLINGS)
        if self.microbatches is not None:
            if self.microbatches < 1:
                raise UsageError(
                    f"Expected microbatches >= 1, got microbatches={self.microbatches}"
                )
            if self.sampling == "poisson":
                raise UsageError(
                    "MICROBATCHES needs fixed-size batches; Poisson batches vary in size "
                    "(use SAMPLING=shuffle or leave MICROBATCHES out)"
                )


class DPProtection(Protection):
    """DP-SGD on the DP-ready model with SGD, accounted with dp_accounting."""

    name = "dp"
    dp_ready_model = True
    default_learning_rate = DP_LEARNING_RATE

    def __init__(self, cfg):
        super().__init__(cfg)
        self.options = cfg.options if cfg.options is not None else DPOptions()
        if cfg.strategy != "default":
            raise UsageError(
                "PROT=dp trains on one device (STRATEGY=default): under a distribution strategy "
                "every replica would add its own noise and the accounting would not hold"
            )
        require("tensorflow_privacy", "tensorflow-privacy==0.9.0", "PROT=dp")
        require("dp_accounting", "dp-accounting==0.4.3", "PROT=dp")

    # --- configuration ----------------------------------------------------

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--l2-norm-clip", type=float, default=None, help="default 1.0")
        parser.add_argument(
            "--noise-multiplier",
            type=float,
            default=None,
            help=f"default {DEFAULT_NOISE_MULTIPLIER}",
        )
        parser.add_argument(
            "--epsilon", type=float, default=None, help="target epsilon; computes the noise"
        )
        parser.add_argument("--delta", type=float, default=None, help="default 1e-5, below 1/N")
        parser.add_argument("--dp-impl", default=None, help=f"one of {', '.join(IMPLEMENTATIONS)}")
        parser.add_argument("--sampling", default=None, help="shuffle (default) or poisson")
        parser.add_argument("--microbatches", type=int, default=None, help="default: batch size")

    @classmethod
    def options_from_args(cls, args) -> DPOptions:
        names = [f.name for f in dataclasses.fields(DPOptions)]
        return DPOptions(**{n: getattr(args, n) for n in names if getattr(args, n) is not None})

    # --- training steps ---------------------------------------------------

    def prepare_data(self, splits):
        """Checks the settings against the data size and fixes the noise multiplier."""
        from pipeline.dp import accounting

        opts, cfg = self.options, self.cfg
        n = len(splits.x_train)
        if cfg.batch_size > n:
            raise UsageError(f"BATCH_SIZE={cfg.batch_size} exceeds the {n} training examples")
        if opts.microbatches is not None and cfg.batch_size % opts.microbatches:
            raise UsageError(
                f"MICROBATCHES={opts.microbatches} must divide BATCH_SIZE={cfg.batch_size}"
            )
        if opts.delta is not None and opts.delta >= 1 / n:
            raise UsageError(
                f"Expected delta < 1/N = {1 / n:.3g} for N={n} training examples, got "
                f"delta={opts.delta}; a larger delta allows leaking a whole record"
            )
        self._refuse_changed_epochs_with_epsilon()
        self.n = n
        self.delta = opts.delta or (DEFAULT_DELTA if DEFAULT_DELTA < 1 / n else 0.1 / n)
        self.sampling_rate = cfg.batch_size / n
        self.steps_per_epoch = n // cfg.batch_size
        total_steps = cfg.epochs * self.steps_per_epoch
        if opts.epsilon is not None:
            self.noise_multiplier = accounting.noise_for_epsilon(
                opts.epsilon, self.sampling_rate, total_steps, self.delta
            )
        elif opts.noise_multiplier is not None:
            self.noise_multiplier = opts.noise_multiplier
        else:
            self.noise_multiplier = DEFAULT_NOISE_MULTIPLIER
        final = accounting.privacy_spent(
            self.sampling_rate, self.noise_multiplier, total_steps, self.delta
        )
        log.info(
            "DP-SGD (%s): clip %.4g, noise multiplier %.4g, %s sampling rate %.4g, %d steps, "
            "lr %.4g: epsilon %.4g at delta %.3g after %d epochs (%s)",
            opts.dp_impl,
            opts.l2_norm_clip,
            self.noise_multiplier,
            opts.sampling,
            self.sampling_rate,
            total_steps,
            self.learning_rate,
            final.epsilon,
            self.delta,
            cfg.epochs,
            final.accountant,
        )
        if self.noise_multiplier == 0:
            log.warning("noise multiplier 0: the model is clipped but NOT differentially private")
        if opts.sampling == "shuffle":
            log.warning(
                "shuffled fixed-size batches: the reported epsilon assumes Poisson sampling and "
                "is an approximation; use SAMPLING=poisson for the guarantee the analysis gives"
            )
        return splits

    def _refuse_changed_epochs_with_epsilon(self) -> None:
        # The noise computed from EPSILON depends on the epochs; a resumed run must keep them.
        config_path = self.cfg.run_dir / runs.CONFIG_FILE
        if self.options.epsilon is None or not config_path.exists():
            return
        saved = runs.read_json(config_path).get("epochs")
        if saved != self.cfg.epochs:
            raise UsageError(
                f"{self.cfg.run_dir} was started with EPOCHS={saved} and EPSILON, which fixed the "
                "noise for that many epochs; resume with the same EPOCHS or start a new run"
            )

    def build_model(self, input_shape, num_classes):
        from pipeline.dp import clipping

        model = super().build_model(input_shape, num_classes)
        opts = self.options
        if opts.dp_impl == "fast":
            # Poisson batches vary in size, which must stay private: divide by the expected size.
            normalizer = self.cfg.batch_size if opts.sampling == "poisson" else None
            return clipping.make_fast_model(
                model, opts.l2_norm_clip, self.noise_multiplier, opts.microbatches, normalizer
            )
        if opts.dp_impl == "tfp-fast":
            return clipping.make_tfp_fast_model(
                model, opts.l2_norm_clip, self.noise_multiplier, opts.microbatches
            )
        return model

    def compile(self, model) -> None:
        import tensorflow as tf

        from pipeline.dp import clipping

        opts = self.options
        if opts.dp_impl == "optimizer":
            optimizer = clipping.make_optimizer(
                opts.l2_norm_clip, self.noise_multiplier, opts.microbatches, self.learning_rate
            )
            # The optimizer clips per microbatch, so it needs the loss of every example.
            reduction = tf.keras.losses.Reduction.NONE
        else:
            optimizer = tf.keras.optimizers.SGD(self.learning_rate)
            reduction = tf.keras.losses.Reduction.AUTO
        model.compile(
            optimizer=optimizer,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction=reduction
            ),
            metrics=["accuracy"],
        )

    def train_dataset(self, splits):
        import tensorflow as tf

        from pipeline.dp import sampling

        cfg = self.cfg
        if self.options.sampling == "poisson":
            return sampling.poisson_batches(
                splits.x_train,
                splits.y_train,
                self.sampling_rate,
                self.steps_per_epoch,
                cfg.seed,
                first_epoch=self._completed_epochs(),
            )
        # Fixed-size batches: the last, smaller one is dropped so every step has the size
        # the accounting and the microbatch split assume.
        ds = tf.data.Dataset.from_tensor_slices((splits.x_train, splits.y_train))
        ds = ds.shuffle(len(splits.x_train), seed=cfg.seed, reshuffle_each_iteration=True)
        return ds.batch(cfg.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def _completed_epochs(self) -> int:
        path = self.cfg.run_dir / runs.HISTORY_FILE
        return len(runs.read_json(path)["epochs"]) if path.exists() else 0

    def epoch_logs(self, epoch: int, model) -> dict:
        spent = self._spent((epoch + 1) * self.steps_per_epoch)
        return {"epsilon": spent.epsilon if math.isfinite(spent.epsilon) else None}

    def _spent(self, steps: int):
        from pipeline.dp import accounting

        return accounting.privacy_spent(
            self.sampling_rate, self.noise_multiplier, steps, self.delta
        )

    def metrics(self) -> dict:
        opts, cfg = self.options, self.cfg
        steps = cfg.epochs * self.steps_per_epoch
        spent = self._spent(steps)

        def finite(v):
            return v if math.isfinite(v) else None  # JSON has no infinity: no noise, no bound

        return {
            "impl": opts.dp_impl,
            "epsilon": finite(spent.epsilon),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "l2_norm_clip": opts.l2_norm_clip,
            "sampling": opts.sampling,
            "epsilon_is_approximation": opts.sampling != "poisson",
            "accountant": spent.accountant,
            "epsilon_rdp": finite(spent.epsilon_rdp),
            "epsilon_pld": finite(spent.epsilon_pld),
            "target_epsilon": opts.epsilon,
            "sampling_rate": self.sampling_rate,
            "steps": steps,
            "training_examples": self.n,
            "microbatches": opts.microbatches,
            "optimizer": "SGD",
            "learning_rate": self.learning_rate,
        }


PROTECTION = DPProtection
