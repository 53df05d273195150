import json

import numpy as np
import pytest

from pipeline import data, injection, runs
from pipeline.config import TrainConfig
from pipeline.errors import UsageError, run_cli
from pipeline.filtering import exposure, isolation
from pipeline.protections import anomaly
from pipeline.train import main


@pytest.fixture(scope="module")
def ood_run(tmp_path_factory):
    """A digits run with 5% planted letters, filtered at contamination 0.1, and its comparison."""
    out = tmp_path_factory.mktemp("anomaly")
    argv = [
        "--prot",
        "anomaly",
        "--inject",
        "out-of-distribution",
        "--ood-source",
        "letters",
        "--inject-rate",
        "0.05",
        "--contamination",
        "0.1",
        "--n-estimators",
        "50",
        "--epochs",
        "3",
        "--evaluations",
        "none",
        "--out",
        str(out),
    ]
    assert run_cli(main, argv) == 0
    run_dir = out / "digits-anomaly"
    return run_dir, runs.read_json(run_dir / runs.METRICS_FILE)


def _prepare(tmp_path, seed=0, **options):
    cfg = TrainConfig(
        dataset="digits",
        prot="anomaly",
        seed=seed,
        out=str(tmp_path),
        options=anomaly.AnomalyOptions(**options),
    )
    protection = anomaly.AnomalyFiltering(cfg)
    splits = data.load("digits", seed=seed)
    return protection, splits, protection.prepare_data(splits)


def test_planted_out_of_distribution_images_at_5_percent_are_found_with_high_recall(ood_run):
    _, metrics = ood_run
    prot = metrics["protection"]
    assert prot["inject"] == "out-of-distribution" and prot["injected_count"] == 65
    assert prot["inject_source"].startswith("letters")
    assert prot["recall"] >= 0.9
    # Removing 10% to catch 5%: at best half of what is removed is planted.
    assert 0.4 <= prot["precision"] <= 0.5 + 1e-9


def test_metrics_record_detection_and_the_unfiltered_comparison(ood_run):
    run_dir, metrics = ood_run
    prot = metrics["protection"]
    n = prot["training_records"]
    assert prot["removed_count"] == int(0.1 * n)
    assert metrics["data"]["train"] == n - prot["removed_count"]
    caught = round(prot["recall"] * prot["injected_count"])
    assert prot["clean_lost"] == prot["removed_count"] - caught
    for model in ("filtered", "unfiltered"):
        assert 0 <= prot[model]["robust_accuracy"] <= prot[model]["test_accuracy"] <= 1
    assert prot["unfiltered"]["training_records"] == n
    assert prot["robustness"] == {"attack": "fgsm", "eps": 0.1, "samples": 360}  # digits' test set
    assert prot["filtered"]["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert metrics["config"]["options"]["contamination"] == 0.1


def test_removed_indices_scores_and_picture_are_written(ood_run):
    run_dir, metrics = ood_run
    folder = run_dir / anomaly.FOLDER
    removed = json.loads((folder / anomaly.REMOVED_FILE).read_text())
    entries = removed["removed"]
    assert len(entries) == metrics["protection"]["removed_count"]
    scores = [e["score"] for e in entries]
    assert scores == sorted(scores, reverse=True)
    planted = set(removed["planted_indices"])
    assert all(e["planted"] == (e["index"] in planted) for e in entries)
    assert sum(e["planted"] for e in entries) / len(planted) == metrics["protection"]["recall"]
    assert (folder / anomaly.GRID_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(folder.glob(".tmp-*")) and not list(folder.glob(".*.json.*"))


def test_resumed_run_reuses_the_saved_planted_and_removed_records(ood_run):
    run_dir, metrics = ood_run
    cfg = TrainConfig(
        dataset="digits",
        prot="anomaly",
        out=str(run_dir.parent),
        options=anomaly.AnomalyOptions(**runs.read_json(run_dir / runs.CONFIG_FILE)["options"]),
    )
    protection = anomaly.AnomalyFiltering(cfg)
    kept = protection.prepare_data(data.load("digits"))
    saved = [e["index"] for e in runs.read_json(run_dir / "anomaly/removed.json")["removed"]]
    assert protection.removed.tolist() == saved
    assert len(kept.x_train) == metrics["data"]["train"]


@pytest.mark.parametrize("contamination", [0.05, 0.2])
def test_with_nothing_planted_at_most_the_contamination_is_removed(tmp_path, contamination):
    protection, before, after = _prepare(tmp_path, contamination=contamination, n_estimators=25)
    assert len(before.x_train) - len(after.x_train) <= contamination * len(before.x_train)
    report = protection.metrics()
    assert report["injected_count"] == 0 and report["recall"] is None
    assert report["precision"] == 0.0
    assert report["clean_lost"] == report["removed_count"]


def test_score_threshold_removes_exactly_the_records_scoring_above_it():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.3, 0.8, 500)
    removed = isolation.select(scores, threshold=0.6)
    assert set(removed) == set(np.flatnonzero(scores > 0.6))
    assert np.all(np.diff(scores[removed]) <= 0)


def test_filtering_is_reproducible_for_a_fixed_seed_and_changes_with_it(tmp_path):
    options = {"inject": "noise", "inject_rate": 0.05, "n_estimators": 25}
    first, _, a = _prepare(tmp_path / "a", **options)
    second, _, b = _prepare(tmp_path / "b", **options)
    np.testing.assert_array_equal(first.removed, second.removed)
    np.testing.assert_array_equal(first.record_scores, second.record_scores)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    _, other_seed = injection.inject(data.load("digits"), "noise", 0.05, seed=1)
    assert not np.array_equal(first.planted.indices, other_seed.indices)


def test_label_flips_change_every_planted_label_and_nothing_else():
    splits = data.load("digits")
    poisoned, planted = injection.inject(splits, "label-flip", 0.1, seed=3)
    assert planted.count == round(0.1 * len(splits.x_train))
    changed = np.flatnonzero(poisoned.y_train != splits.y_train)
    np.testing.assert_array_equal(changed, planted.indices)
    np.testing.assert_array_equal(poisoned.x_train, splits.x_train)


def test_planted_noise_stays_on_the_raw_pixel_grid_and_in_range():
    splits = data.load("digits")
    poisoned, planted = injection.inject(splits, "noise", 0.2, seed=0)
    x = poisoned.x_train[planted.indices]
    raw = x / splits.preprocessing.scale
    np.testing.assert_allclose(raw, np.round(raw), atol=1e-4)
    assert x.min() >= 0 and x.max() <= 1
    assert not np.allclose(x, splits.x_train[planted.indices])


def test_logit_confidence_matches_log_odds_of_the_softmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (200, 10))
    labels = rng.integers(0, 10, 200)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p_true = p[np.arange(200), labels]
    expected = np.log(p_true) - np.log1p(-p_true)
    np.testing.assert_allclose(exposure.logit_confidence(logits, labels), expected, rtol=1e-9)


def test_flipped_labels_are_scored_more_exposed_to_membership_inference():
    # Mislabeled records are what a model memorises, so training on them moves their
    # confidence most: the records a membership-inference attack finds first.
    splits = data.load("digits")
    poisoned, planted = injection.inject(splits, "label-flip", 0.05, seed=0)
    scores = exposure.scores(
        poisoned.x_train, poisoned.y_train, "mlp", 10, reference_models=2, epochs=8, seed=0
    )
    flipped = np.isin(np.arange(len(scores)), planted.indices)
    assert np.median(scores[flipped]) > np.percentile(scores[~flipped], 75)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--contamination", "0"], "0 < contamination <= 0.5, got contamination=0.0"),
        (["--contamination", "0.6"], "0 < contamination <= 0.5, got contamination=0.6"),
        (["--features", "raw"], "unknown feature kind 'raw'; choose one of: pixels, embedding"),
        (["--inject", "poison"], "unknown inject kind 'poison'; choose one of: none, adversarial"),
        (["--inject", "noise", "--inject-rate", "0.7"], "0 < inject_rate <= 0.5"),
        (["--inject", "noise", "--inject-rate", "0"], "0 < inject_rate <= 0.5"),
        (["--inject-rate", "0.1"], "INJECT_RATE=0.1 needs INJECT=<kind>"),
        (["--filter", "magic"], "unknown filter 'magic'"),
        (["--contamination", "0.1", "--score-threshold", "0.6"], "not both"),
        (["--score-threshold", "1.5"], "0 < score_threshold < 1"),
        (["--filter", "privacy", "--features", "embedding"], "FEATURES applies to FILTER="),
        (["--filter", "privacy", "--reference-models", "3"], "even reference_models >= 2"),
        (["--n-estimators", "0"], "n_estimators >= 1"),
        (["--ood-source", "moon"], "unknown out-of-distribution source 'moon'"),
    ],
)
def test_bad_anomaly_options_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert run_cli(main, ["--prot", "anomaly", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_anomaly_options_are_refused_for_another_protection(capsys, tmp_path):
    assert run_cli(main, ["--features", "pixels", "--out", str(tmp_path)]) == 2
    assert "applies to PROT=anomaly" in capsys.readouterr().err


def test_isolation_select_refuses_contamination_outside_the_range():
    with pytest.raises(UsageError, match="contamination"):
        isolation.select(np.zeros(10), contamination=0.9)
