"""Epoch time of pipeline.train against a bare model.fit of the same model and data.

  python benchmarks/bench_train.py --dataset mnist --data-dir ../shared/data --epochs 4

Both are measured in this one process, end of epoch to end of epoch, so the
pipeline's own per-epoch work (test-set evaluation, history, best weights,
checkpoint, TensorBoard) is counted. The first epoch (tracing) is left out.
Goal: ratio at most 1.10.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import data, models, runs  # noqa: E402
from pipeline.config import TrainConfig  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.train import train  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
GOAL = 1.10


def bare_fit_epoch_seconds(cfg: TrainConfig, splits) -> list[float]:
    import tensorflow as tf

    ends: list[float] = []
    model = models.build(
        cfg.model_name, splits.spec.image_shape, splits.spec.num_classes, seed=cfg.seed
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),  # as pipeline.train for PROT=none
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    stamp = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: ends.append(time.time()))
    model.fit(
        splits.x_train,
        splits.y_train,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        validation_data=(splits.x_val, splits.y_val),
        callbacks=[stamp],
        verbose=0,
    )
    return [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]


def pipeline_epoch_seconds(cfg: TrainConfig) -> list[float]:
    train(cfg)
    history = runs.read_json(cfg.run_dir / runs.HISTORY_FILE)["epochs"]
    ends = [e["finished_at"] for e in history]
    return [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_dir = SHARED if (SHARED / "mnist-t10k.npz").exists() else None
    p.add_argument("--dataset", default="mnist" if default_dir else "digits")
    p.add_argument("--data-dir", default=str(default_dir) if default_dir else None)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-samples", type=int, default=None)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            epochs=args.epochs,
            batch_size=args.batch_size,
            train_samples=args.train_samples,
            out=out,
            evaluations=("none",),
        )
        splits = data.load(cfg.dataset, cfg.data_dir, cfg.val_fraction, cfg.seed, cfg.train_samples)
        bare = bare_fit_epoch_seconds(cfg, splits)
        piped = pipeline_epoch_seconds(cfg)
        bare += bare_fit_epoch_seconds(cfg, splits)  # before and after, against drift
    bare_s, piped_s = statistics.median(bare), statistics.median(piped)
    ratio = piped_s / bare_s
    print(
        f"data: {args.dataset} ({len(splits.x_train)} training images), model {cfg.model_name}, "
        f"batch {cfg.batch_size}, {cfg.epochs} epochs, median of epochs 2..{cfg.epochs}"
    )
    print(f"bare model.fit      {bare_s * 1000:9.1f} ms/epoch")
    print(f"pipeline.train      {piped_s * 1000:9.1f} ms/epoch")
    print(
        f"ratio pipeline/bare {ratio:9.3f}  (goal <= {GOAL:.2f}: {'met' if ratio <= GOAL else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
