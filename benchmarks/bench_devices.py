"""The board runner's overhead, and batch-1 latency of the MNIST MLP per backend on this CPU.

  python benchmarks/bench_devices.py --data-dir ../shared/data --epochs 3
  python benchmarks/bench_devices.py --tflite-runtime-python /tmp/venv/bin/python

Trains the MLP briefly (accuracy is not the point), exports it to every target
this machine can run, then measures side by side in one run, each measurement
in a fresh process as on a board (no TensorFlow state around the runtime):
  1. the runner's p50 against a bare loop of the same runtime's invoke call on the
     same artifact with the settings the runner chose; goal <= 1.10 per backend;
  2. the runner's p50 on the OpenVINO IR against OpenVINO's own benchmark_app
     (synchronous, same latency hint and threads), both as the request's own
     timing (what benchmark_app reports) and as the wall time of the Python call;
     goal <= 1.20;
  3. the runner's batch-1 latency per backend, the int8 paths included.
Runner and reference alternate for --rounds rounds and each side's best round
is compared: on a shared machine other load only ever adds time, so the best
round is the least disturbed one (the medians are printed too).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the export builders, until the exporters land

from pipeline.config import TrainConfig  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.train import train  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
BARE_GOAL = 1.10
# Export target -> bare loop in benchmarks/bare_loops.py.
BARE = {"tflite": "tflite", "tflite-int8": "tflite", "onnx": "onnxruntime", "openvino": "openvino"}
BENCHMARK_APP_GOAL = 1.20

# (label, export target, runner options)
RUNS = (
    ("tflite float32, ai_edge_litert", "tflite", []),
    ("tflite int8, ai_edge_litert", "tflite-int8", []),
    ("tflite int8, TensorFlow interpreter", "tflite-int8", ["--runtime", "tensorflow"]),
    ("onnx float32, ONNX Runtime", "onnx", []),
    ("OpenVINO IR FP32, CPU", "openvino", []),
    ("keras, TensorFlow", "keras", []),
)


def runner(folder: Path, results: Path, label: str, extra=(), python=None) -> dict:
    """One run of devices/run_bench.py in a fresh process, as on a board; its result file."""
    argv = [str(folder), "--results", str(results), "--device-label", label, "--quiet", *extra]
    proc = subprocess.run(
        [python or sys.executable, str(ROOT / "devices" / "run_bench.py"), *argv],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"runner failed on {folder}: {proc.stderr[-1000:]}")
    return json.loads(next((results / label).glob("*.json")).read_text())


def bare(kind: str, folder: Path, settings: dict) -> float:
    """p50 ms of a bare loop (benchmarks/bare_loops.py) in a fresh process, as the runner runs."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bare_loops.py"),
            kind,
            str(folder),
            json.dumps(settings),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"bare loop {kind} failed: {proc.stderr[-1000:]}")
    return float(proc.stdout.split()[-1])


def benchmark_app_median_ms(xml: Path, config: dict, seconds: int) -> float | None:
    """OpenVINO's benchmark_app (shipped with the pip package) on the IR, synchronous."""
    script = Path(sys.executable).with_name("benchmark_app")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from openvino.tools.benchmark.main import main; main()"]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"CPU": config}, f)
    proc = subprocess.run(
        [
            *command,
            "-m",
            str(xml),
            "-d",
            "CPU",
            "-hint",
            "latency",
            "-api",
            "sync",
            "-load_config",
            f.name,
            "-t",
            str(seconds),
        ],
        capture_output=True,
        text=True,
    )
    Path(f.name).unlink()
    match = re.search(r"Median:\s+([\d.]+)\s*(ms|us)", proc.stdout)
    if not match:
        print(f"benchmark_app gave no median (exit {proc.returncode}): {proc.stdout[-500:]}")
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "us" else value


def _fixed_settings(settings: dict) -> list[str]:
    """Runner options that repeat a tuned run's settings, so repeats skip tuning."""
    extra = ["--threads", str(settings["threads"])] if settings.get("threads") else []
    if settings.get("xnnpack") is not None:
        extra += ["--xnnpack", "on" if settings["xnnpack"] else "off"]
    return extra


def _shown(settings: dict) -> str:
    return " ".join(f"{k}={settings[k]}" for k in ("threads", "xnnpack") if k in settings)


def verdict(ratio: float, goal: float) -> str:
    return f"{ratio:6.3f}  (goal <= {goal:.2f}: {'met' if ratio <= goal else 'MISSED'})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_dir = SHARED if (SHARED / "mnist-t10k.npz").exists() else None
    p.add_argument("--dataset", help="default: mnist with a data folder, else digits")
    p.add_argument("--data-dir", default=str(default_dir) if default_dir else None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5, help="alternating runner/reference rounds")
    p.add_argument(
        "--tflite-runtime-python",
        help="a Python with only numpy and tflite_runtime, to time that runtime too",
    )
    args = p.parse_args(argv)
    args.dataset = args.dataset or ("mnist" if args.data_dir else "digits")

    from export_builders import build_all

    work = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    try:
        cfg = TrainConfig(
            dataset=args.dataset,
            data_dir=args.data_dir,
            epochs=args.epochs,
            out=str(work / "runs"),
            evaluations=("none",),
        )
        metrics = train(cfg)
        exports = build_all(cfg.run_dir, work / "exports")
        results = work / "results"
        n = len(np.load(exports["tflite"] / "test_data.npz")["y"])
        print(
            f"model: {cfg.model_name} on {cfg.dataset} ({metrics['parameter_count']:,} parameters, "
            f"keras test accuracy {metrics['test_accuracy']:.4f}), {n} test samples at batch 1"
        )

        # 1. runner against a bare loop of the same call, same settings, alternating.
        print(
            f"\nrunner p50 / bare-loop p50 (same runtime, artifact and settings; best of "
            f"{args.rounds} alternating rounds)"
        )
        for i, (target, kind) in enumerate(BARE.items()):
            tuned = runner(exports[target], results, f"tune-{i}")["settings"]
            fixed = _fixed_settings(tuned)
            runner_p50, bare_p50 = [], []
            for r in range(args.rounds):
                bare_p50.append(bare(kind, exports[target], tuned))
                result = runner(exports[target], results, f"overhead-{i}-{r}", fixed)
                runner_p50.append(result["latency_ms"]["p50"])
            print(
                f"  {target:12s} runner {min(runner_p50):8.4f} ms  bare {min(bare_p50):8.4f} ms  "
                f"ratio {verdict(min(runner_p50) / min(bare_p50), BARE_GOAL)}  ({_shown(tuned)}; "
                f"medians {np.median(runner_p50):.4f} / {np.median(bare_p50):.4f} ms)"
            )
            if target == "openvino":
                plain = bare("openvino-dict", exports[target], tuned)
                print(f"  {'':12s} (infer() with a dict of inputs per sample: {plain:8.4f} ms)")

        # 2. runner against OpenVINO's benchmark_app on the same IR, alternating.
        print(
            f"\nrunner p50 / benchmark_app median (OpenVINO IR FP32, CPU, synchronous; best of "
            f"{args.rounds} alternating rounds)"
        )
        tuned = runner(exports["openvino"], results, "tune-app")["settings"]
        app, wall, own = [], [], []
        for r in range(args.rounds):
            app.append(
                benchmark_app_median_ms(
                    exports["openvino"] / tuned["model_file"], tuned["config"], 5
                )
            )
            result = runner(exports["openvino"], results, f"app-{r}", _fixed_settings(tuned))
            wall.append(result["latency_ms"]["p50"])
            own.append(result["runtime_latency_ms"]["p50"])
        if None in app:
            print("  benchmark_app gave no result; see above")
        else:
            app_ms, wall_ms, own_ms = min(app), min(wall), min(own)
            print(f"  benchmark_app median          {app_ms:8.4f} ms  ({_shown(tuned)})")
            print(
                f"  runner, the request's timing  {own_ms:8.4f} ms  ratio "
                f"{verdict(own_ms / app_ms, BENCHMARK_APP_GOAL)}"
            )
            print(
                f"  runner, wall time of the call {wall_ms:8.4f} ms  ratio "
                f"{verdict(wall_ms / app_ms, BENCHMARK_APP_GOAL)}"
            )
            print(
                f"  (medians of the rounds: benchmark_app {np.median(app):.4f}, request "
                f"{np.median(own):.4f}, wall {np.median(wall):.4f} ms)"
            )

        # 3. batch-1 latency per backend.
        print("\nbatch-1 latency per backend (runner, tuned settings)")
        print(
            f"  {'backend':40s} {'p50 ms':>9s} {'mean ms':>9s} {'p99 ms':>9s} {'accuracy':>9s}  settings"
        )
        rows = [
            (label, runner(exports[t], results, f"table-{i}", extra))
            for i, (label, t, extra) in enumerate(RUNS)
        ]
        if args.tflite_runtime_python:
            result = runner(
                exports["tflite-int8"],
                results,
                "table-tflite-runtime",
                ["--runtime", "tflite_runtime"],
                python=args.tflite_runtime_python,
            )
            rows.append((f"tflite int8, tflite_runtime {result['runtime']['version']}", result))
        for label, r in rows:
            lat, s = r["latency_ms"], r["settings"]
            shown = " ".join(f"{k}={s[k]}" for k in ("threads", "xnnpack") if s.get(k) is not None)
            print(
                f"  {label:40s} {lat['p50']:9.4f} {lat['mean']:9.4f} {lat['p99']:9.4f} "
                f"{r['accuracy']:9.4f}  {r['runtime']['name']} {r['runtime']['version']} {shown}"
            )
        int8 = [(label, r) for label, r in rows if "int8" in label]
        fastest = min(int8, key=lambda lr: lr[1]["latency_ms"]["p50"])
        print(
            f"  fastest int8 path: {fastest[0]} ({fastest[1]['latency_ms']['p50'] * 1000:.1f} us)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
