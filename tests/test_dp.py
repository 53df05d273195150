"""DP-SGD: clipping bounds, agreement of the three implementations, accounting, bad input."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import tensorflow as tf

from pipeline import models, runs
from pipeline.config import TrainConfig
from pipeline.dp import accounting, clipping, registry
from pipeline.errors import UsageError, run_cli
from pipeline.protections.dp import DPOptions
from pipeline.train import main, train

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _batch(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, n)


def _per_example_reference(model, x, y):
    """Each example's gradient with its own GradientTape: the direct computation."""
    grads = []
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = LOSS(y[i : i + 1], model(x[i : i + 1], training=True))
        grads.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    return grads


def _norms(grads):
    return np.array([np.sqrt(sum(float(np.sum(g**2)) for g in gs)) for gs in grads])


def _fast(model, clip=1.0, noise=0.0, microbatches=None):
    dp_model = clipping.make_fast_model(model, clip, noise, microbatches)
    dp_model.compile(optimizer=tf.keras.optimizers.SGD(1.0), loss=LOSS)
    return dp_model


def _small_cnn(layer_between=None, strides=1, padding="same"):
    """Conv2D layers in both regimes of the registry: materialised (early) and ghost (late)."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((12, 12, 3))
    x = tf.keras.layers.Conv2D(4, 3, strides=strides, padding=padding, activation="tanh")(inputs)
    if layer_between is not None:
        x = layer_between(x)
    x = tf.keras.layers.MaxPooling2D(2)(x)
    x = tf.keras.layers.Conv2D(64, 3, padding="same", use_bias=False)(x)  # ghost: T small, K*C big
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: models.build("mlp", (8, 8, 1), 10, True, 0), id="mlp-dense"),
        pytest.param(lambda: _small_cnn(), id="conv2d-same"),
        pytest.param(lambda: _small_cnn(strides=2, padding="valid"), id="conv2d-strided-valid"),
        pytest.param(
            lambda: _small_cnn(tf.keras.layers.GroupNormalization(2)), id="group-normalization"
        ),
        pytest.param(
            lambda: _small_cnn(tf.keras.layers.LayerNormalization()), id="layer-normalization"
        ),
    ],
)
def test_per_example_norms_match_a_per_example_gradient_tape(build):
    model = build()
    x, y = _batch(model.input_shape[1:])
    reference = _norms(_per_example_reference(model, x, y))
    _, norms, _ = tf.function(_fast(model).clipped_gradient_sum)(x, y)
    np.testing.assert_allclose(norms.numpy(), reference, rtol=1e-4)


def test_clipped_per_example_gradients_have_norm_at_most_the_clip():
    model = _small_cnn()
    x, y = _batch((12, 12, 3), n=4)
    dp_model = _fast(model, clip=0.05)
    per_example = []
    for i in range(len(x)):  # one example per call: the clipped sum is that example's gradient
        grads, norms, _ = dp_model.clipped_gradient_sum(x[i : i + 1], y[i : i + 1])
        assert float(norms[0]) > 0.05  # clipping is active
        per_example.append([g.numpy() for g in grads])
    assert np.all(_norms(per_example) <= 0.05 * (1 + 1e-5))


def test_clipped_sum_equals_the_sum_of_individually_clipped_reference_gradients():
    model = _small_cnn(tf.keras.layers.GroupNormalization(2))
    x, y = _batch((12, 12, 3))
    reference = _per_example_reference(model, x, y)
    scale = np.minimum(1.0, 0.1 / _norms(reference))
    expected = [
        sum(s * g[k] for s, g in zip(scale, reference, strict=True))
        for k in range(len(reference[0]))
    ]
    grads, _, _ = _fast(model, clip=0.1).clipped_gradient_sum(x, y)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-7)


def _tiny_model():
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.Conv2D(4, 3, activation="tanh")(inputs)
    x = tf.keras.layers.Dense(16, activation="tanh")(tf.keras.layers.Flatten()(x))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))


@functools.cache
def _one_step_update(impl, clip, noise=0.0, microbatches=None):
    """Weight change after one SGD step on a fixed batch of 16 (computed once per setting)."""
    model = _tiny_model()
    x, y = _batch((8, 8, 1), n=16, seed=1)
    if impl == "fast":
        model = _fast(model, clip, noise, microbatches)
    elif impl == "tfp-fast":
        model = clipping.make_tfp_fast_model(model, clip, noise, microbatches)
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0), loss=LOSS)
    elif impl == "optimizer":
        optimizer = clipping.make_optimizer(clip, noise, microbatches, 1.0)
        model.compile(optimizer=optimizer, loss=LOSS.__class__(from_logits=True, reduction="none"))
    else:
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0), loss=LOSS)
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return [a - b for a, b in zip(model.get_weights(), before, strict=True)]


def _assert_same_update(a, b, rtol=1e-5):
    for u, v in zip(a, b, strict=True):
        assert np.linalg.norm(u - v) <= rtol * np.linalg.norm(v) + 1e-9


@pytest.mark.parametrize("microbatches", [None, 4])
def test_fast_and_optimizer_paths_give_the_same_update_without_noise(microbatches):
    fast = _one_step_update("fast", 0.5, microbatches=microbatches)
    _assert_same_update(fast, _one_step_update("optimizer", 0.5, microbatches=microbatches))
    if microbatches is None:
        _assert_same_update(fast, _one_step_update("tfp-fast", 0.5))


def test_without_noise_and_with_an_unbounded_clip_dp_sgd_equals_plain_sgd():
    plain = _one_step_update("plain", 1e9)
    _assert_same_update(_one_step_update("fast", 1e9), plain)
    _assert_same_update(_one_step_update("optimizer", 1e9), plain)


def test_noise_has_the_configured_standard_deviation():
    # Zero clip bound: the clipped sum is 0, so the update is noise / batch size.
    update = _one_step_update("fast", 1e-12, noise=1e12)
    flat = np.concatenate([u.ravel() for u in update])
    # ~2,500 weights: the sample std is within 5% (3.5 standard errors) of the true one.
    assert np.std(flat) == pytest.approx(1e-12 * 1e12 / 16, rel=0.05)


def test_a_trainable_layer_without_registry_function_is_refused_by_name():
    inputs = tf.keras.Input((8, 8, 1))
    x = tf.keras.layers.DepthwiseConv2D(3, name="depthwise_odd")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(x)))
    with pytest.raises(UsageError, match="'depthwise_odd' \\(DepthwiseConv2D\\)"):
        clipping.make_fast_model(model, 1.0, 1.0)
    shared = tf.keras.layers.Dense(64, name="shared_dense")
    inputs = tf.keras.Input((64,))
    twice = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(shared(shared(inputs))))
    with pytest.raises(UsageError, match="'shared_dense' \\(Dense\\) is called more than once"):
        clipping.make_fast_model(twice, 1.0, 1.0)
    with pytest.raises(UsageError, match="'bn1_1' \\(BatchNormalization\\)"):
        clipping.make_fast_model(models.build("cnn", (32, 32, 3), 10, False, 0), 1.0, 1.0)


def test_epsilon_matches_a_direct_dp_accounting_computation():
    import dp_accounting
    from dp_accounting import pld, rdp

    q, sigma, steps, delta = 0.02, 1.1, 200, 1e-5
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    direct_rdp = rdp.RdpAccountant().compose(event).get_epsilon(delta)
    direct_pld = (
        pld.PLDAccountant(value_discretization_interval=accounting.PLD_DISCRETIZATION)
        .compose(event)
        .get_epsilon(delta)
    )
    spent = accounting.privacy_spent(q, sigma, steps, delta)
    assert spent.epsilon_rdp == pytest.approx(direct_rdp, rel=1e-9)
    assert spent.epsilon_pld == pytest.approx(direct_pld, rel=1e-9)
    assert spent.epsilon == min(direct_rdp, direct_pld)
    assert spent.accountant == ("pld" if direct_pld < direct_rdp else "rdp")


@pytest.mark.parametrize("target", [0.5, 3.0])
def test_noise_computed_for_a_target_epsilon_lands_within_1_percent(target):
    q, steps, delta = 0.05, 100, 1e-5
    sigma = accounting.noise_for_epsilon(target, q, steps, delta)
    eps = accounting.privacy_spent(q, sigma, steps, delta).epsilon
    assert target * 0.99 <= eps <= target


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--l2-norm-clip", "-1"], "Expected l2_norm_clip > 0, got l2_norm_clip=-1.0"),
        (["--noise-multiplier", "0", "--epsilon", "3"], "noise_multiplier=0 gives no privacy"),
        (["--noise-multiplier", "-0.5"], "Expected noise_multiplier >= 0"),
        (["--epsilon", "0"], "Expected epsilon > 0"),
        (["--delta", "0.01"], "Expected delta < 1/N"),
        (
            ["--dp-impl", "magic"],
            "unknown DP_IMPL 'magic'; choose one of: fast, optimizer, tfp-fast",
        ),
        (["--sampling", "random"], "unknown SAMPLING 'random'"),
        (["--sampling", "poisson", "--microbatches", "4"], "MICROBATCHES needs fixed-size"),
        (["--microbatches", "5"], "MICROBATCHES=5 must divide BATCH_SIZE=128"),
        (["--epsilon", "1e-6"], "out of reach"),
    ],
)
def test_bad_dp_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    assert run_cli(main, ["--prot", "dp", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before a run folder is written


def test_dp_options_are_refused_for_another_protection(capsys, tmp_path):
    assert run_cli(main, ["--prot", "none", "--epsilon", "3", "--out", str(tmp_path)]) == 2
    assert "applies to PROT=dp" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    cfg = TrainConfig(
        dataset="digits",
        prot="dp",
        epochs=3,
        out=str(out),
        evaluations=("none",),
        options=DPOptions(epsilon=2.0, sampling="poisson"),
    )
    return cfg, train(cfg)


def test_short_dp_run_records_growing_epsilon_per_epoch_up_to_the_target(dp_run):
    cfg, metrics = dp_run
    history = runs.read_json(cfg.run_dir / runs.HISTORY_FILE)["epochs"]
    eps = [e["epsilon"] for e in history]
    assert len(eps) == 3 and eps[0] < eps[1] < eps[2]
    p = metrics["protection"]
    assert eps[-1] == pytest.approx(p["epsilon"]) and 1.98 <= p["epsilon"] <= 2.0
    assert p["sampling"] == "poisson" and p["epsilon_is_approximation"] is False
    assert p["delta"] == 1e-5 and p["l2_norm_clip"] == 1.0 and p["impl"] == "fast"
    assert p["epsilon"] == min(p["epsilon_rdp"], p["epsilon_pld"])
    assert metrics["test_accuracy"] > 0.5  # learns despite the noise


def test_dp_run_deploys_a_plain_model_that_reproduces_its_accuracy(dp_run):
    cfg, metrics = dp_run
    model = tf.keras.models.load_model(cfg.run_dir / runs.MODEL_FILE)
    assert not isinstance(model, clipping.FastDPModel) and model.name == "mlp_dp"
    from pipeline import data

    splits = data.load("digits")
    acc = np.mean(np.argmax(model.predict(splits.x_test, verbose=0), 1) == splits.y_test)
    assert acc == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_shuffled_batches_mark_epsilon_as_an_approximation(tmp_path, caplog):
    cfg = TrainConfig(
        dataset="digits",
        prot="dp",
        epochs=1,
        out=str(tmp_path),
        evaluations=("none",),
        train_samples=400,
    )
    with caplog.at_level("WARNING"):
        metrics = train(cfg)
    assert metrics["protection"]["epsilon_is_approximation"] is True
    assert "approximation" in caplog.text
    saved = json.loads((cfg.run_dir / runs.METRICS_FILE).read_text())
    assert saved["protection"]["noise_multiplier"] == 1.1


def test_registry_covers_every_trainable_layer_of_the_dp_ready_models():
    reg = registry.make_registry()
    registry.check_model(models.build("mlp", (28, 28, 1), 10, True, 0), reg)
    registry.check_model(models.build("cnn", (32, 32, 3), 10, True, 0), reg)
