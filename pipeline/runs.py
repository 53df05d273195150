"""Run folders: where a run's files live, atomic JSON, and what machine made them."""

from __future__ import annotations

import json
import os
import platform
import socket
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.errors import UsageError

# Files of a run folder, runs/<dataset>-<prot>/.
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
METRICS_FILE = "metrics.json"
PREPROCESSING_FILE = "preprocessing.json"
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
CHECKPOINT_DIR = "checkpoint"
TENSORBOARD_DIR = "tensorboard"

REPORTED_PACKAGES = (
    "tensorflow",
    "tensorflow-privacy",
    "dp-accounting",
    "cleverhans",
    "tensorflow-model-optimization",
    "scikit-learn",
    "numpy",
    "tf2onnx",
    "onnxruntime",
    "openvino",
    "tenseal",
)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Writes JSON to a temporary file in the same folder, then renames it into place.

    A reader never sees a half-written file, and a crash leaves the old one intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, Paths.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file; a corrupt one is a UsageError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); delete it or restore it") from None


def package_versions(names: tuple[str, ...] = REPORTED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def jetson_model() -> str | None:
    """The board name from the device tree (Jetsons, Coral Dev Board), if any."""
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
    except OSError:
        return None


def host_description() -> dict[str, Any]:
    """What ran this: host, OS, CPU, accelerators and package versions."""
    desc: dict[str, Any] = {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "board": jetson_model(),
        "gpus": [],
    }
    try:
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            desc["gpus"].append(details.get("device_name", gpu.name))
    except Exception:  # TensorFlow missing or its GPU query failing must not stop a run
        pass
    desc["packages"] = package_versions()
    return desc


def device_label(explicit: str | None = None) -> str:
    """A short label for the training device: 'DEVICE=' if given, else the GPU or CPU."""
    if explicit:
        return explicit
    desc = host_description()
    if desc["board"]:
        return desc["board"]
    if desc["gpus"]:
        return desc["gpus"][0]
    return f"cpu-{desc['cpu_count']}core"
