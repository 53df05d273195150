"""PROT=adv: adversarial training, on adversarial examples crafted against the current model.

Every training batch has a share `adv_ratio` of its examples replaced by
adversarial versions crafted against the model as it is at that step, with
CleverHans' attacks on logits (Goodfellow et al., 2015 for a share below 1;
Madry et al., 2018 for the whole batch with PGD). `fgsm-rs`, FGSM from a
random start (Wong et al., 2020), reaches PGD training's robustness at about
two gradient passes per step, against PGD's steps + 1.

The attack sees the model in inference mode (BatchNorm moving statistics, no
dropout), the model that is deployed; the weights then train on the mixed
batch as usual. Each epoch, history.json records `robust_accuracy`: accuracy
on a fixed validation sample under PGD at the training radius.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from pipeline import attacks
from pipeline.errors import UsageError, choice_error
from pipeline.protections.base import Protection

log = logging.getLogger(__name__)

# Radii to train at, in [0, 1] pixel scale. MNIST-like: 0.1, the smaller of the two evaluated
# radii, because an MLP trained at 0.3 loses several points of clean accuracy (Madry et al.
# reach 0.3 with a CNN); CIFAR-10: 8/255, the radius of Madry et al.
DEFAULT_EPS_MNIST_LIKE = 0.1
DEFAULT_EPS_CIFAR10 = 8 / 255
DEFAULT_TRAIN_PGD_STEPS = 7  # "PGD-7", the common training attack (Madry et al. on CIFAR-10)

# Per-epoch robust accuracy: a cheap PGD on a fixed validation sample.
EPOCH_ROBUST_SAMPLES = 256
EPOCH_ROBUST_PGD_STEPS = 10
# A fall of this much in per-epoch robust accuracy is FGSM training's "catastrophic
# overfitting" (Wong et al., 2020): the model stops being robust to PGD.
CATASTROPHIC_DROP = 0.2


@dataclasses.dataclass(frozen=True)
class AdversarialOptions:
    """How adversarial examples are crafted for training.

    Attributes:
      attack: "fgsm", "fgsm-rs" (FGSM from a random start, step 1.25 * eps) or "pgd".
      adv_eps: L-infinity radius in [0, 1] pixel scale, in (0, 1]; larger buys robustness
        at larger radii and costs clean accuracy.
      adv_ratio: share of each training batch replaced by adversarial examples, in (0, 1]
        (PROT=adv); share of the training set given an adversarial copy (PROT=adv-retrain).
      pgd_steps: PGD's gradient steps, >= 1 (attack "pgd" only); cost grows as steps + 1.
      pgd_step_size: PGD's step, in (0, adv_eps]; None uses 2.5 * adv_eps / pgd_steps.
      retrain_epochs: epochs of the retraining phase (PROT=adv-retrain only), >= 1;
        None uses a fifth of the training epochs, at least 1.
    """

    attack: str = "fgsm-rs"
    adv_eps: float = DEFAULT_EPS_MNIST_LIKE
    adv_ratio: float = 1.0
    pgd_steps: int | None = None
    pgd_step_size: float | None = None
    retrain_epochs: int | None = None

    def __post_init__(self):
        if self.attack not in attacks.ATTACKS:
            raise choice_error("attack", self.attack, attacks.ATTACKS)
        if not 0 < self.adv_eps <= 1:
            raise UsageError(
                f"Expected 0 < adv_eps <= 1 (pixel scale [0, 1]), got adv_eps={self.adv_eps}"
            )
        if not 0 < self.adv_ratio <= 1:
            raise UsageError(f"Expected 0 < adv_ratio <= 1, got adv_ratio={self.adv_ratio}")
        if self.attack != "pgd":
            for name in ("pgd_steps", "pgd_step_size"):
                if getattr(self, name) is not None:
                    raise UsageError(
                        f"{name} applies to ATTACK=pgd, not ATTACK={self.attack}; drop it"
                    )
        else:
            attacks.check_pgd(self.adv_eps, self.steps, self.pgd_step_size)
        if self.retrain_epochs is not None and self.retrain_epochs < 1:
            raise UsageError(
                f"Expected retrain_epochs >= 1, got retrain_epochs={self.retrain_epochs}"
            )

    @classmethod
    def for_dataset(cls, dataset: str, **given) -> AdversarialOptions:
        """Options with the data set's default radius where `adv_eps` is not given."""
        from pipeline import data

        spec = data.get_spec(dataset)
        if given.get("adv_eps") is None:
            given["adv_eps"] = DEFAULT_EPS_MNIST_LIKE if spec.mnist_like else DEFAULT_EPS_CIFAR10
        return cls(**{k: v for k, v in given.items() if v is not None})

    @property
    def steps(self) -> int:
        return self.pgd_steps if self.pgd_steps is not None else DEFAULT_TRAIN_PGD_STEPS

    @property
    def step_size(self) -> float | None:
        if self.attack != "pgd":
            return None
        if self.pgd_step_size is not None:
            return self.pgd_step_size
        return min(2.5 * self.adv_eps / self.steps, self.adv_eps)

    @property
    def random_start(self) -> bool:
        return self.attack in ("fgsm-rs", "pgd")

    def attack_kwargs(self) -> dict:
        """Keyword arguments of pipeline.attacks.craft for this attack."""
        if self.attack == "pgd":
            return {"steps": self.steps, "step_size": self.step_size}
        return {}

    def describe(self) -> dict:
        """The metrics.json["protection"] entry."""
        return {
            "attack": self.attack,
            "adv_eps": self.adv_eps,
            "adv_ratio": self.adv_ratio,
            "pgd_steps": self.steps if self.attack == "pgd" else None,
            "pgd_step_size": self.step_size,
            "random_start": self.random_start,
        }


_OPTIONS = (
    ("--attack", {"help": f"training attack: {', '.join(attacks.ATTACKS)} (default fgsm-rs)"}),
    (
        "--adv-eps",
        {"type": float, "help": "L-inf radius, pixel scale [0,1] (default 0.1; cifar10 8/255)"},
    ),
    ("--adv-ratio", {"type": float, "help": "share of adversarial examples, (0, 1] (default 1)"}),
    ("--pgd-steps", {"type": int, "help": f"PGD steps (default {DEFAULT_TRAIN_PGD_STEPS})"}),
    ("--pgd-step-size", {"type": float, "help": "PGD step (default 2.5 * adv_eps / pgd_steps)"}),
)


def add_shared_arguments(group) -> None:
    """Adds the attack options, or shares them with a group that added them first.

    PROT=adv and PROT=adv-retrain take the same options; listing the action in
    both groups lets the command line accept them for either protection.
    """
    for flag, kwargs in _OPTIONS:
        existing = group._option_string_actions.get(flag)
        if existing is not None:
            group._group_actions.append(existing)
        else:
            group.add_argument(flag, default=None, **kwargs)


def options_from_args(args) -> AdversarialOptions:
    """Options from parsed arguments; unset ones take their (data set's) defaults."""
    names = ("attack", "adv_eps", "adv_ratio", "pgd_steps", "pgd_step_size", "retrain_epochs")
    return AdversarialOptions.for_dataset(
        args.dataset, **{k: getattr(args, k, None) for k in names}
    )


def epoch_robust_accuracy(model, splits, options: AdversarialOptions) -> float:
    """Accuracy on a fixed validation sample under PGD at the training radius."""
    n = min(EPOCH_ROBUST_SAMPLES, len(splits.x_val))
    x, y = splits.x_val[:n], splits.y_val[:n]
    lo, hi = splits.preprocessing.value_range
    x_adv = attacks.adversarial_examples(
        model,
        x,
        y,
        "pgd",
        options.adv_eps,
        steps=EPOCH_ROBUST_PGD_STEPS,
        clip_min=lo,
        clip_max=hi,
    )
    logits = model.predict(x_adv, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, 1) == y))


class RobustnessLog:
    """Per-epoch robust accuracy, with a warning when it collapses."""

    def __init__(self):
        self.best = 0.0
        self.warned = False

    def record(self, robust_accuracy: float) -> dict:
        self.best = max(self.best, robust_accuracy)
        if not self.warned and robust_accuracy < self.best - CATASTROPHIC_DROP:
            self.warned = True
            log.warning(
                "robust accuracy fell from %.3f to %.3f: catastrophic overfitting of one-step "
                "adversarial training; use ATTACK=pgd or a smaller ADV_EPS",
                self.best,
                robust_accuracy,
            )
        return {"robust_accuracy": robust_accuracy}


def adversarial_training_model(base, options: AdversarialOptions, value_range=(0.0, 1.0)):
    """A model over `base`'s layers whose train_step trains on adversarial examples."""
    import tensorflow as tf

    attacks.load_cleverhans()

    class AdversarialTraining(tf.keras.Model):
        def train_step(self, data):
            x, y = data
            if options.adv_ratio >= 1:
                x = self._adversarial(x, y)
            else:
                # The first share of the (shuffled) batch is replaced.
                batch = tf.cast(tf.shape(x)[0], tf.float32)
                n_adv = tf.cast(tf.math.round(options.adv_ratio * batch), tf.int32)
                x = tf.concat([self._adversarial(x[:n_adv], y[:n_adv]), x[n_adv:]], axis=0)
            return super().train_step((x, y))

        def _adversarial(self, x, y):
            adv = attacks.craft(
                self._inference_logits,
                x,
                y,
                options.attack,
                options.adv_eps,
                clip_min=value_range[0],
                clip_max=value_range[1],
                **options.attack_kwargs(),
            )
            return tf.stop_gradient(adv)

        def _inference_logits(self, inputs):
            return self(inputs, training=False)

    return AdversarialTraining(inputs=base.inputs, outputs=base.outputs, name=base.name)


class AdversarialTrainingProtection(Protection):
    """Trains on batches whose share adv_ratio is crafted against the current model."""

    name = "adv"

    def __init__(self, cfg):
        super().__init__(cfg)
        if self.options is None:
            self.options = AdversarialOptions.for_dataset(cfg.dataset)
        if self.options.retrain_epochs is not None:
            raise UsageError("retrain_epochs applies to PROT=adv-retrain, not PROT=adv; drop it")
        self._robustness = RobustnessLog()
        self._splits = None

    @classmethod
    def add_arguments(cls, parser) -> None:
        add_shared_arguments(parser)

    @classmethod
    def options_from_args(cls, args) -> AdversarialOptions:
        return options_from_args(args)

    def prepare_data(self, splits):
        self._splits = splits
        return splits

    def build_model(self, input_shape, num_classes):
        base = super().build_model(input_shape, num_classes)
        lo, hi = self._splits.preprocessing.value_range if self._splits else (0.0, 1.0)
        return adversarial_training_model(base, self.options, (lo, hi))

    def epoch_logs(self, epoch: int, model) -> dict:
        return self._robustness.record(epoch_robust_accuracy(model, self._splits, self.options))

    def metrics(self) -> dict:
        return self.options.describe()


PROTECTION = AdversarialTrainingProtection
