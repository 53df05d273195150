"""The board-side TensorRT build script: argument and folder checks, and its Python 3.6 syntax.

TensorRT itself is not installable here; the engine build runs on the Jetson.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from devices import build_trt_engine as trt_script
from devices import manifest as manifest_format

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
DEVICES = Path(trt_script.__file__).parent


@pytest.fixture
def export_dir(tmp_path):
    """A minimal tensorrt export folder (an ONNX stand-in, calibration data, test data)."""
    folder = tmp_path / "tensorrt"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx stand-in")
    np.save(folder / trt_script.CALIBRATION_FILE, np.zeros((4, 8, 8, 1), np.float32))
    np.savez(folder / manifest_format.TEST_DATA_FILE, x=np.zeros((2, 8, 8, 1)), y=np.zeros(2))
    manifest_format.write_manifest(
        str(folder),
        {
            "target": "tensorrt",
            "model_file": "model.onnx",
            "files": ["model.onnx", trt_script.CALIBRATION_FILE, manifest_format.TEST_DATA_FILE],
            "input": {"name": "image", "shape": [-1, 8, 8, 1], "dtype": "float32"},
        },
    )
    return folder


def test_board_scripts_parse_as_python_3_6():
    for name in ("build_trt_engine.py", "manifest.py"):
        ast.parse((DEVICES / name).read_text(), feature_version=(3, 6))


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_missing_tensorrt_exits_2_saying_where_engines_are_built(export_dir, capsys):
    assert trt_script.main([str(export_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: tensorrt is not installed") and "Jetson" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--opt-batch", "4", "--max-batch", "2"], "opt_batch <= max_batch"),
        (["--workspace-mib", "0"], "workspace_mib >= 1"),
    ],
)
def test_bad_batch_or_workspace_exits_2(export_dir, capsys, argv, message):
    assert trt_script.main([str(export_dir), *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_precision_is_refused_by_the_parser(export_dir):
    with pytest.raises(SystemExit) as exc:
        trt_script.main([str(export_dir), "--precision", "int4"])
    assert exc.value.code == 2


def test_missing_or_tampered_folder_exits_2(export_dir, tmp_path, capsys):
    assert trt_script.main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (export_dir / "model.onnx").write_bytes(b"changed")
    assert trt_script.main([str(export_dir)]) == 2
    assert "does not match its SHA-256" in capsys.readouterr().err


def test_int8_without_calibration_data_and_wrong_target_exit_2(export_dir, capsys):
    manifest = json.loads((export_dir / manifest_format.MANIFEST_FILE).read_text())
    (export_dir / trt_script.CALIBRATION_FILE).unlink()
    del manifest["files"][trt_script.CALIBRATION_FILE]
    manifest_format.write_json_atomic(str(export_dir / manifest_format.MANIFEST_FILE), manifest)
    assert trt_script.main([str(export_dir), "--precision", "int8"]) == 2
    assert "INT8 needs calibration_data.npy" in capsys.readouterr().err

    manifest["target"] = "openvino"
    manifest_format.write_json_atomic(str(export_dir / manifest_format.MANIFEST_FILE), manifest)
    assert trt_script.main([str(export_dir)]) == 2
    assert "holds the openvino export" in capsys.readouterr().err
