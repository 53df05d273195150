"""Gathers what the report shows: run folders, export manifests, board results, grid steps.

Every file is checked for the keys the report reads (see /docs/report.md and
the formats of metrics.json, manifest.json and results/<device>/<run>-<target>.json).
A malformed file is not fatal: it is listed in `Collection.skipped` with its
path and what is wrong, logged as a warning, and left out.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from numbers import Real
from pathlib import Path
from typing import Any

from pipeline import runs

log = logging.getLogger(__name__)

GRID_FILE = "grid.json"  # the grid's record of its steps, in the runs folder
MANIFEST_FILE = "manifest.json"

# Folders inside a run folder that hold no run of their own.
_RUN_INTERNALS = {runs.SAVED_MODEL_DIR, runs.CHECKPOINT_DIR, runs.TENSORBOARD_DIR}


@dataclasses.dataclass
class Run:
    """One run folder; `metrics` is None while the run has not finished."""

    path: Path
    name: str
    dataset: str
    prot: str
    device: str
    metrics: dict | None
    history: list[dict]

    @property
    def finished(self) -> bool:
        return self.metrics is not None


@dataclasses.dataclass
class Export:
    """One export folder, exports/<run>/<target>/, described by its manifest."""

    path: Path
    run: str
    target: str
    manifest: dict


@dataclasses.dataclass
class BenchResult:
    """One board result, results/<device>/<run>-<target>.json."""

    path: Path
    data: dict

    def __getattr__(self, key: str) -> Any:
        # device_label, run, target, dataset, prot, backend, accuracy, latency_ms ...
        try:
            return self.__dict__["data"][key]
        except KeyError:
            raise AttributeError(key) from None


@dataclasses.dataclass
class Skipped:
    path: Path
    reason: str


@dataclasses.dataclass
class Collection:
    runs: list[Run]
    exports: list[Export]
    results: list[BenchResult]
    grid_steps: list[dict]
    skipped: list[Skipped]


def collect(runs_dir: Path, exports_dir: Path, results_dir: Path) -> Collection:
    """Reads everything under the three folders; missing folders are simply empty."""
    skipped: list[Skipped] = []
    return Collection(
        runs=_read_runs(Path(runs_dir), skipped),
        exports=_read_exports(Path(exports_dir), skipped),
        results=_read_results(Path(results_dir), skipped),
        grid_steps=_read_grid_steps(Path(runs_dir), skipped),
        skipped=skipped,
    )


# --- checking -----------------------------------------------------------------


class _Malformed(Exception):
    pass


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Malformed(f"not valid JSON ({exc})") from None


def _require(data: Any, spec: dict[str, type | tuple]) -> None:
    """Checks dotted keys ("latency_ms.p50") for presence and type."""
    if not isinstance(data, dict):
        raise _Malformed(f"expected a JSON object, found {type(data).__name__}")
    for dotted, kind in spec.items():
        value: Any = data
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                raise _Malformed(f"lacks the key {dotted!r}")
            value = value[part]
        if kind is Real:
            ok = isinstance(value, Real) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            name = "a number" if kind is Real else getattr(kind, "__name__", str(kind))
            raise _Malformed(f"{dotted!r} should be {name}, found {value!r}")


def _skip(skipped: list[Skipped], path: Path, reason: str) -> None:
    log.warning("skipping %s: %s", path, reason)
    skipped.append(Skipped(path, reason))


# --- runs -------------------------------------------------------------------------

_METRICS_SPEC = {
    "run": str,
    "dataset": str,
    "prot": str,
    "test_accuracy": Real,
    "train_seconds": Real,
}
_HISTORY_SPEC = {"epochs": list}
_EPOCH_SPEC = {"epoch": Real, "test_accuracy": Real}


def _run_folders(runs_dir: Path) -> list[Path]:
    if not runs_dir.is_dir():
        return []
    found = set()
    for name in (runs.METRICS_FILE, runs.HISTORY_FILE):
        for path in runs_dir.rglob(name):
            if not _RUN_INTERNALS.intersection(path.relative_to(runs_dir).parts[:-1]):
                found.add(path.parent)
    return sorted(found)


def _read_runs(runs_dir: Path, skipped: list[Skipped]) -> list[Run]:
    found = []
    for folder in _run_folders(runs_dir):
        history = _read_history(folder / runs.HISTORY_FILE, skipped)
        metrics_path = folder / runs.METRICS_FILE
        metrics = None
        if metrics_path.exists():
            try:
                metrics = _load(metrics_path)
                _require(metrics, _METRICS_SPEC)
            except _Malformed as exc:
                _skip(skipped, metrics_path, str(exc))
                continue
            identity = metrics
        else:
            # An unfinished run: its config tells what it is.
            try:
                identity = _load(folder / runs.CONFIG_FILE)
                _require(identity, {"dataset": str, "prot": str})
            except _Malformed as exc:
                _skip(skipped, folder / runs.CONFIG_FILE, str(exc))
                continue
        found.append(
            Run(
                path=folder,
                name=identity.get("run", folder.name),
                dataset=identity["dataset"],
                prot=identity["prot"],
                device=str(identity.get("device") or "unlabelled"),
                metrics=metrics,
                history=history,
            )
        )
    return found


def _read_history(path: Path, skipped: list[Skipped]) -> list[dict]:
    if not path.exists():
        return []
    try:
        history = _load(path)
        _require(history, _HISTORY_SPEC)
        for entry in history["epochs"]:
            _require(entry, _EPOCH_SPEC)
    except _Malformed as exc:
        _skip(skipped, path, str(exc))
        return []
    return history["epochs"]


# --- exports ------------------------------------------------------------------------

_MANIFEST_SPEC = {"target": str, "model_file": str}


def _read_exports(exports_dir: Path, skipped: list[Skipped]) -> list[Export]:
    if not exports_dir.is_dir():
        return []
    found = []
    for path in sorted(exports_dir.glob(f"*/*/{MANIFEST_FILE}")):
        try:
            manifest = _load(path)
            _require(manifest, _MANIFEST_SPEC)
        except _Malformed as exc:
            _skip(skipped, path, str(exc))
            continue
        source = manifest.get("source") or {}
        run = source.get("run") or path.parent.parent.name
        found.append(Export(path.parent, run, manifest["target"], manifest))
    return found


# --- board results ------------------------------------------------------------------

_RESULT_SPEC = {
    "device_label": str,
    "run": str,
    "target": str,
    "dataset": str,
    "prot": str,
    "accuracy": Real,
    "latency_ms.p50": Real,
    "latency_ms.p90": Real,
    "latency_ms.p99": Real,
}


def _read_results(results_dir: Path, skipped: list[Skipped]) -> list[BenchResult]:
    if not results_dir.is_dir():
        return []
    found = []
    for path in sorted(results_dir.rglob("*.json")):
        if path.name.startswith("."):
            continue  # a temporary file of an atomic write in progress
        try:
            data = _load(path)
            _require(data, _RESULT_SPEC)
        except _Malformed as exc:
            _skip(skipped, path, str(exc))
            continue
        found.append(BenchResult(path, data))
    return found


# --- grid steps ---------------------------------------------------------------------


def _read_grid_steps(runs_dir: Path, skipped: list[Skipped]) -> list[dict]:
    path = runs_dir / GRID_FILE
    if not path.exists():
        return []
    try:
        data = _load(path)
        _require(data, {"steps": list})
    except _Malformed as exc:
        _skip(skipped, path, str(exc))
        return []
    return [s for s in data["steps"] if isinstance(s, dict)]


# --- what the report lays out ---------------------------------------------------------


def datasets(coll: Collection) -> list[str]:
    """Every data set that has a run, a planned grid step or a board result, in a stable order."""
    from pipeline.data import DATASETS

    names = {r.dataset for r in coll.runs} | {r.dataset for r in coll.results}
    names |= {s["dataset"] for s in coll.grid_steps if isinstance(s.get("dataset"), str)}
    order = list(DATASETS)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def protections(coll: Collection) -> list[str]:
    """Every protection seen in any run, grid step or result; each data set lists them all."""
    from pipeline.compare import protection_sort_key

    names = {r.prot for r in coll.runs} | {r.prot for r in coll.results}
    names |= {s["prot"] for s in coll.grid_steps if isinstance(s.get("prot"), str)}
    return sorted(names, key=protection_sort_key)


def board_columns(coll: Collection) -> list[tuple[str, str, str]]:
    """(device label, target, backend) of every board result, each a column of the report."""
    columns = {(r.device_label, r.target, str(r.data.get("backend") or "")) for r in coll.results}
    return sorted(columns)


def find_result(coll: Collection, dataset: str, prot: str, column: tuple) -> BenchResult | None:
    device_label, target, backend = column
    for r in coll.results:
        same = (r.device_label, r.target, str(r.data.get("backend") or "")) == column
        if same and r.dataset == dataset and r.prot == prot:
            return r
    return None


def grid_step(coll: Collection, step: str, dataset: str, prot: str) -> dict | None:
    """The grid's last record of `step` ("train", "export", "bench") for a data set/protection."""
    for s in reversed(coll.grid_steps):
        if s.get("step") == step and s.get("dataset") == dataset and s.get("prot") == prot:
            return s
    return None


def runs_of(coll: Collection, dataset: str, prot: str) -> list[Run]:
    return [r for r in coll.runs if r.dataset == dataset and r.prot == prot]


def missing_run_reason(coll: Collection, dataset: str, prot: str) -> str:
    """Why a data set/protection has no finished run: not run, not finished, failed, not available."""
    if any(not r.finished for r in runs_of(coll, dataset, prot)):
        return "not finished"
    step = grid_step(coll, "train", dataset, prot)
    if step and step.get("status") == "failed":
        return "training failed"
    if step and step.get("status") == "not available":
        return "not available"
    return "not run"


def board_result(coll: Collection, dataset: str, prot: str, column: tuple) -> BenchResult | str:
    """The result of a data set/protection in a board column, or why there is none."""
    result = find_result(coll, dataset, prot, column)
    if result is not None:
        return result
    if prot == "he":
        return "not applicable"  # HE models run encrypted on a server, not on the boards
    runs = runs_of(coll, dataset, prot)
    if not any(r.finished for r in runs):
        return missing_run_reason(coll, dataset, prot)
    exported = [e for e in coll.exports if e.run in {r.name for r in runs}]
    if exported and not any(e.target == column[1] for e in exported):
        return "not exported"
    return "board not benchmarked"
