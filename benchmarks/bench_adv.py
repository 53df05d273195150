"""Cost and effect of adversarial training: epoch time against clean training, and PGD accuracy.

  python benchmarks/bench_adv.py                  # epoch-time ratios, MLP on MNIST and CNN on CIFAR-10
  python benchmarks/bench_adv.py --effectiveness  # also: MNIST MLP under 40-step PGD at eps 0.1

Timing: the models PROT=none and PROT=adv build (the same layers; the
adversarial one crafts its batch in train_step) are fitted on the same data in
this one process, clean before and after the adversarial ones against drift;
the median epoch of epochs 2..N is compared (the first traces the graph).
Goals: FGSM with a random start at most 2.2x clean; PGD at most
1.1 x (steps + 1), since each PGD step is one more forward and backward pass.

Effectiveness: a plain and an adversarially trained MLP (pipeline.train, same
seed and epochs) on real MNIST, attacked on the whole test split with 40-step
PGD with a random start at eps 0.1. Goal: at least 85% robust accuracy, with
at most 1 point of clean accuracy lost against the plain MLP.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import attacks, data, protections  # noqa: E402
from pipeline.config import TrainConfig  # noqa: E402
from pipeline.errors import UsageError, run_cli  # noqa: E402
from pipeline.protections.adversarial import AdversarialOptions  # noqa: E402
from pipeline.train import train  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
FGSM_RS_GOAL = 2.2
PGD_GOAL_FACTOR = 1.1
ROBUST_GOAL = 0.85
CLEAN_LOSS_GOAL = 0.01
EFFECT_EPS = 0.1
EFFECT_PGD_STEPS = 40


def fit_epoch_seconds(cfg: TrainConfig, splits, epochs: int) -> list[float]:
    """Seconds per epoch of model.fit for the model and compilation that `cfg.prot` builds."""
    import tensorflow as tf

    protection = protections.get(cfg.prot)(cfg)
    splits = protection.prepare_data(splits)
    model = protection.build_model(splits.spec.image_shape, splits.spec.num_classes)
    protection.compile(model)
    ends: list[float] = []
    stamp = tf.keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter())
    )
    model.fit(protection.train_dataset(splits), epochs=epochs, callbacks=[stamp], verbose=0)
    return [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]


def timing(name: str, dataset: str, data_dir, train_samples, epochs: int, batch_size: int, steps):
    splits = data.load(dataset, data_dir, 0.1, 0, train_samples)
    with tempfile.TemporaryDirectory() as out:

        def cfg(prot, **options):
            return TrainConfig(
                dataset=dataset,
                data_dir=data_dir,
                prot=prot,
                batch_size=batch_size,
                train_samples=train_samples,
                out=out,
                options=AdversarialOptions.for_dataset(dataset, **options) if options else None,
            )

        clean = fit_epoch_seconds(cfg("none"), splits, epochs)
        fgsm_rs = fit_epoch_seconds(cfg("adv", attack="fgsm-rs"), splits, epochs)
        pgd = fit_epoch_seconds(cfg("adv", attack="pgd", pgd_steps=steps), splits, epochs)
        clean += fit_epoch_seconds(cfg("none"), splits, epochs)

    clean_s = statistics.median(clean)
    print(
        f"{name}: {dataset}, {len(splits.x_train)} training images, batch {batch_size}, "
        f"median of epochs 2..{epochs}"
    )
    print(f"  {'clean':<10} {clean_s * 1000:9.1f} ms/epoch")
    rows = (
        ("fgsm-rs", statistics.median(fgsm_rs), FGSM_RS_GOAL),
        (f"pgd-{steps}", statistics.median(pgd), PGD_GOAL_FACTOR * (steps + 1)),
    )
    for label, seconds, goal in rows:
        ratio = seconds / clean_s
        verdict = "met" if ratio <= goal else "MISSED"
        print(
            f"  {label:<10} {seconds * 1000:9.1f} ms/epoch  ratio {ratio:5.2f}  "
            f"(goal <= {goal:.2f}: {verdict})"
        )


def effectiveness(data_dir, epochs: int, attack: str, adv_ratio: float) -> None:
    import tensorflow as tf

    splits = data.load("mnist", data_dir)
    results = {}
    with tempfile.TemporaryDirectory() as out:
        for prot in ("none", "adv"):
            options = (
                AdversarialOptions.for_dataset(
                    "mnist", attack=attack, adv_eps=EFFECT_EPS, adv_ratio=adv_ratio
                )
                if prot == "adv"
                else None
            )
            cfg = TrainConfig(
                dataset="mnist",
                data_dir=data_dir,
                prot=prot,
                epochs=epochs,
                out=out,
                evaluations=("none",),
                options=options,
            )
            metrics = train(cfg)
            model = tf.keras.models.load_model(cfg.run_dir / "model.keras")
            x_fgsm = attacks.adversarial_examples(
                model, splits.x_test, splits.y_test, "fgsm", EFFECT_EPS
            )
            x_pgd = attacks.adversarial_examples(
                model,
                splits.x_test,
                splits.y_test,
                "pgd",
                EFFECT_EPS,
                steps=EFFECT_PGD_STEPS,
                desc=f"pgd-{EFFECT_PGD_STEPS} on {prot}",
            )
            results[prot] = {
                "clean": _accuracy(model, splits.x_test, splits.y_test),
                "fgsm": _accuracy(model, x_fgsm, splits.y_test),
                "pgd": _accuracy(model, x_pgd, splits.y_test),
                "epoch_s": metrics["mean_epoch_seconds"],
            }

    print(
        f"effectiveness: mnist MLP, {len(splits.x_train)} training images, {epochs} epochs, "
        f"adv = {attack} at eps {EFFECT_EPS}, ratio {adv_ratio}; "
        f"{len(splits.x_test)} test images, PGD-{EFFECT_PGD_STEPS} with random start"
    )
    for prot, r in results.items():
        print(
            f"  {prot:<5} clean {r['clean']:.4f}  fgsm@{EFFECT_EPS} {r['fgsm']:.4f}  "
            f"pgd@{EFFECT_EPS} {r['pgd']:.4f}  ({r['epoch_s']:.2f} s/epoch)"
        )
    robust, lost = results["adv"]["pgd"], results["none"]["clean"] - results["adv"]["clean"]
    print(
        f"  robust accuracy {robust:.4f} (goal >= {ROBUST_GOAL:.2f}: "
        f"{'met' if robust >= ROBUST_GOAL else 'MISSED'}); clean accuracy lost {lost * 100:+.2f} "
        f"points (goal <= {CLEAN_LOSS_GOAL * 100:.0f}: {'met' if lost <= CLEAN_LOSS_GOAL else 'MISSED'})"
    )


def _accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=1024, verbose=0), 1) == y))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(SHARED) if SHARED.is_dir() else None)
    p.add_argument("--epochs", type=int, default=4, help="timing epochs per model, >= 2")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--pgd-steps", type=int, default=7)
    p.add_argument("--cifar-samples", type=int, default=256, help="CIFAR-10 images for the CNN")
    p.add_argument("--effectiveness", action="store_true", help="also train and attack MLPs")
    p.add_argument("--effect-epochs", type=int, default=40)
    p.add_argument("--attack", default="fgsm-rs", help="training attack for --effectiveness")
    p.add_argument("--adv-ratio", type=float, default=1.0)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--models", default="mlp,cnn", help="which timings to run: mlp, cnn or both")
    args = p.parse_args(argv)
    if args.data_dir is None or not Path(args.data_dir).is_dir():
        raise UsageError(
            f"bench-adv needs real MNIST and CIFAR-10 files; pass --data-dir (looked in {SHARED})"
        )
    if args.epochs < 2:
        raise UsageError(f"Expected epochs >= 2 (the first is left out), got epochs={args.epochs}")

    models = {m.strip() for m in args.models.split(",")}
    if not models <= {"mlp", "cnn"}:
        raise UsageError(f"--models takes mlp, cnn or mlp,cnn, got {args.models!r}")
    if not args.skip_timing and "mlp" in models:
        timing("MLP", "mnist", args.data_dir, None, args.epochs, args.batch_size, args.pgd_steps)
    if not args.skip_timing and "cnn" in models:
        timing(
            "CNN",
            "cifar10",
            args.data_dir,
            args.cifar_samples,
            args.epochs,
            args.batch_size,
            args.pgd_steps,
        )
    if args.effectiveness:
        effectiveness(args.data_dir, args.effect_epochs, args.attack, args.adv_ratio)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
