import json

import numpy as np
import pytest

from pipeline import attacks, data, runs
from pipeline.config import TrainConfig
from pipeline.errors import run_cli
from pipeline.protections.adversarial import AdversarialOptions
from pipeline.train import main, train

EPS = 0.1  # the digits (MNIST-like) training and test radius
EPOCHS = 10


def _pgd_accuracy(model, splits) -> float:
    x, y = splits.x_test, splits.y_test
    x_adv = attacks.adversarial_examples(model, x, y, "pgd", EPS, steps=20)
    return float(np.mean(np.argmax(model.predict(x_adv, verbose=0), 1) == y))


def _load(run_dir):
    import tensorflow as tf

    # No custom objects: the saved model must be a plain functional model.
    return tf.keras.models.load_model(run_dir / runs.MODEL_FILE)


@pytest.fixture(scope="module")
def adv_run(tmp_path_factory):
    """A PROT=adv digits run (FGSM with a random start at eps 0.1), with the robustness evaluation."""
    out = tmp_path_factory.mktemp("adv")
    cfg = TrainConfig(
        dataset="digits",
        prot="adv",
        epochs=EPOCHS,
        out=str(out),
        evaluations=("robustness",),
        options=AdversarialOptions.for_dataset("digits", attack="fgsm-rs"),
    )
    return cfg.run_dir, train(cfg)


def test_adversarial_training_raises_pgd_accuracy_well_above_the_unprotected_model(
    adv_run, digits_run
):
    splits = data.load("digits")
    plain_model, adv_model = _load(digits_run[0]), _load(adv_run[0])
    plain, robust = _pgd_accuracy(plain_model, splits), _pgd_accuracy(adv_model, splits)
    assert robust >= plain + 0.15, (plain, robust)
    # ...while clean accuracy stays usable.
    assert adv_run[1]["test_accuracy"] > 0.90


def test_adv_run_records_its_options_robustness_and_per_epoch_robust_accuracy(adv_run):
    run_dir, metrics = adv_run
    assert metrics["protection"] == {
        "attack": "fgsm-rs",
        "adv_eps": EPS,
        "adv_ratio": 1.0,
        "pgd_steps": None,
        "pgd_step_size": None,
        "random_start": True,
    }
    rob = metrics["robustness"]
    assert {"clean_accuracy", "samples", "attacks", "one_pixel", "seconds"} <= set(rob)
    assert rob["clean_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    history = json.loads((run_dir / runs.HISTORY_FILE).read_text())["epochs"]
    assert len(history) == EPOCHS and all(e["phase"] == "train" for e in history)
    assert all(0.0 <= e["robust_accuracy"] <= 1.0 for e in history)
    assert history[-1]["robust_accuracy"] > history[0]["robust_accuracy"]


def test_adv_ratio_below_one_replaces_that_share_of_each_batch():
    import tensorflow as tf

    from pipeline.protections.adversarial import adversarial_training_model

    seen = []

    class Spy(tf.keras.layers.Layer):
        def call(self, x, training=None):
            seen.append((x, training))
            return x

    inputs = tf.keras.Input((8, 8, 1))
    logits = tf.keras.layers.Dense(10)(Spy()(tf.keras.layers.Flatten()(inputs)))
    options = AdversarialOptions(attack="fgsm", adv_eps=0.25, adv_ratio=0.25)
    model = adversarial_training_model(tf.keras.Model(inputs, logits), options)
    model.compile(optimizer="sgd", loss=tf.keras.losses.SparseCategoricalCrossentropy(True))
    x = np.full((8, 8, 8, 1), 0.5, np.float32)
    model.train_step((tf.constant(x), tf.constant(np.arange(8))))
    trained_on = [t.numpy() for t, training in seen if training][-1]  # (8, 64)
    moved = np.abs(trained_on - 0.5).max(axis=1)
    assert np.allclose(moved, [0.25, 0.25] + [0.0] * 6)


def test_retraining_keeps_both_phases_in_history(tmp_path):
    options = AdversarialOptions.for_dataset("digits", attack="fgsm", retrain_epochs=2)
    cfg = TrainConfig(
        dataset="digits",
        prot="adv-retrain",
        epochs=2,
        out=str(tmp_path),
        evaluations=("none",),
        options=options,
    )
    metrics = train(cfg)
    history = json.loads((cfg.run_dir / runs.HISTORY_FILE).read_text())["epochs"]
    assert [(e["epoch"], e["phase"], e["phase_epoch"]) for e in history] == [
        (1, "train", 1),
        (2, "train", 2),
        (3, "retrain", 1),
        (4, "retrain", 2),
    ]
    assert metrics["epochs_trained"] == 4 and metrics["best_epoch"] in (3, 4)
    assert metrics["protection"]["retrain_epochs"] == 2
    assert metrics["protection"]["adversarial_examples"] == metrics["data"]["train"]
    assert all("robust_accuracy" in e for e in history)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prot", "adv", "--adv-eps", "-0.1"], "Expected 0 < adv_eps <= 1"),
        (["--prot", "adv", "--adv-eps", "0"], "Expected 0 < adv_eps <= 1"),
        (["--prot", "adv", "--attack", "cw"], "unknown attack 'cw'; choose one of: fgsm"),
        (["--prot", "adv", "--attack", "pgd", "--pgd-steps", "0"], "pgd_steps >= 1"),
        (
            ["--prot", "adv-retrain", "--attack", "pgd", "--pgd-step-size", "0.5"],
            "pgd_step_size <= eps",
        ),
        (["--prot", "adv", "--pgd-steps", "5"], "pgd_steps applies to ATTACK=pgd"),
        (["--prot", "adv", "--adv-ratio", "1.5"], "0 < adv_ratio <= 1"),
        (["--prot", "adv", "--retrain-epochs", "3"], "applies to PROT=adv-retrain"),
        (["--prot", "adv-retrain", "--retrain-epochs", "0"], "retrain_epochs >= 1"),
        (["--prot", "none", "--attack", "pgd"], "applies to PROT=adv"),
    ],
)
def test_bad_adversarial_options_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert run_cli(main, [*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before any run folder was made


def test_dataset_defaults_are_the_literature_radii():
    assert AdversarialOptions.for_dataset("mnist").adv_eps == 0.1
    assert AdversarialOptions.for_dataset("digits").adv_eps == 0.1
    assert AdversarialOptions.for_dataset("cifar10").adv_eps == pytest.approx(8 / 255)
    assert attacks.dataset_epsilons(data.get_spec("cifar10")) == (8 / 255,)
    assert attacks.dataset_epsilons(data.get_spec("fashion_mnist")) == (0.1, 0.3)
