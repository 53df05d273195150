"""The `onnx` target: ONNX through tf2onnx, with a dynamic batch and with a fixed batch of 1.

model.onnx takes any batch size (for throughput measurements and TensorRT
optimisation profiles); model_b1.onnx is the same graph with batch 1 fixed,
for runtimes and accelerators that need static shapes. The input stays NHWC,
as the Keras model takes it; tf2onnx adds the transposes ONNX's NCHW
convolutions need.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from exporters.artifact import Artifact, Variant
from exporters.errors import UnsupportedOnTarget, conversion_failed
from exporters.source import Source
from exporters.verify import OnnxPredictor
from pipeline.errors import require

log = logging.getLogger(__name__)

OPSET = 13  # read by ONNX Runtime >= 1.8 and by TensorRT 8.0 (JetPack 4.6)
MODEL_FILE = "model.onnx"
BATCH1_FILE = "model_b1.onnx"


def convert(src: Source, target: str = "onnx"):
    """The Keras model as an ONNX ModelProto with a dynamic batch axis (converted once)."""
    if "onnx" in src.cache:
        return src.cache["onnx"]
    import tensorflow as tf

    tf2onnx = require("tf2onnx", "tf2onnx", f"the {target} target")
    onnx = require("onnx", "onnx", f"the {target} target")
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # it logs every rewrite at INFO
    spec = tf.TensorSpec([None, *src.input_shape], tf.float32, name="image")
    try:
        proto, _ = tf2onnx.convert.from_keras(src.model, input_signature=[spec], opset=OPSET)
        onnx.checker.check_model(proto)
    except Exception as exc:  # tf2onnx raises several types; all mean "cannot convert"
        raise conversion_failed(target, "tf2onnx", exc) from None
    src.cache["onnx"] = proto
    return proto


def fixed_batch(proto, batch: int = 1):
    """A copy of `proto` whose input and output batch dimension is `batch`."""
    onnx = require("onnx", "onnx", "the onnx target")
    fixed = copy.deepcopy(proto)
    for value in [*fixed.graph.input, *fixed.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    # Intermediate shapes were inferred for the dynamic batch; infer them again.
    del fixed.graph.value_info[:]
    fixed = onnx.shape_inference.infer_shapes(fixed, strict_mode=True)
    onnx.checker.check_model(fixed)
    return fixed


def write(src: Source, folder: Path, target: str, batch1: bool = True) -> list[str]:
    """Writes model.onnx (dynamic batch) and, if `batch1`, model_b1.onnx into `folder`."""
    onnx = require("onnx", "onnx", f"the {target} target")
    proto = convert(src, target)
    onnx.save(proto, str(folder / MODEL_FILE))
    if not batch1:
        return [MODEL_FILE]
    try:
        b1 = fixed_batch(proto)
    except Exception as exc:  # shape inference failing means a batch-dependent graph
        raise UnsupportedOnTarget(
            f"{target}: the ONNX graph does not take a fixed batch of 1 ({exc})"
        ) from None
    onnx.save(b1, str(folder / BATCH1_FILE))
    return [MODEL_FILE, BATCH1_FILE]


def description() -> dict:
    """The manifest's "onnx" entry."""
    tf2onnx = require("tf2onnx", "tf2onnx", "the onnx target")
    return {"opset": OPSET, "converted_with": f"tf2onnx {tf2onnx.__version__}", "layout": "NHWC"}


def build(src: Source, folder: Path, cfg) -> Artifact:
    files = write(src, folder, "onnx")
    predictor = OnnxPredictor(folder / MODEL_FILE)
    return Artifact(
        MODEL_FILE,
        files,
        predictor,
        "float32",
        *predictor.describe(),
        variants={"batch1": Variant(BATCH1_FILE, OnnxPredictor(folder / BATCH1_FILE), "float32")},
        manifest={
            "variants": {"dynamic_batch": MODEL_FILE, "batch1": BATCH1_FILE},
            "onnx": description(),
        },
    )


BUILDERS = {"onnx": build}
