"""Small export folders for the board runner's tests and benchmark, built straight with each converter.

They follow the export-folder contract (manifest.json written by
devices.manifest.write_manifest, test_data.npz with x and y) without depending
on the exporters, so the runner is tested on its own. Each manifest's
verification.accuracy is computed here with the artifact's own runtime.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from devices import manifest

# How many training images calibrate full-int8 quantisation.
CALIBRATION_SAMPLES = 100


def _write(meta, folder: Path, target, model_file, files, x, y, io, accuracy, runtime, **extra):
    np.savez(folder / manifest.TEST_DATA_FILE, x=x, y=y)
    info = {
        "target": target,
        "model_file": model_file,
        "files": [*files, manifest.TEST_DATA_FILE],
        "input": io[0],
        "output": io[1],
        "outputs_are": "logits",
        "preprocessing": meta["preprocessing"],
        "source": meta["source"],
        "model_size_bytes": sum(os.path.getsize(folder / f) for f in files),
        "verification": {"runtime": runtime, "accuracy": accuracy, "samples": len(y)},
        **extra,
    }
    return manifest.write_manifest(str(folder), info)


def _spec(name, shape, dtype, quant=None):
    shape = [None if d is None else int(d) for d in shape]
    return {"name": name, "shape": shape, "dtype": dtype, "quantization": quant}


def _quantization(details):
    scale, zero_point = details["quantization"]
    return {"scale": float(scale), "zero_point": int(zero_point)}


def _tflite_accuracy(path, x, y):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    hits = 0
    for i in range(len(x)):
        interp.set_tensor(inp["index"], x[i : i + 1])
        interp.invoke()
        hits += int(interp.get_tensor(out["index"]).argmax() == y[i])
    return hits / len(y), inp, out


def build_tflite(meta, root: Path, model, x, y, calibration, int8: bool) -> Path:
    import tensorflow as tf

    target = "tflite-int8" if int8 else "tflite"
    folder = root / target
    folder.mkdir(parents=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [calibration[i : i + 1]] for i in range(len(calibration))
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    (folder / "model.tflite").write_bytes(converter.convert())
    if int8:
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(folder / "model.tflite")).get_input_details()[0]
        scale, zero_point = details["quantization"]
        x = np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)
    accuracy, inp, out = _tflite_accuracy(folder / "model.tflite", x, y)
    dtype = "int8" if int8 else "float32"
    io = (
        _spec(inp["name"], inp["shape"], dtype, _quantization(inp) if int8 else None),
        _spec(out["name"], out["shape"], dtype, _quantization(out) if int8 else None),
    )
    _write(
        meta, folder, target, "model.tflite", ["model.tflite"], x, y, io, accuracy, "ai_edge_litert"
    )
    return folder


def build_onnx(meta, root: Path, model, x, y) -> Path:
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    folder = root / "onnx"
    folder.mkdir(parents=True)
    spec = [tf.TensorSpec((None, *x.shape[1:]), tf.float32, name="image")]
    tf2onnx.convert.from_keras(
        model, input_signature=spec, opset=13, output_path=str(folder / "model.onnx")
    )
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    predicted = [int(session.run(None, {name: x[i : i + 1]})[0].argmax()) for i in range(len(x))]
    accuracy = float(np.mean(np.array(predicted) == y))
    io = (_spec(name, [None, *x.shape[1:]], "float32"), _spec("logits", [None, 10], "float32"))
    _write(meta, folder, "onnx", "model.onnx", ["model.onnx"], x, y, io, accuracy, "onnxruntime")
    return folder


def build_openvino(meta, root: Path, onnx_file: Path, x, y) -> Path:
    import openvino as ov

    folder = root / "openvino"
    folder.mkdir(parents=True)
    # From the ONNX file: converting the SavedModel gives the same IR but takes ~10x longer.
    model = ov.convert_model(str(onnx_file))
    model.reshape([1, *x.shape[1:]])
    ov.save_model(model, str(folder / "model_fp32.xml"), compress_to_fp16=False)
    ov.save_model(model, str(folder / "model_fp16.xml"), compress_to_fp16=True)
    compiled = ov.Core().compile_model(str(folder / "model_fp32.xml"), "CPU")
    predicted = [int(compiled(x[i : i + 1])[0].argmax()) for i in range(len(x))]
    accuracy = float(np.mean(np.array(predicted) == y))
    files = ["model_fp32.xml", "model_fp32.bin", "model_fp16.xml", "model_fp16.bin"]
    io = (_spec("image", [1, *x.shape[1:]], "float32"), _spec("logits", [1, 10], "float32"))
    variants = {"FP16": "model_fp16.xml", "FP32": "model_fp32.xml"}
    _write(
        meta,
        folder,
        "openvino",
        "model_fp32.xml",
        files,
        x,
        y,
        io,
        accuracy,
        "openvino",
        variants=variants,
    )
    return folder


def build_keras(meta, root: Path, model_path: Path, model, x, y) -> Path:
    folder = root / "keras"
    folder.mkdir(parents=True)
    shutil.copy(model_path, folder / "model.keras")
    accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), 1) == y))
    io = (_spec("image", [None, *x.shape[1:]], "float32"), _spec("logits", [None, 10], "float32"))
    _write(meta, folder, "keras", "model.keras", ["model.keras"], x, y, io, accuracy, "tensorflow")
    return folder


def build_all(run_dir: Path, root: Path) -> dict[str, Path]:
    """Every target this machine can produce, from a finished run, into root/<run name>/."""
    import tensorflow as tf

    from pipeline import data

    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = metrics["config"]
    splits = data.load(cfg["dataset"], cfg["data_dir"], cfg["val_fraction"], cfg["seed"])
    x, y = splits.x_test.astype(np.float32), splits.y_test.astype(np.int64)
    meta = {
        "source": {
            "run": run_dir.name,
            "run_dir": str(run_dir),
            "dataset": cfg["dataset"],
            "prot": cfg["prot"],
            "model": cfg["model"],
        },
        "preprocessing": splits.preprocessing.to_dict(),
    }
    root = root / run_dir.name
    model = tf.keras.models.load_model(run_dir / "model.keras")
    calibration = splits.x_train[:CALIBRATION_SAMPLES]
    folders = {
        "tflite": build_tflite(meta, root, model, x, y, calibration, int8=False),
        "tflite-int8": build_tflite(meta, root, model, x, y, calibration, int8=True),
        "onnx": build_onnx(meta, root, model, x, y),
        "keras": build_keras(meta, root, run_dir / "model.keras", model, x, y),
    }
    folders["openvino"] = build_openvino(meta, root, folders["onnx"] / "model.onnx", x, y)
    return folders
