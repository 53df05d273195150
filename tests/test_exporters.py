"""Round trips of both project models through every target that runs here, and export errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from devices import manifest as manifest_format
from exporters import TARGETS, edgetpu, export, source, verify
from exporters.export import ExportConfig
from pipeline import data, models, runs
from pipeline.errors import UsageError, run_cli

FLOAT_TARGETS = ("tflite", "openvino", "onnx", "tensorrt")
INT8_TARGETS = ("tflite-int8", "edgetpu")
COMPILER_MISSING = shutil.which(edgetpu.COMPILER) is None
# Small attacks keep the suite fast; the measurement itself is the same.
FAST = {"robustness_samples": 48, "pgd_steps": 5}


@dataclasses.dataclass
class Exported:
    src: source.Source
    manifests: dict  # target -> manifest read back from disk
    message: str | None  # the UsageError the export ended with, if any
    root: Path  # exports/<run>/


def _export_all(src, out: Path) -> Exported:
    message = None
    try:
        export.export(ExportConfig(run=str(src.run_dir), target="all", out=str(out), **FAST), src)
    except UsageError as exc:
        message = str(exc)
    root = out / src.name
    manifests = {t: manifest_format.read_manifest(str(root / t)) for t in TARGETS}
    return Exported(src, manifests, message, root)


def _trained_cnn(splits):
    """The project CNN (BatchNorm variant) on digits after one epoch.

    One epoch leaves BatchNorm's moving statistics far from the data's, so they
    are set to the statistics of the whole training split (momentum 0, one
    pass in training mode): the model then predicts in inference mode what it
    learned, which a round trip needs to be meaningful.
    """
    import tensorflow as tf

    model = models.build("cnn", splits.spec.image_shape, 10, seed=0)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(splits.x_train, splits.y_train, batch_size=32, epochs=1, verbose=0)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(splits.x_train, training=True)
    return model


@pytest.fixture(scope="module")
def mlp(digits_run, tmp_path_factory):
    run_dir, _ = digits_run
    return _export_all(source.load(run_dir), tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    splits = data.load("digits")
    model = _trained_cnn(splits)
    src = source.Source(
        "digits-cnn", None, "digits", "none", "cnn", splits.preprocessing, model, splits
    )
    return _export_all(src, tmp_path_factory.mktemp("exports"))


@pytest.fixture(params=["mlp", "cnn"])
def exported(request):
    return request.getfixturevalue(request.param)


# --- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("target", FLOAT_TARGETS)
def test_float_artifacts_agree_with_keras_on_999_permille(exported, target):
    v = exported.manifests[target]["verification"]
    assert v["precision"] == "float32"
    assert v["agreement"] >= 0.999, v
    assert abs(v["accuracy"] - v["keras_accuracy"]) <= 0.001
    for variant in v.get("variants", {}).values():
        assert variant["agreement"] >= 0.999, variant


@pytest.mark.parametrize("target", INT8_TARGETS)
def test_int8_tflite_agrees_with_keras_on_99_percent(exported, target):
    m = exported.manifests[target]
    assert m["input"]["dtype"] == m["output"]["dtype"] == "int8"
    assert m["verification"]["agreement"] >= 0.99, m["verification"]
    assert m["verification"]["goal_met"]
    assert m["calibration"] == {"source": "train", "samples": 300, "reads_training_images": True}


def test_keras_accuracy_in_manifests_is_the_models_own(exported):
    src, manifests = exported.src, exported.manifests
    keras_acc = float(
        np.mean(np.argmax(src.keras_logits(src.splits.x_test), 1) == src.splits.y_test)
    )
    assert keras_acc > 0.8  # the round trips compare against a model that learned something
    for m in manifests.values():
        assert m["verification"]["keras_accuracy"] == pytest.approx(keras_acc, abs=1e-9)


def test_every_export_folder_matches_its_manifest_and_the_shared_format(exported):
    for target, m in exported.manifests.items():
        manifest_format.verify_files(str(exported.root / target), m)
        assert m["target"] == target
        assert m["format_version"] == manifest_format.FORMAT_VERSION
        assert m["outputs_are"] == "logits"
        assert m["model_file"] in m["files"] and manifest_format.TEST_DATA_FILE in m["files"]
        assert m["preprocessing"]["input_shape"] == [8, 8, 1]
        assert m["source"]["dataset"] == "digits" and m["source"]["prot"] == "none"
        assert m["model_size_bytes"] > 0
        robustness = m["verification"]["robustness"]
        assert [r["attack"] for r in robustness] == ["fgsm", "pgd"]
        assert all(
            r["eps"] == 0.1 and r["samples"] == FAST["robustness_samples"] for r in robustness
        )


def test_board_test_data_reproduces_the_verified_accuracy(mlp, tmp_path):
    src, manifests = mlp.src, mlp.manifests
    folder = tmp_path / "copy"
    for target in ("tflite-int8", "openvino"):
        shutil.copytree(mlp.root / target, folder / target)
        manifest_format.verify_files(str(folder / target), manifests[target])
        with np.load(folder / target / manifest_format.TEST_DATA_FILE) as npz:
            x, y = npz["x"], npz["y"]
        assert len(x) == len(src.splits.x_test) and np.array_equal(y, src.splits.y_test)
        if target == "tflite-int8":
            # Already quantised for the interpreter: feed it as is, as a board does.
            assert x.dtype == np.int8
            interpreter, _ = verify.tflite_interpreter(folder / target / "model.tflite")
            index_in = interpreter.get_input_details()[0]["index"]
            index_out = interpreter.get_output_details()[0]["index"]
            top1 = []
            for image in x:
                interpreter.set_tensor(index_in, image[None])
                interpreter.invoke()
                top1.append(int(np.argmax(interpreter.get_tensor(index_out))))
            accuracy = float(np.mean(np.array(top1) == y))
            assert accuracy == pytest.approx(manifests[target]["verification"]["accuracy"])
        else:
            np.testing.assert_array_equal(x, src.splits.x_test)


def test_onnx_exports_a_dynamic_and_a_fixed_batch_model(mlp):
    import onnxruntime as ort

    src, folder = mlp.src, mlp.root / "onnx"
    dynamic = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    fixed = ort.InferenceSession(str(folder / "model_b1.onnx"), providers=["CPUExecutionProvider"])
    assert not isinstance(dynamic.get_inputs()[0].shape[0], int)
    assert fixed.get_inputs()[0].shape == [1, 8, 8, 1]
    x = src.splits.x_test[:7]
    expected = src.keras_logits(x)
    np.testing.assert_allclose(dynamic.run(None, {"image": x})[0], expected, atol=1e-4)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        fixed.run(None, {"image": x})


def test_openvino_irs_are_readable_by_openvino_2022_3(mlp, tmp_path):
    from exporters import openvino

    folder = mlp.root / "openvino"
    assert mlp.manifests["openvino"]["variants"] == {
        "FP32": "model_fp32.xml",
        "FP16": "model_fp16.xml",
    }
    for name in ("model_fp32.xml", "model_fp16.xml"):
        openvino.check_ncs2_readable(folder / name)
    # The FP16 IR stores half the weight bytes of the FP32 one.
    fp16, fp32 = (
        (folder / "model_fp16.bin").stat().st_size,
        (folder / "model_fp32.bin").stat().st_size,
    )
    assert fp16 == pytest.approx(fp32 / 2, rel=0.02)

    newer = tmp_path / "newer.xml"
    text = (folder / "model_fp32.xml").read_text()
    newer.write_text(
        text.replace('type="ReLU" version="opset1"', 'type="ReLU" version="opset13"', 1)
    )
    with pytest.raises(UsageError, match="ReLU .opset13.*2022.3"):
        openvino.check_ncs2_readable(newer)


def test_tensorrt_folder_carries_calibration_images_and_build_command(mlp):
    m, folder = mlp.manifests["tensorrt"], mlp.root / "tensorrt"
    images = np.load(folder / "calibration_data.npy")
    assert images.shape == (300, 8, 8, 1) and images.dtype == np.float32
    assert set(m["files"]) == {"model.onnx", "calibration_data.npy", "test_data.npz"}
    assert "devices/build_trt_engine.py" in m["tensorrt"]["build_command"]


@pytest.mark.skipif(not COMPILER_MISSING, reason="edgetpu_compiler is installed here")
def test_edgetpu_without_compiler_writes_int8_model_and_report_then_exits_2(mlp):
    message = mlp.message
    assert message.startswith("edgetpu: edgetpu_compiler is not installed")
    assert "coral-edgetpu-stable" in message and "all 4 operations predicted to map" in message
    m = mlp.manifests["edgetpu"]
    assert m["model_file"] == "model.tflite" and not m["edgetpu"]["compiled"]
    report = json.loads((mlp.root / "edgetpu" / edgetpu.REPORT_FILE).read_text())
    assert report["fully_mapped"] and report["compiler"] is None


def test_both_project_models_are_predicted_to_map_completely(mlp, cnn):
    for exported in (mlp, cnn):
        e = exported.manifests["edgetpu"]["edgetpu"]
        assert e["predicted_fully_mapped"], e["first_unsupported"]
        assert e["parameters_fit_on_chip"]


def test_export_runs_edgetpu_compiler_on_path_and_parses_its_log(mlp, tmp_path, monkeypatch):
    src = mlp.src
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / edgetpu.COMPILER
    # Stands in for Coral's compiler: copies the model and prints a summary of its shape.
    fake.write_text(
        "#!/bin/sh\n"
        'for last; do :; done\nout="$(dirname "$last")"\n'
        'cp "$last" "$out/model_edgetpu.tflite"\n'
        'echo "Edge TPU Compiler version 16.0.384591198" > "$out/model_edgetpu.log"\n'
        "cat <<EOF\nEdge TPU Compiler version 16.0.384591198\n"
        "Model compiled successfully in 12 ms.\n"
        "On-chip memory used for caching model parameters: 297.00KiB\n"
        "On-chip memory remaining for caching model parameters: 7.71MiB\n"
        "Off-chip memory used for streaming uncached model parameters: 0.00B\n"
        "Number of Edge TPU subgraphs: 1\nTotal number of operations: 4\n\n"
        "Operator                       Count      Status\n\n"
        "RESHAPE                        1          Mapped to Edge TPU\n"
        "FULLY_CONNECTED                3          Mapped to Edge TPU\nEOF\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    cfg = ExportConfig(run="", target="edgetpu", out=str(tmp_path / "exports"), **FAST)
    m = export.export(cfg, src)["edgetpu"]
    assert m["model_file"] == edgetpu.COMPILED_FILE
    assert {edgetpu.COMPILED_FILE, edgetpu.COMPILER_LOG_FILE} <= set(m["files"])
    compiler = m["edgetpu"]["compiler"]
    assert compiler["fully_mapped"] and compiler["edgetpu_operations"] == 4
    assert compiler["on_chip_memory_bytes"] == 297 * 1024 and compiler["off_chip_memory_bytes"] == 0


def test_int8_calibration_on_test_images_is_recorded(mlp, tmp_path):
    src = mlp.src
    cfg = ExportConfig(run="", target="tflite-int8", out=str(tmp_path), calibration="test", **FAST)
    m = export.export(cfg, src)["tflite-int8"]
    assert m["calibration"] == {"source": "test", "samples": 300, "reads_training_images": False}
    assert m["verification"]["agreement"] >= 0.99


# --- errors -----------------------------------------------------------------------


def test_bad_requests_exit_2_with_one_line_and_write_nothing(digits_run, tmp_path, capsys):
    run_dir, _ = digits_run
    unfinished = tmp_path / "runs" / "digits-none"
    unfinished.mkdir(parents=True)
    for name in (runs.CONFIG_FILE, runs.PREPROCESSING_FILE):
        shutil.copy(run_dir / name, unfinished / name)
    out = tmp_path / "exports"
    cases = [
        (["--run", str(tmp_path / "missing"), "--target", "tflite"], "does not exist; train it"),
        (["--run", str(run_dir), "--target", "coreml"], "unknown target 'coreml'; choose one of"),
        (["--run", str(unfinished), "--target", "tflite"], "has no trained model (model.keras"),
        (["--run", str(run_dir), "--target", "tflite-int8", "--calibration", "x"], "calibration"),
        (["--run", str(run_dir), "--target", "onnx", "--pgd-steps", "0"], "pgd_steps >= 1"),
    ]
    for argv, message in cases:
        assert run_cli(export.main, [*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exc:  # argparse's own errors exit 2 the same way
        run_cli(export.main, ["--target", "onnx"])
    assert exc.value.code == 2 and "required: --run" in capsys.readouterr().err
    assert not out.exists()


def test_command_line_export_writes_a_verified_folder(digits_run, tmp_path):
    run_dir, metrics = digits_run
    argv = ["--run", str(run_dir), "--target", "tflite", "--out", str(tmp_path)]
    assert run_cli(export.main, [*argv, "--robustness-samples", "0"]) == 0
    folder = tmp_path / run_dir.name / "tflite"
    m = manifest_format.read_manifest(str(folder))
    manifest_format.verify_files(str(folder), m)
    assert m["source"]["run_dir"] == str(run_dir)
    assert m["verification"]["keras_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert m["verification"]["robustness"] == []
    assert sorted(p.name for p in tmp_path.joinpath(run_dir.name).iterdir()) == ["tflite"]


def test_unconvertible_operation_names_it_and_the_target_and_keeps_the_earlier_export(tmp_path):
    import tensorflow as tf

    inputs = tf.keras.Input((8, 8, 1), name="image")
    x = tf.keras.layers.Flatten()(inputs)
    x = tf.keras.layers.Lambda(lambda t: tf.math.erfinv(t * 0.5))(x)  # no TFLite/OpenVINO kernel
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))
    splits = data.load("digits")
    src = source.Source(
        "digits-erfinv", None, "digits", "none", "mlp", splits.preprocessing, model, splits
    )
    earlier = tmp_path / "digits-erfinv" / "tflite"
    earlier.mkdir(parents=True)
    (earlier / "manifest.json").write_text("{}")
    for target in ("tflite", "openvino"):
        cfg = ExportConfig(run="", target=target, out=str(tmp_path), **FAST)
        with pytest.raises(UsageError, match=rf"^{target}: .*Erfinv.*nothing was written"):
            export.export(cfg, src)
    assert sorted(p.name for p in (tmp_path / "digits-erfinv").iterdir()) == ["tflite"]
    assert (earlier / "manifest.json").read_text() == "{}"


@pytest.mark.parametrize("target", ["tflite", "tflite-int8", "openvino", "onnx"])
def test_board_runner_reproduces_the_exporters_verified_accuracy(mlp, target, tmp_path):
    # The exporter's folder, as copied to a board, measured by the board runner.
    from devices import run_bench

    folder = mlp.root / target
    argv = [str(folder), "--results", str(tmp_path), "--device-label", "here", "--quiet"]
    assert run_bench.main([*argv, "--threads", "1"]) == 0
    result = json.loads(next(tmp_path.glob("here/*.json")).read_text())
    verified = mlp.manifests[target]["verification"]
    assert result["samples"] == verified["samples"]
    assert result["accuracy"] == pytest.approx(verified["accuracy"], abs=1e-9)
