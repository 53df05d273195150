"""PROT=anomaly: what the filter costs against a training epoch, and what it catches per kind.

  python benchmarks/bench_anomaly.py --dataset mnist --data-dir ../shared/data

1. Cost: fitting and scoring the filter on the full training set against one
   non-DP training epoch of the same model (pipeline.models, Adam, batch 128),
   measured side by side in this process; epochs are timed before and after the
   filters (median of epochs 2..3 of each fit, the first traces). Goal: ratio <= 1
   for the isolation-forest filters. The embedding filter's brief training and
   the privacy filter's reference models are shown as well, for what they add.
2. Detection: precision, recall and ROC AUC of the isolation scores against the
   planted set, per injected kind, for pixel and embedding features side by
   side. Out-of-distribution images are Fashion-MNIST where installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import data, injection, models, surrogate  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.filtering import exposure, features, isolation  # noqa: E402

# The shared data folder sits next to the checkout (or next to its worktree folder).
SHARED = next(
    (
        parent / "shared" / "data"
        for parent in Path(__file__).resolve().parents[1:4]
        if (parent / "shared" / "data" / "mnist-t10k.npz").exists()
    ),
    Path("shared/data"),
)
GOAL = 1.0
KINDS = ("out-of-distribution", "noise", "label-flip", "adversarial")


def epoch_seconds(splits, model_name: str, batch_size: int, seed: int) -> list[float]:
    """Epoch times of a plain model.fit on the whole training split, epochs 2 and 3."""
    import tensorflow as tf

    ends: list[float] = []
    model = models.build(model_name, splits.spec.image_shape, splits.spec.num_classes, seed=seed)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stamp = tf.keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: ends.append(time.perf_counter())
    )
    model.fit(
        splits.x_train,
        splits.y_train,
        batch_size=batch_size,
        epochs=3,
        callbacks=[stamp],
        verbose=0,
    )
    return [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]


def filter_costs(splits, args) -> dict[str, float]:
    """Seconds of each filter on the whole training split."""
    x, y, k = splits.x_train, splits.y_train, splits.spec.num_classes
    costs = {}
    # Imports and first calls are left out, as the training epochs leave out tracing.
    isolation.scores(features.project(x[:300].reshape(300, -1)), y[:300], 2, args.seed)

    start = time.perf_counter()
    feats = features.extract("pixels", x, y, args.model, k, args.brief_epochs, args.seed)
    pca_s = time.perf_counter() - start
    isolation.scores(feats, y, args.n_estimators, args.seed)
    costs["isolation forest, pixels (PCA + forests)"] = time.perf_counter() - start
    costs["  of which the PCA"] = pca_s

    start = time.perf_counter()
    model = surrogate.train_brief(x, y, args.model, k, args.brief_epochs, args.seed)
    brief = time.perf_counter() - start
    start = time.perf_counter()
    feats = features.project(surrogate.penultimate(model, x), args.seed)
    isolation.scores(feats, y, args.n_estimators, args.seed)
    costs["isolation forest, embedding (forward pass + PCA + forests)"] = (
        time.perf_counter() - start
    )
    costs[f"  + the embedding model's brief training ({args.brief_epochs} epochs)"] = brief

    start = time.perf_counter()
    exposure.scores(x, y, args.model, k, args.reference_models, args.brief_epochs, args.seed)
    costs[f"privacy ({args.reference_models} reference models x {args.brief_epochs} epochs)"] = (
        time.perf_counter() - start
    )
    return costs


def detection(splits, args) -> list[tuple[str, str, dict]]:
    from sklearn.metrics import roc_auc_score

    rows = []
    k = splits.spec.num_classes
    for kind in filter(None, args.kinds.split(",")):
        poisoned, planted = injection.inject(
            splits, kind, args.inject_rate, args.seed, args.model, args.brief_epochs
        )
        truth = np.isin(np.arange(len(poisoned.x_train)), planted.indices)
        for kind_of_features in features.FEATURE_KINDS:
            feats = features.extract(
                kind_of_features,
                poisoned.x_train,
                poisoned.y_train,
                args.model,
                k,
                args.brief_epochs,
                args.seed,
            )
            record_scores = isolation.scores(feats, poisoned.y_train, args.n_estimators, args.seed)
            removed = isolation.select(record_scores, args.contamination)
            caught = int(truth[removed].sum())
            rows.append(
                (
                    kind,
                    kind_of_features,
                    {
                        "precision": caught / len(removed),
                        "recall": caught / planted.count,
                        "auc": roc_auc_score(truth, record_scores),
                        "source": planted.source,
                    },
                )
            )
            print(
                f"  {kind:20s} {kind_of_features:9s} precision {rows[-1][2]['precision']:.3f}  "
                f"recall {rows[-1][2]['recall']:.3f}  AUC {rows[-1][2]['auc']:.3f}",
                flush=True,
            )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_dir = SHARED if (SHARED / "mnist-t10k.npz").exists() else None
    p.add_argument("--dataset", default="mnist" if default_dir else "digits")
    p.add_argument("--data-dir", default=str(default_dir) if default_dir else None)
    p.add_argument("--model", default="mlp")
    p.add_argument("--inject-rate", type=float, default=0.05)
    p.add_argument("--contamination", type=float, default=0.1)
    p.add_argument("--n-estimators", type=int, default=isolation.DEFAULT_TREES)
    p.add_argument("--brief-epochs", type=int, default=3)
    p.add_argument("--reference-models", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated; empty skips part 2")
    args = p.parse_args(argv)

    splits = data.load(args.dataset, args.data_dir, seed=args.seed)
    print(
        f"data: {args.dataset} ({len(splits.x_train)} training images, {splits.source}), "
        f"model {args.model}, batch {args.batch_size}"
    )
    epochs = epoch_seconds(splits, args.model, args.batch_size, args.seed)
    costs = filter_costs(splits, args)
    epochs += epoch_seconds(splits, args.model, args.batch_size, args.seed)
    epoch_s = statistics.median(epochs)

    print(f"\n1. cost on the full training set; one training epoch {epoch_s * 1000:.0f} ms")
    for name, seconds in costs.items():
        ratio = seconds / epoch_s
        goal = ""
        if name.startswith("isolation forest"):
            goal = f"  (goal <= {GOAL:.2f}: {'met' if ratio <= GOAL else 'MISSED'})"
        print(f"  {name:62s} {seconds * 1000:9.0f} ms  ratio {ratio:6.2f}{goal}")

    print(
        f"\n2. detection at inject rate {args.inject_rate}, contamination {args.contamination}, "
        f"{args.n_estimators} trees per class, embedding after {args.brief_epochs} epochs"
    )
    rows = detection(splits, args)
    print(f"\n  {'kind':20s} {'pixels P / R / AUC':>22s}   {'embedding P / R / AUC':>22s}")
    for kind in dict.fromkeys(r[0] for r in rows):
        cells = {f: m for k, f, m in rows if k == kind}
        print(
            f"  {kind:20s} "
            + "   ".join(
                f"{cells[f]['precision']:6.3f} /{cells[f]['recall']:6.3f} /{cells[f]['auc']:6.3f}"
                for f in features.FEATURE_KINDS
            )
        )
    sources = {r[0]: r[2]["source"] for r in rows}
    for kind, source in sources.items():
        print(f"  {kind}: {source}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
