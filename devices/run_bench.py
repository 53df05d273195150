"""Measures an exported model on this device: test accuracy and batch-1 latency per sample.

  python devices/run_bench.py exports/mnist-none/tflite-int8
  python devices/run_bench.py exports/mnist-none/openvino --device MYRIAD
  python devices/run_bench.py exports/mnist-none/onnx --batch-sizes 8,32 --limit 1000

Checks every file against the SHA-256 in manifest.json, picks the backend from
the model file and what is importable (--backend forces one), times the
settings worth trying (threads, XNNPACK) and keeps the fastest, warms up, then
times each test sample at batch 1. Writes results/<device>/<run>-<target>.json
atomically and prints one summary line. Needs numpy and the board's runtime
only, and runs on Python 3.6 (JetPack 4.6) and 3.7 (Coral's Mendel).
Exit status 2 with one line when the export or the runtime is not usable.
"""

import argparse
import datetime
import json
import logging
import os
import sys
import time

# Run as a script on a board (python devices/run_bench.py): make `devices` importable
# without installing anything.
if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from devices import backends, board, manifest  # noqa: E402

log = logging.getLogger("devices.run_bench")

EXIT_USAGE = 2
DEFAULT_WARMUP = 50
# Each tuning candidate runs this many invocations, or for this long, whichever ends first.
TUNING_INVOCATIONS = 300
TUNING_SECONDS = 1.0
PROGRESS_EVERY = 256


class BenchError(Exception):
    """An export or request the runner cannot measure; the message says what to do."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="run_bench.py", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[1]
    )
    p.add_argument("export_dir", help="an export folder, exports/<run>/<target>")
    p.add_argument(
        "--backend", choices=backends.BACKENDS, help="default: chosen from the model file"
    )
    p.add_argument(
        "--runtime",
        help="the package behind the backend: ai_edge_litert, tensorflow or tflite_runtime "
        "(tflite, edgetpu); openvino or openvino.runtime (the 2022.3 API); default: the fastest "
        "importable",
    )
    p.add_argument(
        "--device",
        help="CPU, GPU or MYRIAD (openvino), CPU or GPU (onnxruntime), GPU or DLA (tensorrt)",
    )
    p.add_argument(
        "--precision", help="FP16 or FP32 (openvino variant); fp16, int8 or fp32 (tensorrt)"
    )
    p.add_argument(
        "--threads", type=int, help="CPU threads; default: the fastest of 1 and all cores"
    )
    p.add_argument(
        "--xnnpack", choices=("on", "off"), help="TFLite's XNNPACK delegate; default: the faster"
    )
    p.add_argument("--results", default="results", help="folder for result files (default results)")
    p.add_argument("--device-label", help="results/<label>/; default: the board or CPU model")
    p.add_argument("--limit", type=int, help="measure the first N test samples only")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed invocations first")
    p.add_argument(
        "--batch-sizes", default="", help="also measure throughput at these batch sizes, e.g. 8,32"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _options(args):
    for name in ("threads", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise BenchError("Expected {} >= 1, got {}={}".format(name, name, value))
    if args.warmup < 0:
        raise BenchError("Expected warmup >= 0, got warmup={}".format(args.warmup))
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise BenchError(
            "--batch-sizes takes comma-separated integers such as 8,32, got {!r}".format(
                args.batch_sizes
            )
        ) from None
    if any(b < 1 for b in batch_sizes):
        raise BenchError("Expected batch sizes >= 1, got {}".format(args.batch_sizes))
    return {
        "runtime": args.runtime,
        "device": args.device.upper() if args.device else None,
        "precision": args.precision,
        "threads": args.threads,
        "xnnpack": None if args.xnnpack is None else args.xnnpack == "on",
        "batch_size": 1,
        "max_batch_size": max([1] + batch_sizes),
    }, batch_sizes


def load_test_data(export_dir, info, limit=None):
    """x, y from test_data.npz, checked against the manifest's input description."""
    path = os.path.join(export_dir, manifest.TEST_DATA_FILE)
    if not os.path.isfile(path):
        raise BenchError("{} is missing; copy the whole export folder".format(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (KeyError, ValueError, OSError) as exc:
        raise BenchError(
            "{} is not a test-data file with arrays x and y ({}); export again".format(path, exc)
        ) from None
    if len(x) != len(y) or len(x) == 0:
        raise BenchError(
            "{} holds {} inputs and {} labels; export again".format(path, len(x), len(y))
        )
    if limit:
        x, y = x[:limit], y[:limit]
    expected = info["input"]
    _check_input(path, x, expected["shape"], expected["dtype"], "manifest.json")
    return np.ascontiguousarray(x), y.reshape(-1).astype(np.int64)


def _check_input(path, x, shape, dtype, against):
    shape = [int(d) if d is not None else -1 for d in shape]
    sample_ok = len(x.shape) == len(shape) and all(
        shape[i] in (-1, x.shape[i]) for i in range(1, len(shape))
    )
    if not sample_ok or np.dtype(dtype) != x.dtype:
        raise BenchError(
            "{} holds inputs of shape {} and dtype {}, but {} expects {} and {}; "
            "export the model and its test data together".format(
                path, list(x.shape), x.dtype, against, shape, np.dtype(dtype).name
            )
        )


def _progress(total, desc, quiet):
    """A tqdm bar if tqdm is importable (not on every board), else a counter on stderr."""
    if quiet:
        return _Counter(total, desc, None)
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total, desc, sys.stderr)
    return tqdm(total=total, desc=desc, unit="img", mininterval=0.5, file=sys.stderr)


class _Counter(object):
    def __init__(self, total, desc, stream):
        self.total, self.desc, self.stream, self.n, self.shown = total, desc, stream, 0, 0.0

    def update(self, n):
        self.n += n
        now = time.time()
        if self.stream is not None and (now - self.shown > 2 or self.n == self.total):
            self.stream.write("\r{}: {}/{}".format(self.desc, self.n, self.total))
            self.stream.flush()
            self.shown = now

    def close(self):
        if self.stream is not None:
            self.stream.write("\n")


def time_invocations(predict, x, count, seconds):
    """Median seconds per call over up to `count` calls on x's samples, stopping after `seconds`."""
    clock = time.perf_counter
    times = []
    deadline = clock() + seconds
    for i in range(count):
        sample = x[i % len(x) : i % len(x) + 1]
        start = clock()
        predict(sample)
        end = clock()
        times.append(end - start)
        if end > deadline and len(times) >= 10:
            break
    return float(np.median(times))


def tune(name, export_dir, info, options, x):
    """Opens the backend with each candidate setting, times it, keeps the fastest one open."""
    cls = backends.backend_class(name)
    candidates = cls.tuning_candidates(options, os.cpu_count())
    best, best_seconds, tried = None, None, []
    for candidate in candidates:
        backend = cls(export_dir, info, candidate)
        check_model_input(backend, x)
        if len(candidates) == 1:
            return backend, []
        time_invocations(backend.predict, x, 20, TUNING_SECONDS / 4)  # warm caches first
        seconds = time_invocations(backend.predict, x, TUNING_INVOCATIONS, TUNING_SECONDS)
        tried.append(dict(_tuned_keys(backend.settings), p50_ms=round(seconds * 1e3, 6)))
        if best is None or seconds < best_seconds:
            if best is not None:
                best.close()
            best, best_seconds = backend, seconds
        else:
            backend.close()
    log.info(
        "tuned %s: %s",
        name,
        ", ".join("{} {:.4f} ms".format(_tuned_keys(t), t["p50_ms"]) for t in tried),
    )
    return best, tried


def _tuned_keys(settings):
    return {k: settings.get(k) for k in ("threads", "xnnpack") if k in settings}


def check_model_input(backend, x):
    _check_input(
        "test_data.npz", x, [-1] + list(backend.input_shape[1:]), backend.input_dtype, "the model"
    )


def measure_latency(backend, x, warmup, quiet):
    """Per-sample batch-1 latency and predicted classes over every sample.

    Returns (wall seconds per call, the runtime's own milliseconds per call or
    None, predicted classes). Wall time is what an application calling the
    runtime from Python sees; some runtimes (OpenVINO) also time each request
    themselves, without the Python call around it, as their benchmark tools report.
    """
    predict = backend.predict
    for i in range(min(warmup, len(x)) if warmup else 0):
        predict(x[i : i + 1])
    n = len(x)
    seconds = np.empty(n, dtype=np.float64)
    own_ms = np.empty(n, dtype=np.float64) if backend.reports_latency else None
    predicted = np.empty(n, dtype=np.int64)
    clock = time.perf_counter
    bar = _progress(n, "batch 1", quiet)
    for i in range(n):
        sample = x[i : i + 1]
        start = clock()
        out = predict(sample)
        seconds[i] = clock() - start
        predicted[i] = out.argmax()
        if own_ms is not None:
            own_ms[i] = backend.last_latency_ms()
        # The bar is updated outside the timed call, and rarely, to keep the loop lean.
        if (i + 1) % PROGRESS_EVERY == 0:
            bar.update(PROGRESS_EVERY)
    bar.update(n % PROGRESS_EVERY)
    bar.close()
    return seconds, own_ms, predicted


def measure_throughput(name, export_dir, info, options, x, batch_size, warmup):
    """Images per second at one batch size over the test set's full batches; None if it cannot."""
    batches = len(x) // batch_size
    if batches == 0:
        log.warning("throughput at batch %d skipped: only %d samples", batch_size, len(x))
        return None
    try:
        backend = backends.open_backend(
            name, export_dir, info, dict(options, batch_size=batch_size)
        )
    except backends.BackendError as exc:
        log.warning("throughput at batch %d skipped: %s", batch_size, exc)
        return None
    try:
        for i in range(min(max(1, warmup // batch_size), batches)):
            backend.predict(x[i * batch_size : (i + 1) * batch_size])
        start = time.perf_counter()
        for i in range(batches):
            backend.predict(x[i * batch_size : (i + 1) * batch_size])
        seconds = time.perf_counter() - start
    finally:
        backend.close()
    return batches * batch_size / seconds


def latency_summary(ms):
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "mean": float(ms.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "std": float(ms.std()),
    }


def run(args):
    options, batch_sizes = _options(args)
    export_dir = os.path.abspath(args.export_dir)
    if not os.path.isdir(export_dir):
        raise BenchError(
            "{} is not a folder; pass an export folder exports/<run>/<target>".format(export_dir)
        )
    info = manifest.read_manifest(export_dir)
    # Before anything runs: a tampered or truncated model is never benchmarked.
    manifest.verify_files(export_dir, info)
    x, y = load_test_data(export_dir, info, args.limit)
    name = backends.choose(info, args.backend)
    description = board.describe()

    backend, tried = tune(name, export_dir, info, options, x)
    try:
        seconds, own_ms, predicted = measure_latency(backend, x, args.warmup, args.quiet)
    finally:
        backend.close()
    accuracy = float(np.mean(predicted == y))
    throughput = {}
    for b in batch_sizes:
        value = measure_throughput(name, export_dir, info, backend.options, x, b, args.warmup)
        if value is not None:
            throughput[str(b)] = value

    source = info.get("source") or {}
    run_name = source.get("run") or os.path.basename(os.path.dirname(export_dir))
    target = info["target"]
    label = args.device_label or board.default_label(
        description, name, backend.settings.get("device")
    )
    # Every result names its threads and delegate, null where the backend has none.
    settings = dict({"threads": None, "delegate": None}, **backend.settings)
    settings["warmup"] = args.warmup
    if tried:
        settings["tuning"] = tried
    finished_at = time.time()
    result = {
        "device_label": label,
        "device": dict(description, runtimes=_runtime_versions(backend)),
        "run": run_name,
        "target": target,
        "dataset": source.get("dataset"),
        "prot": source.get("prot"),
        "model": source.get("model"),
        "backend": name,
        "runtime": backend.runtime,
        "settings": settings,
        "model_file": settings.get("model_file") or info["model_file"],
        "model_size_bytes": info.get("model_size_bytes"),
        "samples": int(len(x)),
        "accuracy": accuracy,
        "export_accuracy": (info.get("verification") or {}).get("accuracy"),
        "latency_ms": latency_summary(seconds * 1e3),
        "runtime_latency_ms": None if own_ms is None else latency_summary(own_ms),
        "throughput": throughput,
        "verified_sha256": True,
        "finished_at": finished_at,
        "finished_at_utc": datetime.datetime.fromtimestamp(
            finished_at, datetime.timezone.utc
        ).isoformat(),
    }
    _warn_if_accuracy_differs(result, info)
    path = os.path.join(args.results, label, "{}-{}.json".format(run_name, target))
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    _warn_if_replacing_another_backend(path, result)
    manifest.write_json_atomic(path, result)
    print(summary_line(result, path))
    return result, path


def _runtime_versions(backend):
    versions = {"numpy": np.__version__, backend.runtime["name"]: backend.runtime["version"]}
    for key, value in backend.runtime.items():
        if key not in ("name", "version") and value:
            versions[key] = value
    return versions


def _warn_if_accuracy_differs(result, info):
    verification = info.get("verification") or {}
    expected, samples = verification.get("accuracy"), verification.get("samples")
    if expected is None or samples != result["samples"]:
        return
    if abs(result["accuracy"] - expected) > 0.5 / result["samples"]:
        log.warning(
            "accuracy %.4f here differs from %.4f measured at export (%s): this runtime computes "
            "differently",
            result["accuracy"],
            expected,
            verification.get("runtime"),
        )


def _warn_if_replacing_another_backend(path, result):
    # The file name holds run and target only: a second backend on one target replaces the first.
    try:
        with open(path) as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return
    was = (previous.get("backend"), (previous.get("runtime") or {}).get("name"))
    now = (result["backend"], result["runtime"]["name"])
    if was != now:
        log.warning(
            "replacing %s, measured with %s via %s; pass --device-label to keep both",
            path,
            was[0],
            was[1],
        )


def summary_line(result, path):
    latency, settings = result["latency_ms"], result["settings"]
    shown = [
        "{}={}".format(k, settings[k])
        for k in ("device", "threads", "xnnpack", "delegate", "precision")
        if settings.get(k) is not None
    ]
    throughput = "".join(
        ", batch {} {:.0f} img/s".format(b, v)
        for b, v in sorted(result["throughput"].items(), key=lambda kv: int(kv[0]))
    )
    return (
        "{run} {target} on {label}: accuracy {acc:.4f} over {n} samples, batch-1 latency "
        "p50 {p50:.4f} ms, mean {mean:.4f}, p99 {p99:.4f}{tp} ({backend} via {rt} {ver}{sets}) -> {path}".format(
            run=result["run"],
            target=result["target"],
            label=result["device_label"],
            acc=result["accuracy"],
            n=result["samples"],
            p50=latency["p50"],
            mean=latency["mean"],
            p99=latency["p99"],
            tp=throughput,
            backend=result["backend"],
            rt=result["runtime"]["name"],
            ver=result["runtime"]["version"],
            sets=", " + " ".join(shown) if shown else "",
            path=path,
        )
    )


def main(argv=None):
    """Runs the benchmark; returns 0, or 2 with one line on stderr when it cannot."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        run(args)
    except (BenchError, backends.BackendError, manifest.ManifestError) as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
