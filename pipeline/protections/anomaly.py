"""`anomaly`: drop the training records a filter scores as critical, then train on the rest.

  python -m pipeline.train --dataset mnist --prot anomaly --inject out-of-distribution
  make train DATASET=digits PROT=anomaly FEATURES=embedding INJECT=label-flip INJECT_RATE=0.05

Filters (`--filter`):
- `isolation-forest`: class-conditional IsolationForest (pipeline.filtering.isolation) on
  pixels after a PCA or on the embeddings of a briefly trained model.
- `privacy`: each record's exposure to membership inference from paired reference
  models (pipeline.filtering.exposure); the most exposed are dropped.
Either drops the CONTAMINATION share with the highest scores (or, for the
isolation forest, every record above SCORE_THRESHOLD). `--inject` first plants
critical records (pipeline.injection), so that detection precision and recall
can be measured; an unfiltered model trained on the same poisoned data with the
same epochs and seed is the comparison for clean and robust accuracy (and, for
the privacy filter, membership inference).

Files in the run folder's anomaly/: removed.json (removed indices and scores),
removed.png (a grid of removed records), state.npz (planted records and all
scores, which a resumed run reuses), unfiltered.json (the comparison model's figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import numpy as np

from pipeline import attacks, data, injection, ood, runs
from pipeline.errors import UsageError, choice_error
from pipeline.filtering import exposure, features, gallery, isolation
from pipeline.protections.base import Protection

log = logging.getLogger(__name__)

FILTERS = ("isolation-forest", "privacy")
COMPARISONS = ("unfiltered", "none")
DEFAULT_CONTAMINATION = 0.05
DEFAULT_INJECT_RATE = 0.05
ROBUST_ATTACK = "fgsm"
ROBUST_EPS = 0.1  # of the [0, 1] input range
ROBUST_SAMPLES = 1000  # test images attacked per model

FOLDER = "anomaly"
REMOVED_FILE = "removed.json"
GRID_FILE = "removed.png"
STATE_FILE = "state.npz"
UNFILTERED_FILE = "unfiltered.json"


@dataclasses.dataclass(frozen=True)
class AnomalyOptions:
    """Settings of PROT=anomaly; None fields take the defaults that fit the other settings.

    Attributes:
      filter: "isolation-forest" or "privacy".
      features: "pixels" or "embedding" (isolation-forest only); embeddings separate
        critical from natural inputs better and cost a brief training.
      contamination: share of the training set to drop, in (0, 0.5]; 0.05 unless
        score_threshold is given. Set it above the share you expect to be critical:
        at equal shares, precision and recall are equal and rarely both high.
      score_threshold: drop records whose isolation score exceeds it, in (0, 1);
        0.5 is Liu et al.'s line between ordinary and anomalous.
      n_estimators: trees per class forest, >= 1 (25); more trees score more steadily.
      inject: critical records to plant before filtering, one of injection.INJECT_KINDS.
      inject_rate: share of the training set planted, in (0, 0.5]; 0.05 when inject is set.
      ood_source: images for inject=out-of-distribution, one of ood.OOD_SOURCES.
      brief_epochs: epochs of the briefly trained models (embeddings, the adversarial
        surrogate, the privacy filter's reference models), >= 1.
      reference_models: models of the privacy filter, even and >= 2; more cost more
        and score exposure more steadily.
      compare: "unfiltered" trains the comparison model (doubling training time), "none" not.
    """

    filter: str = "isolation-forest"
    features: str | None = None
    contamination: float | None = None
    score_threshold: float | None = None
    n_estimators: int | None = None
    inject: str = "none"
    inject_rate: float | None = None
    ood_source: str = "auto"
    brief_epochs: int = 3
    reference_models: int | None = None
    compare: str = "unfiltered"

    def __post_init__(self):
        if self.filter not in FILTERS:
            raise choice_error("filter", self.filter, FILTERS)
        if self.filter == "privacy":
            for name in ("features", "score_threshold", "n_estimators"):
                if getattr(self, name) is not None:
                    raise UsageError(f"{name.upper()} applies to FILTER=isolation-forest only")
        elif self.reference_models is not None:
            raise UsageError("REFERENCE_MODELS applies to FILTER=privacy only")
        if self.contamination is not None and self.score_threshold is not None:
            raise UsageError("give CONTAMINATION or SCORE_THRESHOLD, not both")
        if self.contamination is not None and not 0 < self.contamination <= 0.5:
            raise UsageError(
                f"Expected 0 < contamination <= 0.5, got contamination={self.contamination}"
            )
        if self.score_threshold is not None and not 0 < self.score_threshold < 1:
            raise UsageError(
                f"Expected 0 < score_threshold < 1, got score_threshold={self.score_threshold}"
            )
        if self.ood_source not in ood.OOD_SOURCES:
            raise choice_error("out-of-distribution source", self.ood_source, ood.OOD_SOURCES)
        if self.ood_source != "auto" and self.inject != "out-of-distribution":
            raise UsageError("OOD_SOURCE applies to INJECT=out-of-distribution only")
        if self.compare not in COMPARISONS:
            raise choice_error("comparison", self.compare, COMPARISONS)
        if self.brief_epochs < 1:
            raise UsageError(f"Expected brief_epochs >= 1, got brief_epochs={self.brief_epochs}")

        # Resolve the defaults, so config.json records what ran.
        resolved = {}
        if self.filter == "isolation-forest":
            resolved["features"] = self.features or "pixels"
            resolved["n_estimators"] = (
                isolation.DEFAULT_TREES if self.n_estimators is None else self.n_estimators
            )
            if resolved["features"] not in features.FEATURE_KINDS:
                raise choice_error("feature kind", resolved["features"], features.FEATURE_KINDS)
            if resolved["n_estimators"] < 1:
                raise UsageError(
                    f"Expected n_estimators >= 1, got n_estimators={resolved['n_estimators']}"
                )
        else:
            resolved["reference_models"] = self.reference_models or 4
            if resolved["reference_models"] < 2 or resolved["reference_models"] % 2:
                raise UsageError(
                    "Expected an even reference_models >= 2, "
                    f"got reference_models={resolved['reference_models']}"
                )
        if self.score_threshold is None and self.contamination is None:
            resolved["contamination"] = DEFAULT_CONTAMINATION
        if self.inject_rate is None:
            resolved["inject_rate"] = DEFAULT_INJECT_RATE if self.inject != "none" else 0.0
        for name, value in resolved.items():
            object.__setattr__(self, name, value)
        injection.check(self.inject, self.inject_rate)


class AnomalyFiltering(Protection):
    """Plants (optionally) and filters critical training records, then trains on the rest."""

    name = "anomaly"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.options = cfg.options if cfg.options is not None else AnomalyOptions()
        self.folder = cfg.run_dir / FOLDER
        self.report: dict = {}

    # --- configuration ----------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--filter", default=None, help=" or ".join(FILTERS))
        parser.add_argument(
            "--features", default=None, help=f"{' or '.join(features.FEATURE_KINDS)} (pixels)"
        )
        parser.add_argument(
            "--contamination", type=float, default=None, help="share dropped, (0, 0.5] (0.05)"
        )
        parser.add_argument(
            "--score-threshold", type=float, default=None, help="drop isolation scores above it"
        )
        parser.add_argument("--n-estimators", type=int, default=None, help="trees per class (25)")
        parser.add_argument(
            "--inject", default=None, help=f"plant {', '.join(injection.INJECT_KINDS)}"
        )
        parser.add_argument(
            "--inject-rate", type=float, default=None, help="share planted, (0, 0.5] (0.05)"
        )
        parser.add_argument("--ood-source", default=None, help=", ".join(ood.OOD_SOURCES))
        parser.add_argument(
            "--brief-epochs", type=int, default=None, help="epochs of the helper models (3)"
        )
        parser.add_argument(
            "--reference-models", type=int, default=None, help="privacy filter's models (4)"
        )
        parser.add_argument("--compare", default=None, help=" or ".join(COMPARISONS))

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> AnomalyOptions:
        given = {
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(AnomalyOptions)
            if getattr(args, f.name, None) is not None
        }
        return AnomalyOptions(**given)

    # --- training steps ---------------------------------------------------

    def prepare_data(self, splits: data.Splits) -> data.Splits:
        opts, cfg = self.options, self.cfg
        state = self._load_state(splits)
        if state is None:
            poisoned, planted = injection.inject(
                splits,
                opts.inject,
                opts.inject_rate,
                cfg.seed,
                cfg.model_name,
                opts.brief_epochs,
                opts.ood_source,
            )
            start = time.perf_counter()
            record_scores = self._scores(poisoned)
            filter_seconds = time.perf_counter() - start
            removed = isolation.select(record_scores, opts.contamination, opts.score_threshold)
            self._save_state(poisoned, planted, record_scores, removed, filter_seconds)
        else:
            poisoned, planted, record_scores, removed, filter_seconds = state
            log.info("resuming with the planted and removed records saved in %s", self.folder)

        self.poisoned, self.planted = poisoned, planted
        self.removed, self.record_scores = removed, record_scores
        self.report = self._detection_report(filter_seconds)
        log.info(
            "%s filter removed %d of %d records (precision %s, recall %s), %.1f s",
            opts.filter,
            len(removed),
            len(poisoned.x_train),
            _fmt(self.report["precision"]),
            _fmt(self.report["recall"]),
            filter_seconds,
        )
        kept = np.setdiff1d(np.arange(len(poisoned.x_train)), removed)
        return poisoned.replace(x_train=poisoned.x_train[kept], y_train=poisoned.y_train[kept])

    def after_fit(self, trainer, model):
        self.report["filtered"] = {
            "test_accuracy": _accuracy(model, self.poisoned.x_test, self.poisoned.y_test),
            "robust_accuracy": _robust_accuracy(model, self.poisoned, self.cfg.seed),
        }
        if self.options.compare == "unfiltered":
            self.report["unfiltered"] = self._unfiltered(trainer)
        return model

    def metrics(self) -> dict:
        return self.report

    # --- filtering ----------------------------------------------------------

    def _scores(self, poisoned: data.Splits) -> np.ndarray:
        opts, cfg, spec = self.options, self.cfg, poisoned.spec
        x, y = poisoned.x_train, poisoned.y_train
        if opts.filter == "privacy":
            return exposure.scores(
                x,
                y,
                cfg.model_name,
                spec.num_classes,
                opts.reference_models,
                opts.brief_epochs,
                cfg.seed,
            )
        feats = features.extract(
            opts.features, x, y, cfg.model_name, spec.num_classes, opts.brief_epochs, cfg.seed
        )
        return isolation.scores(feats, y, opts.n_estimators, cfg.seed)

    def _detection_report(self, filter_seconds: float) -> dict:
        opts = self.options
        planted = set(self.planted.indices.tolist())
        caught = sum(int(i) in planted for i in self.removed)
        return {
            "filter": opts.filter.replace("-", "_"),
            "features": opts.features if opts.filter == "isolation-forest" else "exposure",
            "contamination": opts.contamination,
            "score_threshold": opts.score_threshold,
            "n_estimators": opts.n_estimators,
            "reference_models": opts.reference_models,
            "brief_epochs": opts.brief_epochs,
            "removed_count": int(len(self.removed)),
            "training_records": int(len(self.poisoned.x_train)),
            **self.planted.to_dict(),
            "precision": caught / len(self.removed) if len(self.removed) else None,
            "recall": caught / len(planted) if planted else None,
            "clean_lost": int(len(self.removed) - caught),
            "filter_seconds": round(filter_seconds, 3),
            "robustness": _robustness_settings(self.poisoned),
            "files": {
                "removed": f"{FOLDER}/{REMOVED_FILE}",
                "grid": f"{FOLDER}/{GRID_FILE}",
            },
        }

    # --- the comparison model -------------------------------------------------

    def _unfiltered(self, trainer) -> dict:
        """Trains the same model, seed and epochs on the poisoned data without filtering."""
        path = self.folder / UNFILTERED_FILE
        if path.exists():
            saved = runs.read_json(path)
            # A run resumed with more EPOCHS needs a comparison trained as long.
            if saved.get("epochs") == self.cfg.epochs:
                return saved
        cfg, poisoned = self.cfg, self.poisoned
        start = time.perf_counter()
        with trainer.strategy.scope():
            model = self.build_model(poisoned.spec.image_shape, poisoned.spec.num_classes)
            self.compile(model)
        model.fit(
            data.make_dataset(poisoned.x_train, poisoned.y_train, cfg.batch_size, True, cfg.seed),
            validation_data=data.make_dataset(poisoned.x_val, poisoned.y_val, 1024),
            epochs=cfg.epochs,
            callbacks=[_best_weights_callback()],
            verbose=0,
        )
        result = {
            "test_accuracy": _accuracy(model, poisoned.x_test, poisoned.y_test),
            "robust_accuracy": _robust_accuracy(model, poisoned, cfg.seed),
            "robustness": _robustness_settings(poisoned),
            "training_records": int(len(poisoned.x_train)),
            "epochs": cfg.epochs,
            "train_seconds": round(time.perf_counter() - start, 3),
        }
        if self.options.filter == "privacy":
            # The run's own membership_inference evaluation measures the filtered model.
            from pipeline.evaluations import membership

            result["membership_inference"] = membership.evaluate(model, poisoned, cfg)
        log.info(
            "unfiltered comparison: test accuracy %.4f, robust accuracy %.4f, %.1f s",
            result["test_accuracy"],
            result["robust_accuracy"],
            result["train_seconds"],
        )
        runs.write_json_atomic(path, result)
        return result

    # --- files ----------------------------------------------------------------

    def _save_state(self, poisoned, planted, record_scores, removed, filter_seconds) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".tmp-{STATE_FILE}"
        with open(tmp, "wb") as f:
            np.savez(
                f,
                planted_indices=planted.indices,
                planted_x=poisoned.x_train[planted.indices],
                planted_y=poisoned.y_train[planted.indices],
                scores=record_scores,
                removed=removed,
                filter_seconds=filter_seconds,
                injection_seconds=planted.seconds,
            )
        tmp.replace(self.folder / STATE_FILE)
        (self.folder / UNFILTERED_FILE).unlink(missing_ok=True)  # from an earlier, deleted run

        is_planted = np.isin(removed, planted.indices)
        runs.write_json_atomic(
            self.folder / REMOVED_FILE,
            {
                "filter": self.options.filter,
                "score": "isolation score in (0, 1]"
                if self.options.filter == "isolation-forest"
                else "membership exposure (standard deviations)",
                "indices_are": "positions in the run's training split (pipeline.data.load, seed)",
                "planted_source": planted.source,
                "removed": [
                    {
                        "index": int(i),
                        "score": round(float(record_scores[i]), 6),
                        "label": int(poisoned.y_train[i]),
                        "planted": bool(p),
                    }
                    for i, p in zip(removed, is_planted, strict=True)
                ],
                "planted_indices": planted.indices.tolist(),
            },
        )
        gallery.save_grid(
            self.folder / GRID_FILE,
            poisoned.x_train[removed],
            poisoned.y_train[removed],
            record_scores[removed],
            is_planted,
            poisoned.spec.class_names,
            title=f"{len(removed)} removed by {self.options.filter}, highest score first; "
            "red: planted",
        )

    def _load_state(self, splits: data.Splits):
        """The saved planted and removed records of this run, when it is being resumed."""
        path = self.folder / STATE_FILE
        # config.json is written after prepare_data and checked before: it marks a resumption.
        if not (path.exists() and (self.cfg.run_dir / runs.CONFIG_FILE).exists()):
            return None
        with np.load(path) as npz:
            x, y = splits.x_train.copy(), splits.y_train.copy()
            indices = npz["planted_indices"]
            x[indices], y[indices] = npz["planted_x"], npz["planted_y"]
            planted = injection.Injection(
                self.options.inject,
                self.options.inject_rate,
                indices,
                runs.read_json(self.folder / REMOVED_FILE)["planted_source"],
                float(npz["injection_seconds"]),
            )
            return (
                splits.replace(x_train=x, y_train=y),
                planted,
                npz["scores"],
                npz["removed"],
                float(npz["filter_seconds"]),
            )


def _accuracy(model, x, y) -> float:
    logits = model.predict(x, batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, 1) == y))


def _robustness_settings(splits: data.Splits) -> dict:
    samples = min(ROBUST_SAMPLES, len(splits.x_test))
    return {"attack": ROBUST_ATTACK, "eps": ROBUST_EPS, "samples": samples}


def _robust_accuracy(model, splits: data.Splits, seed: int) -> float:
    """Accuracy on FGSM examples (eps ROBUST_EPS) of a seeded sample of the test split."""
    n = min(ROBUST_SAMPLES, len(splits.x_test))
    pick = np.random.default_rng(seed).choice(len(splits.x_test), n, replace=False)
    x, y = splits.x_test[pick], splits.y_test[pick]
    x_adv = attacks.adversarial_examples(model, x, y, ROBUST_ATTACK, ROBUST_EPS)
    return _accuracy(model, x_adv, y)


def _best_weights_callback():
    """Keeps the weights of the epoch with the best validation accuracy, as pipeline.train does."""
    import tensorflow as tf

    class BestWeights(tf.keras.callbacks.Callback):
        best, weights = -1.0, None

        def on_epoch_end(self, epoch, logs=None):
            if logs["val_accuracy"] > self.best:
                self.best, self.weights = logs["val_accuracy"], self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.weights is not None:
                self.model.set_weights(self.weights)

    return BestWeights()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


PROTECTION = AnomalyFiltering
