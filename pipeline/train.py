"""Trains one model with one protection (or none) and writes a run folder.

  python -m pipeline.train --dataset mnist --prot none --epochs 50
  make train DATASET=mnist PROT=none EPOCHS=50

A run folder, runs/<dataset>-<prot>/, holds the best model by validation
accuracy (model.keras and saved_model/), history.json (one entry per epoch),
metrics.json (final figures, configuration, machine), TensorBoard logs and a
checkpoint. Started again with the same arguments, an interrupted run resumes
from its last completed epoch; a finished one is not trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline import data, evaluations, protections, runs
from pipeline.config import RESUMABLE_CHANGES, STRATEGIES, TrainConfig
from pipeline.errors import OneLineParser, UsageError, run_cli

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1024


def configure_strategy(cfg: TrainConfig):
    """The tf.distribute strategy; must run before TensorFlow touches a device."""
    import tensorflow as tf

    if cfg.strategy == "default":
        return tf.distribute.get_strategy()
    if cfg.strategy == "multiworker":
        # Hosts and this worker's index come from the TF_CONFIG environment variable.
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not tf.config.list_physical_devices("GPU"):
        # No GPU: mirror over logical CPU devices, which exercises the same code path.
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration()] * cfg.replicas
            )
        except RuntimeError:
            if len(tf.config.list_logical_devices("CPU")) < cfg.replicas:
                raise UsageError(
                    "--strategy mirrored must be set before TensorFlow starts; "
                    "run it in a fresh process"
                ) from None
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][: cfg.replicas]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.MirroredStrategy()


class Trainer:
    """Runs training phases with per-epoch history, checkpoints and best-epoch selection."""

    def __init__(self, cfg: TrainConfig, protection, splits: data.Splits, strategy):
        self.cfg = cfg
        self.protection = protection
        self.splits = splits
        self.strategy = strategy
        self.run_dir = cfg.run_dir
        self.history: list[dict] = self._load_history()
        self.extra_callbacks: list = []

    # --- history -----------------------------------------------------------

    def _load_history(self) -> list[dict]:
        path = self.run_dir / runs.HISTORY_FILE
        return runs.read_json(path)["epochs"] if path.exists() else []

    def _write_history(self) -> None:
        runs.write_json_atomic(
            self.run_dir / runs.HISTORY_FILE, {"run": self.run_dir.name, "epochs": self.history}
        )

    def phase_epochs(self, phase: str) -> list[dict]:
        return [e for e in self.history if e["phase"] == phase]

    # --- training ------------------------------------------------------------

    def fit_phase(self, model, phase: str, epochs: int, train_ds=None):
        """Trains `model` for `epochs` in `phase`, resuming if a checkpoint exists.

        Returns the model with the weights of the phase's best epoch by validation accuracy.
        """
        import tensorflow as tf

        ckpt_dir = self.run_dir / runs.CHECKPOINT_DIR / phase
        best_path = self.run_dir / f"best-{phase}.weights.npz"
        ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir), max_to_keep=1)

        done = 0
        if manager.latest_checkpoint:
            _build_optimizer(model)
            ckpt.restore(manager.latest_checkpoint).expect_partial()
            done = int(manager.latest_checkpoint.rsplit("-", 1)[1])
            log.info("%s: resuming phase %s after epoch %d", self.run_dir.name, phase, done)
        # Entries written after the last checkpoint belong to an epoch that will run again.
        kept = self.phase_epochs(phase)[:done]
        self.history = [e for e in self.history if e["phase"] != phase] + kept
        self._write_history()
        if done >= epochs:
            log.info("%s: phase %s already complete", self.run_dir.name, phase)
        else:
            train_ds = (
                train_ds if train_ds is not None else self.protection.train_dataset(self.splits)
            )
            val_ds = data.make_dataset(self.splits.x_val, self.splits.y_val, EVAL_BATCH_SIZE)
            recorder = _EpochRecorder(self, model, phase, epochs, manager, best_path)
            callbacks = [recorder, *self.extra_callbacks]
            callbacks.append(
                tf.keras.callbacks.TensorBoard(
                    str(self.run_dir / runs.TENSORBOARD_DIR / phase),
                    write_graph=False,
                    profile_batch=0,
                )
            )
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=epochs,
                initial_epoch=done,
                callbacks=callbacks,
                verbose=1 if sys.stdout.isatty() else 0,
            )
        if best_path.exists():
            with np.load(best_path) as npz:
                model.set_weights([npz[f"w{i}"] for i in range(len(npz.files))])
        return model


class _EpochRecorder:
    """Keras callback: test accuracy, history entry, best weights, checkpoint, one log line."""

    def __new__(cls, *args, **kwargs):
        # Built lazily so that importing this module does not import TensorFlow.
        import tensorflow as tf

        class Recorder(tf.keras.callbacks.Callback):
            def __init__(self, trainer, model, phase, epochs, manager, best_path):
                super().__init__()
                self.trainer, self.phase, self.epochs = trainer, phase, epochs
                self.manager, self.best_path = manager, best_path
                self.test_ds = data.make_dataset(
                    trainer.splits.x_test, trainer.splits.y_test, EVAL_BATCH_SIZE
                )
                previous = [e["val_accuracy"] for e in trainer.phase_epochs(phase)]
                self.best_val = max(previous, default=-1.0)
                self.train_model = model

            def on_epoch_begin(self, epoch, logs=None):
                self.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                epoch_seconds = time.perf_counter() - self.start
                model = self.train_model
                start = time.perf_counter()
                test_loss, test_acc = model.evaluate(self.test_ds, verbose=0)[:2]
                entry = {
                    "epoch": len(self.trainer.history) + 1,
                    "phase": self.phase,
                    "phase_epoch": epoch + 1,
                    "loss": float(logs["loss"]),
                    "accuracy": float(logs.get("accuracy", float("nan"))),
                    "val_loss": float(logs["val_loss"]),
                    "val_accuracy": float(logs["val_accuracy"]),
                    "test_loss": float(test_loss),
                    "test_accuracy": float(test_acc),
                    "epoch_seconds": round(epoch_seconds, 4),
                    "eval_seconds": round(time.perf_counter() - start, 4),
                    "finished_at": time.time(),
                }
                entry.update(self.trainer.protection.epoch_logs(epoch, model))
                logs["test_accuracy"] = test_acc  # for TensorBoard

                # Order matters for resumption: best weights, then history, then checkpoint.
                if entry["val_accuracy"] > self.best_val:
                    self.best_val = entry["val_accuracy"]
                    _save_weights_atomic(model, self.best_path)
                self.trainer.history.append(entry)
                self.trainer._write_history()
                self.manager.save(checkpoint_number=epoch + 1)
                log.info(
                    "%s epoch %d/%d: loss %.4f, acc %.4f, val_acc %.4f, test_acc %.4f, %.1f s%s",
                    self.phase,
                    epoch + 1,
                    self.epochs,
                    entry["loss"],
                    entry["accuracy"],
                    entry["val_accuracy"],
                    entry["test_accuracy"],
                    epoch_seconds,
                    "".join(
                        f", {k} {v:.4g}"
                        for k, v in entry.items()
                        if k not in _LOGGED and isinstance(v, float)
                    ),
                )

        return Recorder(*args, **kwargs)


_LOGGED = {
    "finished_at",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "epoch_seconds",
    "eval_seconds",
}


def _build_optimizer(model) -> None:
    # Keras optimizers create their slots lazily; build them so a checkpoint restores them.
    optimizer = model.optimizer
    if hasattr(optimizer, "build") and not getattr(optimizer, "_built", True):
        optimizer.build(model.trainable_variables)


def _save_weights_atomic(model, path: Path) -> None:
    # Plain arrays: they load the same under any distribution strategy.
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    os.replace(tmp, path)


def deployable(model):
    """A plain functional model sharing the trained layers (no custom train_step)."""
    import tensorflow as tf

    return tf.keras.Model(model.inputs, model.outputs, name=model.name)


def save_model(model, run_dir: Path) -> None:
    """Writes model.keras and saved_model/ atomically (temporary name, then rename)."""
    keras_tmp = run_dir / f".tmp-{runs.MODEL_FILE}"
    model.save(str(keras_tmp))
    os.replace(keras_tmp, run_dir / runs.MODEL_FILE)

    sm_tmp = run_dir / f".tmp-{runs.SAVED_MODEL_DIR}"
    shutil.rmtree(sm_tmp, ignore_errors=True)
    import tensorflow as tf

    tf.saved_model.save(model, str(sm_tmp))
    shutil.rmtree(run_dir / runs.SAVED_MODEL_DIR, ignore_errors=True)
    os.replace(sm_tmp, run_dir / runs.SAVED_MODEL_DIR)


def _check_resumable(cfg: TrainConfig) -> dict | None:
    """Refuses to mix settings in one run folder; returns finished metrics if the run is done."""
    config_path = cfg.run_dir / runs.CONFIG_FILE
    if not config_path.exists():
        return None
    saved, now = runs.read_json(config_path), cfg.to_dict()
    changed = [k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise UsageError(
            f"{cfg.run_dir} was started with other settings ({diffs}); "
            "choose another OUT or RUN_NAME, or delete that folder"
        )
    metrics_path = cfg.run_dir / runs.METRICS_FILE
    if metrics_path.exists() and saved.get("epochs") == now["epochs"]:
        return runs.read_json(metrics_path)
    return None


def train(cfg: TrainConfig, extra_callbacks: Sequence = ()) -> dict:
    """Trains, evaluates and saves one run; returns its metrics."""
    finished = _check_resumable(cfg)
    if finished is not None:
        log.info("%s is complete; delete it to train again", cfg.run_dir)
        return finished
    eval_names = evaluations.resolve(cfg.evaluations)
    protection = protections.get(cfg.prot)(cfg)
    strategy = configure_strategy(cfg)

    import tensorflow as tf

    tf.keras.utils.set_random_seed(cfg.seed)
    splits = data.load(cfg.dataset, cfg.data_dir, cfg.val_fraction, cfg.seed, cfg.train_samples)
    log.info("data: %s", splits.summary())
    splits = protection.prepare_data(splits)

    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_json_atomic(cfg.run_dir / runs.CONFIG_FILE, cfg.to_dict())
    runs.write_json_atomic(cfg.run_dir / runs.PREPROCESSING_FILE, splits.preprocessing.to_dict())

    with strategy.scope():
        model = protection.build_model(splits.spec.image_shape, splits.spec.num_classes)
        protection.compile(model)
    trainer = Trainer(cfg, protection, splits, strategy)
    trainer.extra_callbacks = list(extra_callbacks)
    model = trainer.fit_phase(model, "train", cfg.epochs)
    model = protection.after_fit(trainer, model)

    # The deployed model is the last phase's best epoch by validation accuracy.
    model = deployable(model)
    model.compile(
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    test_ds = data.make_dataset(splits.x_test, splits.y_test, EVAL_BATCH_SIZE)
    test_loss, test_acc = model.evaluate(test_ds, verbose=0)[:2]
    last_phase = trainer.history[-1]["phase"]
    best = max(trainer.phase_epochs(last_phase), key=lambda e: e["val_accuracy"])
    save_model(model, cfg.run_dir)

    metrics = {
        "run": cfg.run_dir.name,
        "dataset": cfg.dataset,
        "prot": cfg.prot,
        "model": cfg.model_name,
        "test_accuracy": float(test_acc),
        "test_loss": float(test_loss),
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "epochs_trained": len(trainer.history),
        "train_seconds": round(sum(e["epoch_seconds"] for e in trainer.history), 3),
        "mean_epoch_seconds": round(
            sum(e["epoch_seconds"] for e in trainer.history) / len(trainer.history), 4
        ),
        "parameter_count": int(model.count_params()),
        "data": splits.summary(),
        "preprocessing": splits.preprocessing.to_dict(),
        "device": runs.device_label(cfg.device),
        "host": runs.host_description(),
        "config": cfg.to_dict(),
        "protection": protection.metrics(),
    }
    metrics.update(evaluations.run(eval_names, model, splits, cfg))
    runs.write_json_atomic(cfg.run_dir / runs.METRICS_FILE, metrics)
    log.info(
        "%s: test accuracy %.4f (best epoch %d), %.1f s training, written to %s",
        cfg.run_dir.name,
        test_acc,
        best["epoch"],
        metrics["train_seconds"],
        cfg.run_dir,
    )
    return metrics


# --- command line ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="pipeline.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", help=f"one of {', '.join(data.DATASETS)}")
    p.add_argument("--prot", default="none", help=f"one of {', '.join(protections.PROTECTIONS)}")
    p.add_argument("--model", default="", help="mlp or cnn; default follows the data set")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--learning-rate", type=float, default=None, help="default: the protection's own"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="an .npz file or a folder with the data set")
    p.add_argument("--out", default="runs")
    p.add_argument("--run-name", default="")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--train-samples", type=int, default=None)
    p.add_argument("--strategy", default="default", help=f"one of {', '.join(STRATEGIES)}")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--device", default="", help="a label for this machine in the report")
    p.add_argument(
        "--evaluations", default="all", help="comma-separated post-training evaluations, or none"
    )
    protections.add_all_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    prot_cls = protections.get(args.prot) if args.prot in protections.PROTECTIONS else None
    _refuse_foreign_options(args)
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"options", "evaluations"}
    return TrainConfig(
        **{k: getattr(args, k) for k in fields},
        evaluations=tuple(x.strip() for x in args.evaluations.split(",") if x.strip()),
        options=prot_cls.options_from_args(args) if prot_cls else None,
    )


def _refuse_foreign_options(args: argparse.Namespace) -> None:
    # An option of another protection would be ignored silently otherwise.
    for name, dests in protections.option_dests().items():
        if name == args.prot:
            continue
        for dest in dests:
            if getattr(args, dest, None) is not None and dest not in protections.option_dests().get(
                args.prot, ()
            ):
                raise UsageError(
                    f"--{dest.replace('_', '-')} applies to PROT={name}, not PROT={args.prot}"
                )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train(config_from_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
