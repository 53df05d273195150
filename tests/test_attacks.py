import numpy as np
import pytest

from pipeline import attacks, data, runs
from pipeline.errors import UsageError


@pytest.fixture(scope="module")
def plain(digits_run):
    """The unprotected digits MLP and the digits splits."""
    import tensorflow as tf

    run_dir, _ = digits_run
    model = tf.keras.models.load_model(run_dir / runs.MODEL_FILE)
    return model, data.load("digits")


def _accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), 1) == y))


@pytest.mark.parametrize(
    "attack, kw",
    [("fgsm", {}), ("fgsm-rs", {}), ("pgd", {"steps": 5}), ("pgd", {"steps": 1})],
)
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_examples_stay_within_the_eps_ball_and_the_pixel_range(plain, attack, kw, eps):
    model, splits = plain
    x, y = splits.x_test[:100], splits.y_test[:100]
    x_adv = attacks.adversarial_examples(model, x, y, attack, eps, batch_size=64, **kw)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv - x).max() > eps / 2  # it did perturb


def test_fgsm_equals_a_direct_signed_gradient_step(plain):
    import tensorflow as tf

    model, splits = plain
    x, y = splits.x_test[:64], splits.y_test[:64]
    x_t = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(y, model(x_t))
    reference = np.clip(x + 0.1 * np.sign(tape.gradient(loss, x_t).numpy()), 0, 1)
    assert np.allclose(attacks.adversarial_examples(model, x, y, "fgsm", 0.1), reference)


def test_pgd_is_at_least_as_strong_as_fgsm_on_the_same_model(plain):
    model, splits = plain
    x, y = splits.x_test, splits.y_test
    fgsm_acc = _accuracy(model, attacks.adversarial_examples(model, x, y, "fgsm", 0.1), y)
    pgd_acc = _accuracy(model, attacks.adversarial_examples(model, x, y, "pgd", 0.1, steps=10), y)
    clean_acc = _accuracy(model, x, y)
    assert pgd_acc <= fgsm_acc < clean_acc


def test_zero_eps_leaves_inputs_unchanged(plain):
    model, splits = plain
    x, y = splits.x_test[:32], splits.y_test[:32]
    for attack in attacks.ATTACKS:
        assert np.array_equal(attacks.adversarial_examples(model, x, y, attack, 0.0), x)


def test_one_pixel_changes_one_pixel_and_its_successes_are_misclassified(plain):
    model, splits = plain
    x, y = splits.x_test[:8], splits.y_test[:8]
    x_adv, success = attacks.one_pixel(model.predict_on_batch, x, y, 10, 40, seed=0)
    changed_pixels = (np.abs(x_adv - x) > 0).any(axis=-1).reshape(len(x), -1).sum(1)
    assert changed_pixels.max() <= 1
    assert np.all(changed_pixels[success] == 1)
    predicted = np.argmax(model.predict(x_adv, verbose=0), 1)
    assert np.array_equal(predicted != y, success)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


def test_one_pixel_placement_writes_each_candidate_into_its_own_copy():
    image = np.zeros((4, 5, 3), np.float32)
    candidates = np.array([[0.2, 3.9], [4.7, 0.0], [1.0, 0.5], [0.5, 0.5], [0.25, 1.0]])
    images = attacks._place_pixels(image, candidates)
    assert images.shape == (2, 4, 5, 3)
    assert np.allclose(images[0, 0, 4], [1.0, 0.5, 0.25]) and images[0].sum() == 1.75
    assert np.allclose(images[1, 3, 0], [0.5, 0.5, 1.0]) and images[1].sum() == 2.0
    assert image.sum() == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, y: attacks.adversarial_examples(m, x, y, "fgsm", -0.1), "eps >= 0"),
        (lambda m, x, y: attacks.adversarial_examples(m, x, y, "cw", 0.1), "unknown attack 'cw'"),
        (
            lambda m, x, y: attacks.adversarial_examples(m, x, y, "pgd", 0.1, steps=0),
            "pgd_steps >= 1",
        ),
        (
            lambda m, x, y: attacks.adversarial_examples(m, x, y, "pgd", 0.1, step_size=0.5),
            "pgd_step_size <= eps",
        ),
        (lambda m, x, y: attacks.one_pixel(m, x, y, max_iterations=0), "max_iterations >= 1"),
    ],
)
def test_bad_attack_settings_raise_a_usage_error_naming_the_value(plain, call, message):
    model, splits = plain
    with pytest.raises(UsageError, match=message):
        call(model, splits.x_test[:4], splits.y_test[:4])


def test_robustness_evaluation_reports_the_shared_format(plain):
    from pipeline.config import TrainConfig
    from pipeline.evaluations import robustness

    model, splits = plain
    result = robustness.evaluate(model, splits, TrainConfig(dataset="digits"))
    assert result["samples"] == len(splits.x_test)
    assert result["clean_accuracy"] == pytest.approx(_accuracy(model, splits.x_test, splits.y_test))
    pairs = [(a["attack"], a["eps"]) for a in result["attacks"]]
    assert pairs == [("fgsm", 0.1), ("pgd", 0.1), ("fgsm", 0.3), ("pgd", 0.3)]
    for entry in result["attacks"]:
        assert set(entry) == {"attack", "eps", "steps", "accuracy"}
        assert (entry["steps"] is None) == (entry["attack"] == "fgsm")
    by = {(a["attack"], a["eps"]): a["accuracy"] for a in result["attacks"]}
    assert by[("pgd", 0.1)] <= by[("fgsm", 0.1)] < result["clean_accuracy"]
    assert by[("pgd", 0.3)] <= by[("pgd", 0.1)]
    one = result["one_pixel"]
    assert one["samples"] == robustness.QUICK_BUDGET.one_pixel_samples
    assert 0.0 <= one["success_rate"] <= 1.0
