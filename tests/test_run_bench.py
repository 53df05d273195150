"""The board runner on this machine's runtimes, its refusals, and its board-side constraints."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from devices import backends, board, manifest, run_bench

ROOT = Path(__file__).resolve().parent.parent
RESULT_KEYS = (
    "device_label",
    "device",
    "run",
    "target",
    "dataset",
    "prot",
    "backend",
    "runtime",
    "settings",
    "samples",
    "accuracy",
    "latency_ms",
    "throughput",
    "verified_sha256",
    "finished_at",
)
DEVICE_KEYS = ("host", "os", "cpu", "board", "edgetpu_present", "ncs2_present", "power_mode")


def _importable(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def exports(digits_run, tmp_path_factory):
    from export_builders import build_all

    run_dir, _ = digits_run
    return build_all(run_dir, tmp_path_factory.mktemp("exports"))


def bench(folder, tmp_path, *extra):
    """Runs the runner in-process; returns (exit status, result dict or None)."""
    results = tmp_path / "results"
    argv = [str(folder), "--results", str(results), "--device-label", "here", "--quiet", *extra]
    status = run_bench.main(argv)
    files = list(results.glob("here/*.json"))
    return status, json.loads(files[0].read_text()) if files else None


def copy_export(folder, tmp_path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.parent.name / folder.name))


def rewrite_manifest(folder: Path, **changes):
    """Re-signs an export after a deliberate change, so only the change itself is wrong."""
    info = json.loads((folder / manifest.MANIFEST_FILE).read_text())
    info.update(changes)
    info["files"] = list(info["files"])
    manifest.write_manifest(str(folder), info)


# --- what the runner measures ------------------------------------------------


@pytest.mark.parametrize(
    "target, extra, runtime",
    [
        ("tflite", [], "ai_edge_litert"),
        ("tflite-int8", [], "ai_edge_litert"),
        ("tflite-int8", ["--runtime", "tensorflow"], "tensorflow"),
        ("onnx", [], "onnxruntime"),
        ("openvino", [], "openvino"),
        ("keras", [], "tensorflow"),
    ],
)
def test_runner_accuracy_equals_the_export_verification(
    exports, tmp_path, capsys, target, extra, runtime
):
    status, result = bench(exports[target], tmp_path, "--threads", "1", *extra)
    assert status == 0, capsys.readouterr().err
    info = json.loads((exports[target] / manifest.MANIFEST_FILE).read_text())
    assert result["accuracy"] == pytest.approx(info["verification"]["accuracy"], abs=1e-12)
    assert result["samples"] == info["verification"]["samples"] == 360
    assert result["runtime"]["name"] == runtime
    assert result["accuracy"] > 0.9
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and f"accuracy {result['accuracy']:.4f}" in line


def test_result_file_has_every_field_of_the_format(exports, tmp_path):
    status, result = bench(exports["tflite-int8"], tmp_path, "--batch-sizes", "8,32")
    assert status == 0
    assert all(key in result for key in RESULT_KEYS)
    assert all(key in result["device"] for key in DEVICE_KEYS)
    assert (result["run"], result["target"], result["dataset"], result["prot"]) == (
        "digits-none",
        "tflite-int8",
        "digits",
        "none",
    )
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] and latency["mean"] > 0
    assert set(result["throughput"]) == {"8", "32"}
    assert all(v > 0 for v in result["throughput"].values())
    assert result["verified_sha256"] is True
    assert result["settings"]["threads"] >= 1 and result["settings"]["xnnpack"] in (True, False)
    assert result["settings"]["delegate"] is None and result["runtime_latency_ms"] is None
    assert (tmp_path / "results" / "here" / "digits-none-tflite-int8.json").is_file()


def test_tuning_times_each_candidate_and_keeps_the_fastest(exports, tmp_path):
    status, result = bench(exports["tflite"], tmp_path, "--limit", "50")
    assert status == 0 and result["samples"] == 50
    tried = result["settings"]["tuning"]
    assert len(tried) == 2 * len(backends.thread_candidates(None, os.cpu_count()))
    best = min(tried, key=lambda t: t["p50_ms"])
    chosen = {k: result["settings"][k] for k in ("threads", "xnnpack")}
    assert chosen == {k: best[k] for k in ("threads", "xnnpack")}


def test_fixed_settings_skip_tuning_and_are_recorded(exports, tmp_path):
    status, result = bench(
        exports["tflite-int8"], tmp_path, "--threads", "1", "--xnnpack", "off", "--limit", "20"
    )
    assert status == 0
    assert result["settings"]["threads"] == 1 and result["settings"]["xnnpack"] is False
    assert "tuning" not in result["settings"]


def test_openvino_2022_api_path_runs_when_only_openvino_runtime_has_core(
    exports, tmp_path, monkeypatch
):
    # OpenVINO 2022.3 (the last with MYRIAD) keeps Core in openvino.runtime; 2026 has no such
    # module, so a stand-in built from today's API exercises that code path.
    import openvino

    shim = types.ModuleType("openvino.runtime")
    for name in ("Core", "Tensor", "PartialShape", "get_version"):
        setattr(shim, name, getattr(openvino, name))
    monkeypatch.setitem(sys.modules, "openvino.runtime", shim)
    status, result = bench(exports["openvino"], tmp_path, "--runtime", "openvino.runtime")
    assert status == 0 and result["runtime"]["name"] == "openvino.runtime"
    assert result["accuracy"] == pytest.approx(result["export_accuracy"], abs=1e-12)


def test_openvino_reports_its_own_request_timing_below_the_wall_time(exports, tmp_path):
    status, result = bench(exports["openvino"], tmp_path, "--limit", "100")
    assert status == 0
    own, wall = result["runtime_latency_ms"], result["latency_ms"]
    assert 0 < own["p50"] <= wall["p50"]


@pytest.mark.skipif(not _importable("tflite_runtime"), reason="tflite_runtime is not installed")
def test_tflite_runtime_accuracy_equals_the_export_verification(exports, tmp_path):
    status, result = bench(exports["tflite-int8"], tmp_path, "--runtime", "tflite_runtime")
    assert status == 0 and result["runtime"]["name"] == "tflite_runtime"
    assert result["accuracy"] == pytest.approx(result["export_accuracy"], abs=1e-12)


def test_openvino_runs_the_fp16_variant_when_asked(exports, tmp_path):
    status, result = bench(exports["openvino"], tmp_path, "--precision", "FP16", "--limit", "50")
    assert status == 0
    assert result["settings"]["model_file"] == "model_fp16.xml"


def test_runner_works_with_tensorflow_and_tqdm_unimportable(exports, tmp_path):
    # A board has neither: stand-ins that fail to import, first on the path.
    fake = tmp_path / "fake"
    for name in ("tensorflow", "tqdm"):
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text(f"raise ImportError('no {name} on a board')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "devices" / "run_bench.py"),
            str(exports["tflite-int8"]),
            "--results",
            str(tmp_path / "results"),
            "--device-label",
            "board",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "batch 1: 360/360" in proc.stderr  # the plain counter stands in for tqdm
    result = json.loads(
        (tmp_path / "results" / "board" / "digits-none-tflite-int8.json").read_text()
    )
    assert result["runtime"]["name"] == "ai_edge_litert"
    assert result["accuracy"] == pytest.approx(result["export_accuracy"], abs=1e-12)


def test_board_code_parses_as_python_3_6_and_avoids_newer_modules():
    for path in sorted((ROOT / "devices").glob("*.py")):
        source = path.read_text()
        ast.parse(source, filename=str(path), feature_version=(3, 6))
        for newer in (
            "import dataclasses",
            "importlib.metadata",
            "from __future__ import annotations",
        ):
            assert newer not in source, f"{path.name} uses {newer}, absent on Python 3.6"
        for call in ("capture_output=", "text=True", "removesuffix", "perf_counter_ns"):
            assert call not in source, f"{path.name} uses {call}, absent on Python 3.6"


# --- refusals: exit status 2 and one line ------------------------------------


def assert_one_line_error(capsys, *fragments):
    err = capsys.readouterr().err.strip().splitlines()
    message = err[-1]
    assert message.startswith("error: ") and "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_tampered_model_is_never_benchmarked(exports, tmp_path, capsys, damage):
    folder = copy_export(exports["tflite"], tmp_path)
    model = folder / "model.tflite"
    data = bytearray(model.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    model.write_bytes(bytes(data))
    status, result = bench(folder, tmp_path)
    assert status == 2 and result is None
    assert_one_line_error(capsys, "model.tflite does not match its SHA-256")


def test_missing_manifest_exits_2(exports, tmp_path, capsys):
    folder = copy_export(exports["onnx"], tmp_path)
    (folder / manifest.MANIFEST_FILE).unlink()
    assert bench(folder, tmp_path)[0] == 2
    assert_one_line_error(capsys, "has no manifest.json")


def test_test_data_of_another_shape_exits_2(exports, tmp_path, capsys):
    folder = copy_export(exports["onnx"], tmp_path)
    np.savez(
        folder / manifest.TEST_DATA_FILE, x=np.zeros((5, 28, 28, 1), np.float32), y=np.zeros(5)
    )
    rewrite_manifest(folder)
    assert bench(folder, tmp_path)[0] == 2
    assert_one_line_error(
        capsys, "test_data.npz holds inputs of shape [5, 28, 28, 1]", "[-1, 8, 8, 1]"
    )


def test_float_test_data_for_an_int8_model_exits_2(exports, tmp_path, capsys):
    # The manifest agrees with the data, but the model itself takes int8.
    folder = copy_export(exports["tflite-int8"], tmp_path)
    x = np.zeros((5, 8, 8, 1), np.float32)
    np.savez(folder / manifest.TEST_DATA_FILE, x=x, y=np.zeros(5, np.int64))
    info = json.loads((folder / manifest.MANIFEST_FILE).read_text())
    rewrite_manifest(folder, input=dict(info["input"], dtype="float32"))
    assert bench(folder, tmp_path)[0] == 2
    assert_one_line_error(capsys, "the model expects", "int8")


def test_uncompiled_edgetpu_export_exits_2_suggesting_the_cpu(exports, tmp_path, capsys):
    folder = copy_export(exports["tflite-int8"], tmp_path)
    rewrite_manifest(folder, target="edgetpu")
    assert bench(folder, tmp_path)[0] == 2
    assert_one_line_error(capsys, "not compiled for the Edge TPU", "--backend tflite")


def test_missing_tflite_runtime_exits_2_saying_what_to_install(
    exports, tmp_path, capsys, monkeypatch
):
    def absent(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(backends, "load_tflite_runtime", absent)
    assert bench(exports["tflite"], tmp_path)[0] == 2
    assert_one_line_error(capsys, "none imports", "pip install ai-edge-litert")


@pytest.mark.parametrize("argv", [["--limit", "0"], ["--batch-sizes", "8,x"], ["--threads", "-1"]])
def test_bad_options_exit_2(exports, tmp_path, capsys, argv):
    assert bench(exports["tflite"], tmp_path, *argv)[0] == 2
    assert_one_line_error(capsys)


# --- board-only backends -------------------------------------------------------


def _edgetpu_usable():
    if not board.edgetpu_present():
        return False
    try:
        backends.load_tflite_runtime("ai_edge_litert").load_delegate("libedgetpu.so.1")
    except (ImportError, ValueError, OSError):
        return False
    return True


@pytest.mark.skipif(
    _edgetpu_usable(), reason="an Edge TPU is attached: its absence cannot be tested"
)
def test_edgetpu_without_its_runtime_exits_2_saying_what_to_install(exports, tmp_path, capsys):
    assert bench(exports["tflite-int8"], tmp_path, "--backend", "edgetpu")[0] == 2
    assert_one_line_error(capsys, "libedgetpu1-std", "Edge TPU detected: no")


@pytest.mark.skipif(
    _importable("tensorrt"), reason="TensorRT is installed: its absence cannot be tested"
)
def test_tensorrt_without_its_runtime_exits_2_saying_what_to_install(exports, tmp_path, capsys):
    assert bench(exports["onnx"], tmp_path, "--backend", "tensorrt")[0] == 2
    assert_one_line_error(capsys, "python3-libnvinfer", "--backend onnxruntime")


@pytest.mark.skipif(
    board.ncs2_present(), reason="an NCS2 is attached: its absence cannot be tested"
)
def test_openvino_myriad_without_an_ncs2_exits_2_saying_what_to_install(exports, tmp_path, capsys):
    assert bench(exports["openvino"], tmp_path, "--device", "MYRIAD")[0] == 2
    assert_one_line_error(capsys, "no MYRIAD device", "2022.3.1")


@pytest.mark.skipif(
    not _edgetpu_usable(), reason="needs an Edge TPU and libedgetpu (a Coral board)"
)
def test_edgetpu_runs_a_compiled_model(tmp_path):
    # Runs on a Coral board with an export made by the exporters' edgetpu target.
    folder = Path(os.environ.get("EDGETPU_EXPORT", ""))
    if not (folder / manifest.MANIFEST_FILE).is_file():
        pytest.skip("set EDGETPU_EXPORT to an exports/<run>/edgetpu folder")
    assert bench(folder, tmp_path)[0] == 0


@pytest.mark.skipif(
    not (_importable("tensorrt") and (_importable("pycuda") or _importable("cuda"))),
    reason="needs TensorRT and pycuda or cuda-python (a Jetson)",
)
def test_tensorrt_accuracy_equals_onnxruntime_accuracy(exports, tmp_path):
    status, result = bench(
        exports["onnx"], tmp_path, "--backend", "tensorrt", "--precision", "fp32"
    )
    assert status == 0
    assert result["accuracy"] == pytest.approx(result["export_accuracy"], abs=2 / 360)


@pytest.mark.skipif(not board.ncs2_present(), reason="needs an Intel NCS2 and OpenVINO 2022.3")
def test_ncs2_accuracy_is_within_one_percent_of_the_cpu(exports, tmp_path):
    status, result = bench(exports["openvino"], tmp_path, "--device", "MYRIAD")
    assert status == 0 and result["settings"]["precision"] == "FP16"
    assert result["accuracy"] == pytest.approx(result["export_accuracy"], abs=0.01)


# --- device description --------------------------------------------------------


def test_device_label_names_the_accelerator_else_the_board_else_the_cpu():
    desc = {"host": "h", "cpu": "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "board": None}
    assert board.default_label(desc, "tflite") == "intel-core-i7-8700-cpu-3.20ghz"
    assert board.default_label(desc, "openvino", "MYRIAD") == "ncs2"
    assert board.default_label(desc, "edgetpu") == "edgetpu-usb"
    jetson = dict(desc, board="NVIDIA Jetson Nano Developer Kit")
    assert board.default_label(jetson, "tensorrt", "GPU") == "nvidia-jetson-nano-developer-kit"
    coral = dict(desc, board="MediaTek 8167 Coral Dev Board Mini")
    assert board.default_label(coral, "edgetpu") == "mediatek-8167-coral-dev-board-mini"


def test_accelerators_are_recognised_by_their_usb_ids():
    assert board.edgetpu_present({"18d1:9302"}) and board.edgetpu_present({"1a6e:089a"})
    assert board.ncs2_present({"03e7:2485"}) and not board.ncs2_present({"1a6e:089a"})
    if not os.path.exists(board.EDGETPU_PCIE_DEVICE):
        assert not board.edgetpu_present({"8087:0024"})
