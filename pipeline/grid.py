"""The whole experiment in one command: train every data set x protection, export, benchmark, report.

  python -m pipeline.grid --datasets mnist cifar10 --prots none dp adv adv-retrain anomaly --epochs 50
  make grid DATASETS="mnist cifar10" PROTS="none dp adv adv-retrain anomaly" EPOCHS=50

Steps, each resumable and each recorded in <out>/grid.json:
  train   pipeline.train for every combination, in this process; a run folder that is
          complete is not trained again, an interrupted one resumes after its last epoch;
  export  `python -m exporters --run <run> --target T` for every target that applies,
          skipped when exports/<run>/<T>/manifest.json is newer than the run's metrics;
  bench   `devices/run_bench.py exports/<run>/<T>` for every export folder, skipped when
          results/<device>/<run>-<T>.json is newer than the manifest; a target this machine
          cannot run (an Edge TPU, TensorRT) is recorded as not available;
  report  pipeline.report over runs/, exports/ and results/.
A failing step is recorded with its message and the grid goes on with the others.
Any other `pipeline.train` option (--batch-size, --train-samples, a protection's
own options such as --epsilon) is passed to every run it applies to.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import logging
import runpy
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline import collect, compare, protections, runs
from pipeline.errors import OneLineParser, UsageError, choice_error, run_cli

log = logging.getLogger(__name__)

STEPS = ("train", "export", "bench", "report")
EXPORT_TARGETS = ("tflite", "tflite-int8", "edgetpu", "openvino", "onnx", "tensorrt")
# Protections whose models are not deployed to the boards, and why.
NOT_EXPORTED = {"he": "the HE model is evaluated on encrypted inputs on a server"}
# Where the other steps live; tests point these at stand-ins.
EXPORTER_MODULE = "exporters"
BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "devices" / "run_bench.py"
# Statuses in grid.json; "done" and "skipped" (already complete) count as success.
OK = ("done", "skipped")


class Ledger:
    """The grid's record of every step, <out>/grid.json, rewritten atomically after each step."""

    def __init__(self, path: Path):
        self.path = path
        self.steps: list[dict] = []
        if path.exists():
            data = runs.read_json(path)
            if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
                raise UsageError(f"{path} is not a grid record; delete it and run the grid again")
            self.steps = data["steps"]

    def record(self, step: str, dataset: str, prot: str, run: str, status: str, **extra) -> dict:
        entry = {
            "step": step,
            "dataset": dataset,
            "prot": prot,
            "run": run,
            "target": extra.pop("target", None),
            "status": status,
            "message": extra.pop("message", ""),
            **extra,
            "finished_at": time.time(),
        }
        # A run-level entry (no target) and per-target entries of one step replace each other.
        self.steps = [
            s
            for s in self.steps
            if not (
                (s["step"], s["run"]) == (step, run)
                and (entry["target"] is None or s.get("target") in (None, entry["target"]))
            )
        ]
        self.steps.append(entry)
        runs.write_json_atomic(self.path, {"steps": self.steps})
        level = logging.WARNING if status not in OK else logging.INFO
        log.log(
            level,
            "grid %s %s%s: %s%s",
            step,
            run,
            f" {entry['target']}" if entry["target"] else "",
            status,
            f" ({entry['message']})" if entry["message"] else "",
        )
        return entry

    def summary(self, since: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.steps:
            if s["finished_at"] >= since:
                counts[s["status"]] = counts.get(s["status"], 0) + 1
        return counts


# --- the steps ------------------------------------------------------------------------------


def train_all(args, train_argv: list[str], ledger: Ledger) -> list[tuple[str, str, Path]]:
    """Trains every combination; returns (dataset, prot, run folder) of the finished ones."""
    from pipeline import train

    finished = []
    for dataset in args.datasets:
        for prot in args.prots:
            run = f"{dataset}-{prot}"
            if prot not in protections.PROTECTIONS:
                ledger.record(
                    "train",
                    dataset,
                    prot,
                    run,
                    "not available",
                    message=f"PROT={prot} is not registered in pipeline/protections on this checkout",
                )
                continue
            start = time.perf_counter()
            try:
                cfg = train_config(dataset, prot, args, train_argv)
                complete = _is_complete(cfg)
                train.train(cfg)
            except UsageError as exc:
                ledger.record("train", dataset, prot, run, "failed", message=str(exc))
                continue
            except Exception as exc:  # one broken run must not stop the others
                log.exception("training %s failed", run)
                ledger.record(
                    "train", dataset, prot, run, "failed", message=f"{type(exc).__name__}: {exc}"
                )
                continue
            finally:
                _clear_keras_session()
            seconds = round(time.perf_counter() - start, 2)
            status = "skipped" if complete else "done"
            ledger.record("train", dataset, prot, cfg.run_dir.name, status, seconds=seconds)
            finished.append((dataset, prot, cfg.run_dir))
    return finished


def train_config(dataset: str, prot: str, args, train_argv: list[str]):
    """The TrainConfig of one combination: pipeline.train's own parser, foreign options dropped."""
    from pipeline import train

    argv = [
        *["--dataset", dataset, "--prot", prot, "--epochs", str(args.epochs)],
        *["--out", args.out, "--device", args.device_label],
        *train_argv,
    ]
    targs = train.build_parser().parse_args(argv)
    own = set(protections.option_dests().get(prot, ()))
    for name, dests in protections.option_dests().items():
        for dest in dests:
            if name != prot and dest not in own:
                setattr(targs, dest, None)  # another protection's option: not for this run
    return train.config_from_args(targs)


def _is_complete(cfg) -> bool:
    metrics = cfg.run_dir / runs.METRICS_FILE
    if not metrics.exists():
        return False
    try:
        return runs.read_json(metrics).get("config", {}).get("epochs") == cfg.epochs
    except UsageError:
        return False


def _clear_keras_session() -> None:
    # Frees the previous run's graph; many runs in one process would otherwise pile up.
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].keras.backend.clear_session()


def export_all(args, finished, ledger: Ledger) -> None:
    available = importlib.util.find_spec(EXPORTER_MODULE) is not None and _has_main(EXPORTER_MODULE)
    for dataset, prot, run_dir in finished:
        run = run_dir.name
        if prot in NOT_EXPORTED:
            ledger.record(
                "export", dataset, prot, run, "not applicable", message=NOT_EXPORTED[prot]
            )
            continue
        if not available:
            ledger.record(
                "export",
                dataset,
                prot,
                run,
                "not available",
                message=f"'python -m {EXPORTER_MODULE}' is not installed on this checkout",
            )
            continue
        metrics_time = (run_dir / runs.METRICS_FILE).stat().st_mtime
        for target in args.targets:
            manifest = Path(args.exports) / run / target / collect.MANIFEST_FILE
            if manifest.exists() and manifest.stat().st_mtime >= metrics_time:
                ledger.record("export", dataset, prot, run, "skipped", target=target)
                continue
            argv = ["--run", str(run_dir), "--target", target, "--out", args.exports]
            start = time.perf_counter()
            code, message = invoke(EXPORTER_MODULE, argv)
            status = _status(code, manifest.exists())
            ledger.record(
                "export",
                dataset,
                prot,
                run,
                status,
                target=target,
                message=message,
                seconds=round(time.perf_counter() - start, 2),
            )


def bench_all(args, finished, ledger: Ledger) -> None:
    label = args.device_label
    for dataset, prot, run_dir in finished:
        run = run_dir.name
        folders = sorted(p.parent for p in (Path(args.exports) / run).glob("*/manifest.json"))
        folders = [f for f in folders if f.name in args.targets]
        if prot in NOT_EXPORTED or not folders:
            continue  # the export step already says why there is nothing to benchmark
        if not BENCH_SCRIPT.exists():
            ledger.record(
                "bench",
                dataset,
                prot,
                run,
                "not available",
                message=f"{BENCH_SCRIPT.name} is not installed on this checkout",
            )
            continue
        for folder in folders:
            result = Path(args.results) / label / f"{run}-{folder.name}.json"
            manifest_time = (folder / collect.MANIFEST_FILE).stat().st_mtime
            if result.exists() and result.stat().st_mtime >= manifest_time:
                ledger.record("bench", dataset, prot, run, "skipped", target=folder.name)
                continue
            argv = [str(folder), "--results", args.results, "--device-label", label]
            if args.bench_limit:
                argv += ["--limit", str(args.bench_limit)]
            start = time.perf_counter()
            code, message = invoke(BENCH_SCRIPT, argv)
            ledger.record(
                "bench",
                dataset,
                prot,
                run,
                _status(code, result.exists()),
                target=folder.name,
                message=message,
                seconds=round(time.perf_counter() - start, 2),
            )


def _status(code: int, produced: bool) -> str:
    if code == 0:
        return "done" if produced else "failed"
    # Status 2 is the project's "cannot do this here" (a missing tool, runtime or device).
    return "not available" if code == 2 else "failed"


def _has_main(module: str) -> bool:
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ImportError:
        return False


def invoke(command: str | Path, argv: list[str]) -> tuple[int, str]:
    """Runs a module (`python -m`) or a script in this process; returns its status and last error line.

    In-process saves the TensorFlow start-up of a subprocess per export. The
    command's own error line still reaches the terminal.
    """
    captured = io.StringIO()
    saved_argv, saved_path = sys.argv, list(sys.path)
    code = 0
    try:
        with contextlib.redirect_stderr(_Tee(sys.stderr, captured)):
            if isinstance(command, Path):
                sys.argv = [str(command), *argv]
                sys.path.insert(0, str(command.parent))  # as `python script.py` would
                runpy.run_path(str(command), run_name="__main__")
            else:
                sys.argv = [command, *argv]
                runpy.run_module(command, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            code = 1
            captured.write(f"{exc.code}\n")
    except Exception as exc:  # a crash in one export or benchmark must not stop the grid
        log.exception("%s %s failed", command, " ".join(argv))
        code = 1
        captured.write(f"{type(exc).__name__}: {exc}\n")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    message = lines[-1].removeprefix("error: ") if lines and code else ""
    return code, message


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


# --- command line ---------------------------------------------------------------------------


def _check_names(kind: str, names: list[str], valid, shown=None) -> None:
    for name in names:
        if name not in valid:
            raise choice_error(kind, name, list(shown or valid))


def _names(values: list[str]) -> list[str]:
    """Accepts "a b", "a,b" and repeated values alike, keeping order and dropping repeats."""
    out = []
    for value in values:
        for name in value.replace(",", " ").split():
            if name not in out:
                out.append(name)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="pipeline.grid", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    p.add_argument("--datasets", nargs="+", default=["digits"], help="data sets to train on")
    p.add_argument(
        "--prots",
        nargs="+",
        default=["none"],
        help=f"protections, e.g. {' '.join(compare.PROTECTION_ORDER)}",
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--out", default="runs", help="folder of the run folders")
    p.add_argument("--exports", default="exports")
    p.add_argument("--results", default="results")
    p.add_argument("--report", default="report", help="the report's folder")
    p.add_argument("--targets", nargs="+", default=["all"], help="export targets, or all")
    p.add_argument(
        "--steps", nargs="+", default=["all"], help=f"some of {', '.join(STEPS)}, or all"
    )
    p.add_argument("--device", default="", help="label for this machine; detected when empty")
    p.add_argument("--bench-limit", type=int, default=None, help="benchmark on N test samples only")
    return p


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    from pipeline import data, train

    args, train_argv = build_parser().parse_known_args(argv)
    for own in ("--dataset", "--prot", "--run-name"):
        if any(a == own or a.startswith(own + "=") for a in train_argv):
            raise UsageError(f"{own} names one run; the grid takes --datasets and --prots")
    args.datasets, args.prots = _names(args.datasets), _names(args.prots)
    args.targets, args.steps = _names(args.targets), _names(args.steps)
    for name in args.datasets:
        data.get_spec(name)
    known = list(dict.fromkeys([*protections.PROTECTIONS, *compare.PROTECTION_ORDER]))
    _check_names("protection", args.prots, known)
    if args.targets == ["all"]:
        args.targets = list(EXPORT_TARGETS)
    _check_names("target", args.targets, EXPORT_TARGETS, ["all", *EXPORT_TARGETS])
    if args.steps == ["all"]:
        args.steps = list(STEPS)
    _check_names("step", args.steps, STEPS, ["all", *STEPS])
    if args.epochs < 1:
        raise UsageError(f"Expected epochs > 0, got epochs={args.epochs}")
    if args.bench_limit is not None and args.bench_limit < 1:
        raise UsageError(f"Expected bench_limit > 0, got bench_limit={args.bench_limit}")
    # Options for pipeline.train are checked once here, before hours of training.
    train.build_parser().parse_args(["--epochs", "1", *train_argv])
    return args, train_argv


def run_grid(args: argparse.Namespace, train_argv: list[str]) -> dict[str, int]:
    """Runs the chosen steps; returns how many steps ended in each status."""
    started = time.time()
    args.device_label = runs.device_label(args.device)
    log.info(
        "grid: %d data sets x %d protections, %d epochs, on %s",
        len(args.datasets),
        len(args.prots),
        args.epochs,
        args.device_label,
    )
    ledger = Ledger(Path(args.out) / collect.GRID_FILE)
    if "train" in args.steps:
        finished = train_all(args, train_argv, ledger)
    else:
        finished = [
            (d, p, Path(args.out) / f"{d}-{p}")
            for d in args.datasets
            for p in args.prots
            if (Path(args.out) / f"{d}-{p}" / runs.METRICS_FILE).exists()
        ]
    if "export" in args.steps:
        export_all(args, finished, ledger)
    if "bench" in args.steps:
        bench_all(args, finished, ledger)
    if "report" in args.steps:
        from pipeline import report

        try:
            page = report.write_report(
                Path(args.out), Path(args.exports), Path(args.results), Path(args.report)
            )
            log.info("grid: report at %s", page)
        except Exception as exc:
            log.exception("the report failed")
            ledger.record(
                "report", "", "", "report", "failed", message=f"{type(exc).__name__}: {exc}"
            )
    counts = ledger.summary(started)
    log.info("grid: %s", ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    args, train_argv = parse_args(argv)
    counts = run_grid(args, train_argv)
    return 1 if counts.get("failed") else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
