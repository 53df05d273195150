"""The `tensorrt` target: the ONNX model and INT8 calibration data, for an engine built on the board.

A TensorRT engine is specific to the GPU and the TensorRT version, so it is
built on the Jetson itself by devices/build_trt_engine.py (FP16 by default).
For INT8 the folder carries the representative images (calibration_data.npy,
preprocessed float32 NHWC); the script calibrates with TensorRT's
IInt8EntropyCalibrator2 on them and keeps the resulting calibration.cache
beside the engine. The cache is not written here: its scales come from
TensorRT's own entropy calibration over TensorRT's own (fused) graph, which
only TensorRT computes. Verified here: the ONNX model, with ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters import calibration, onnx
from exporters.artifact import Artifact
from exporters.source import Source
from exporters.verify import OnnxPredictor

CALIBRATION_FILE = "calibration_data.npy"
BUILD_SCRIPT = "devices/build_trt_engine.py"


def build(src: Source, folder: Path, cfg) -> Artifact:
    files = onnx.write(src, folder, "tensorrt", batch1=False)
    rep = calibration.representative(src, cfg.calibration, cfg.calibration_samples)
    np.save(folder / CALIBRATION_FILE, rep.x)
    predictor = OnnxPredictor(folder / onnx.MODEL_FILE)
    export_dir = Path(cfg.out) / src.name / "tensorrt"
    return Artifact(
        onnx.MODEL_FILE,
        [*files, CALIBRATION_FILE],
        predictor,
        "float32",
        *predictor.describe(),
        manifest={
            "calibration": {
                **rep.describe(),
                "file": CALIBRATION_FILE,
                "reads_training_images": cfg.calibration == "train",
            },
            "onnx": onnx.description(),
            "tensorrt": {
                "build_script": BUILD_SCRIPT,
                "build_command": f"python3 {BUILD_SCRIPT} {export_dir}",
                "int8_command": f"python3 {BUILD_SCRIPT} {export_dir} --precision int8",
                "default_precision": "fp16",
                "engine_file": "model_<precision>.engine",
                "int8_calibration": "IInt8EntropyCalibrator2 on the board over "
                f"{CALIBRATION_FILE}; it writes calibration.cache beside the engine",
                "verified_here": "the ONNX model with ONNX Runtime; the engine's agreement "
                "is measured on the board",
            },
        },
    )


BUILDERS = {"tensorrt": build}
