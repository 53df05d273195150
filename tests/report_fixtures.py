"""Small fixture runs, exports and board results in the shared formats, for the report's tests."""

from __future__ import annotations

import json
from pathlib import Path

# (dataset, prot) -> clean test accuracy; every protection on digits, three on mnist.
ACCURACY = {
    ("digits", "none"): 0.9611,
    ("digits", "dp"): 0.8731,
    ("digits", "adv"): 0.9402,
    ("digits", "adv-retrain"): 0.9455,
    ("digits", "anomaly"): 0.9583,
    ("digits", "he"): 0.9222,
    ("mnist", "none"): 0.9812,
    ("mnist", "dp"): 0.9504,
    ("mnist", "adv"): 0.9733,
}
TRAIN_SECONDS = {
    "none": 12.5,
    "dp": 81.0,
    "adv": 40.2,
    "adv-retrain": 55.0,
    "anomaly": 14.1,
    "he": 9.9,
}
PGD_ACCURACY = {
    "none": 0.12,
    "dp": 0.18,
    "adv": 0.71,
    "adv-retrain": 0.64,
    "anomaly": 0.11,
    "he": 0.05,
}
MIA_ADVANTAGE = {
    "none": 0.21,
    "dp": 0.03,
    "adv": 0.17,
    "adv-retrain": 0.19,
    "anomaly": 0.2,
    "he": 0.22,
}

PROTECTION_METRICS = {
    "none": {},
    "dp": {
        "impl": "tensorflow_privacy",
        "epsilon": 2.94,
        "delta": 1e-5,
        "noise_multiplier": 1.1,
        "l2_norm_clip": 1.0,
        "sampling": "poisson",
        "epsilon_is_approximation": False,
        "accountant": "rdp",
        "epsilon_rdp": 2.94,
        "epsilon_pld": 2.71,
    },
    "adv": {
        "attack": "pgd",
        "adv_eps": 0.1,
        "adv_ratio": 0.5,
        "pgd_steps": 10,
        "pgd_step_size": 0.025,
        "random_start": True,
    },
    "adv-retrain": {
        "attack": "fgsm",
        "adv_eps": 0.1,
        "adv_ratio": 1.0,
        "pgd_steps": None,
        "pgd_step_size": None,
        "random_start": False,
    },
    "anomaly": {
        "filter": "isolation_forest",
        "features": "pixels",
        "contamination": 0.05,
        "removed_count": 37,
        "inject": "label_flip",
        "inject_rate": 0.05,
        "injected_count": 40,
        "precision": 0.81,
        "recall": 0.75,
        "clean_lost": 7,
        "filter_seconds": 2.0,
        "unfiltered": {"test_accuracy": 0.9111},
    },
    "he": {
        "plaintext_accuracy": 0.9222,
        "encrypted_accuracy": 0.9194,
        "agreement": 0.9944,
        "samples": 360,
        "latency_ms": {
            "encrypt": 3.1,
            "evaluate": 118.0,
            "decrypt": 2.3,
            "total": 123.4,
            "plaintext": 0.05,
        },
        "ciphertext_bytes": 334_000,
        "keys_bytes": {"public": 420_000, "galois": 25_000_000, "relin": 840_000},
        "scheme": "CKKS",
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": [60, 40, 40, 60],
        "global_scale_bits": 40,
        "security_bits": 128,
    },
}


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def metrics(dataset: str, prot: str, device: str = "cpu-2core") -> dict:
    acc = ACCURACY[(dataset, prot)]
    return {
        "run": f"{dataset}-{prot}",
        "dataset": dataset,
        "prot": prot,
        "model": "mlp",
        "test_accuracy": acc,
        "test_loss": 0.2,
        "best_epoch": 4,
        "best_val_accuracy": acc,
        "epochs_trained": 6 if prot == "adv-retrain" else 5,
        "train_seconds": TRAIN_SECONDS[prot] * (3 if dataset == "mnist" else 1),
        "mean_epoch_seconds": 2.0,
        "parameter_count": 300_000,
        "device": device,
        "host": {
            "host": "lab-pc",
            "os": "Linux",
            "cpu": "Test CPU",
            "cpu_count": 2,
            "board": None,
            "gpus": [],
            "packages": {},
        },
        "config": {},
        "protection": PROTECTION_METRICS[prot],
        "membership_inference": {
            "auc": 0.5 + MIA_ADVANTAGE[prot] / 2,
            "attacker_advantage": MIA_ADVANTAGE[prot],
        },
        "robustness": {
            "clean_accuracy": acc,
            "samples": 200,
            "attacks": [
                {"attack": "fgsm", "eps": 0.1, "steps": None, "accuracy": PGD_ACCURACY[prot] + 0.1},
                {"attack": "pgd", "eps": 0.1, "steps": 40, "accuracy": PGD_ACCURACY[prot]},
            ],
            "one_pixel": {"success_rate": 0.3, "samples": 50},
            "seconds": 3.0,
        },
    }


def history(dataset: str, prot: str) -> dict:
    acc = ACCURACY[(dataset, prot)]
    epochs = []
    phases = ["train"] * 5 + (["retrain"] if prot == "adv-retrain" else [])
    for i, phase in enumerate(phases):
        test_acc = acc - 0.4 * 0.5**i
        epochs.append(
            {
                "epoch": i + 1,
                "phase": phase,
                "phase_epoch": i + 1 if phase == "train" else 1,
                "loss": 1.0 / (i + 1),
                "accuracy": test_acc,
                "val_loss": 1.0,
                "val_accuracy": test_acc,
                "test_loss": 1.0,
                "test_accuracy": test_acc,
                "epoch_seconds": 2.0,
                "eval_seconds": 0.1,
                "finished_at": 0,
            }
        )
    return {"run": f"{dataset}-{prot}", "epochs": epochs}


def manifest(run: str, target: str, size: int, agreement: float) -> dict:
    return {
        "format_version": 1,
        "target": target,
        "model_file": "model.tflite",
        "files": {},
        "input": {"name": "x", "shape": [1, 8, 8, 1], "dtype": "int8", "quantization": None},
        "source": {"run": run},
        "model_size_bytes": size,
        "verification": {
            "runtime": "ai_edge_litert",
            "agreement": agreement,
            "accuracy": 0.95,
            "keras_accuracy": 0.96,
            "samples": 360,
            "robustness": [
                {"attack": "fgsm", "eps": 0.1, "keras_accuracy": 0.5, "artifact_accuracy": 0.49}
            ],
        },
    }


def result(device: str, dataset: str, prot: str, target: str, p50: float, backend: str) -> dict:
    return {
        "device_label": device,
        "device": {
            "host": device,
            "os": "Linux",
            "cpu": "ARM" if "jetson" in device else "x86",
            "board": "NVIDIA Jetson Nano" if "jetson" in device else None,
        },
        "run": f"{dataset}-{prot}",
        "target": target,
        "dataset": dataset,
        "prot": prot,
        "backend": backend,
        "runtime": {"name": backend, "version": "1.0"},
        "settings": {"threads": 2},
        "samples": 360,
        "accuracy": ACCURACY[(dataset, prot)] - 0.002,
        "latency_ms": {"mean": p50 * 1.1, "p50": p50, "p90": p50 * 1.5, "p99": p50 * 3},
        "throughput": {},
        "verified_sha256": True,
        "finished_at": 0,
    }


def build(root: Path) -> dict[str, Path]:
    """Writes runs/, exports/ and results/ under root; returns their paths."""
    runs, exports, results = root / "runs", root / "exports", root / "results"
    for dataset, prot in ACCURACY:
        write(runs / f"{dataset}-{prot}" / "metrics.json", metrics(dataset, prot))
        write(runs / f"{dataset}-{prot}" / "history.json", history(dataset, prot))
    # An unfinished run: history and config, no metrics yet.
    write(runs / "mnist-anomaly" / "config.json", {"dataset": "mnist", "prot": "anomaly"})
    write(runs / "mnist-anomaly" / "history.json", {"run": "mnist-anomaly", "epochs": []})

    for prot, size in (("none", 310_000), ("dp", 305_000)):
        write(
            exports / f"digits-{prot}" / "tflite-int8" / "manifest.json",
            manifest(f"digits-{prot}", "tflite-int8", size, 0.9917),
        )
        write(
            exports / f"digits-{prot}" / "onnx" / "manifest.json",
            manifest(f"digits-{prot}", "onnx", 4 * size, 1.0),
        )

    # adv-retrain exported to ONNX only: its tflite-int8 column says "not exported".
    write(
        exports / "digits-adv-retrain" / "onnx" / "manifest.json",
        manifest("digits-adv-retrain", "onnx", 1_200_000, 1.0),
    )

    for prot, p50 in (("none", 0.0213), ("dp", 0.0221), ("adv", 0.0232), ("anomaly", 0.0209)):
        write(
            results / "desktop-cpu" / f"digits-{prot}-tflite-int8.json",
            result("desktop-cpu", "digits", prot, "tflite-int8", p50, "ai_edge_litert"),
        )
    write(
        results / "desktop-cpu" / "mnist-none-tflite-int8.json",
        result("desktop-cpu", "mnist", "none", "tflite-int8", 0.0456, "ai_edge_litert"),
    )
    write(
        results / "jetson-nano" / "digits-none-onnx.json",
        result("jetson-nano", "digits", "none", "onnx", 0.412, "onnxruntime"),
    )
    # Malformed: not JSON at all, and a result without its latency.
    write(results / "jetson-nano" / "digits-adv-onnx.json", '{"device_label": "jetson-nano", ')
    broken = result("jetson-nano", "digits", "dp", "onnx", 0.4, "onnxruntime")
    del broken["latency_ms"]
    write(results / "jetson-nano" / "digits-dp-onnx.json", broken)
    return {"runs": runs, "exports": exports, "results": results}
