"""TFLite targets: `tflite` (float32) and `tflite-int8` (full-integer, int8 input and output).

Both are converted from the Keras model traced with a fixed batch of one
image, so every tensor has a static shape (which the Edge TPU compiler
requires; boards run one image at a time, and the interpreter can still
resize the input for batches). The int8 model is calibrated on
representative images (exporters.calibration), or, with `--qat`, fine-tuned
with tensorflow-model-optimization's quantisation-aware training first, for
models that lose accuracy under post-training quantisation.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from exporters import calibration
from exporters.artifact import Artifact
from exporters.errors import conversion_failed
from exporters.source import Source
from exporters.verify import TFLitePredictor, tflite_interpreter
from pipeline import data
from pipeline.errors import require

log = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
QAT_LEARNING_RATE = 1e-4  # fine-tuning from trained weights: a tenth of training's Adam rate


def convert(model, input_shape, target: str, representative: np.ndarray | None = None) -> bytes:
    """Converts a Keras model (batch fixed to 1) to TFLite flatbuffer bytes.

    Args:
      input_shape: one example's shape, NHWC.
      target: names the target in errors.
      representative: preprocessed float images; given, the model is quantised to int8
        throughout with int8 input and output (TFLITE_BUILTINS_INT8), ranges calibrated
        on these images. A quantisation-aware model needs none: its ranges were learned.
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, *input_shape], tf.float32, name="image")])
    def serve(image):
        return {"logits": model(image, training=False)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model
    )
    if representative is not None or _is_quantization_aware(model):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        if representative is not None:
            converter.representative_dataset = lambda: ([x[None]] for x in representative)
    try:
        return converter.convert()
    except Exception as exc:  # the converter raises several types; all mean "cannot convert"
        raise conversion_failed(target, "the TFLite converter", exc) from None


def _is_quantization_aware(model) -> bool:
    return any(type(layer).__name__.startswith("Quantize") for layer in model.layers)


@dataclasses.dataclass
class Graph:
    """A TFLite model's operations in execution order, its tensors and its inputs.

    Each operation: {"index", "op", "inputs", "outputs"} (tensor indices, -1 for an
    omitted optional input); each tensor: the interpreter's tensor details.
    """

    ops: list[dict]
    tensors: dict[int, dict]
    inputs: list[int]
    interpreter: Any

    @property
    def constants(self) -> set[int]:
        """Tensors no operation produces and the caller does not feed: weights, biases, shapes."""
        produced = {i for op in self.ops for i in op["outputs"]}
        used = {i for op in self.ops for i in op["inputs"] if i >= 0}
        return used - produced - set(self.inputs)

    def value(self, index: int) -> np.ndarray:
        return self.interpreter.get_tensor(index)


def graph(model_content: bytes) -> Graph:
    """Reads a TFLite model's graph through the interpreter (no delegates applied)."""
    interpreter, _ = tflite_interpreter(model_content=model_content)
    ops = [
        {
            "index": int(op["index"]),
            "op": op["op_name"],
            "inputs": [int(i) for i in op["inputs"]],
            "outputs": [int(i) for i in op["outputs"]],
        }
        for op in interpreter._get_ops_details()
    ]
    tensors = {int(t["index"]): t for t in interpreter.get_tensor_details()}
    inputs = [int(d["index"]) for d in interpreter.get_input_details()]
    return Graph(ops, tensors, inputs, interpreter)


def float_operations(model_content: bytes) -> list[str]:
    """Operations of a quantised model that still compute in float (the converter kept them)."""
    g = graph(model_content)
    return [
        op["op"]
        for op in g.ops
        if any(
            i >= 0 and np.dtype(g.tensors[i]["dtype"]).name == "float32"
            for i in op["inputs"] + op["outputs"]
        )
        and op["op"] not in ("QUANTIZE", "DEQUANTIZE")
    ]


def quantization_aware(src: Source, epochs: int):
    """Fine-tunes a quantisation-aware copy of the model on the run's training split.

    The fine-tuning is plain Adam without the run's protection: it voids a DP
    guarantee and does not repeat adversarial training or anomaly filtering.
    """
    import tensorflow as tf

    tfmot = require(
        "tensorflow_model_optimization", "tensorflow-model-optimization", "--qat (int8 export)"
    )
    if src.prot != "none":
        log.warning(
            "--qat fine-tunes %s on its training images with plain Adam, without its "
            "protection %r%s",
            src.name,
            src.prot,
            ": the exported model loses the DP guarantee" if src.is_dp else "",
        )
    try:
        qat = tfmot.quantization.keras.quantize_model(src.model)
    except (ValueError, RuntimeError) as exc:
        raise conversion_failed("tflite-int8 --qat", "tensorflow-model-optimization", exc) from None
    qat.compile(
        optimizer=tf.keras.optimizers.Adam(QAT_LEARNING_RATE),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    splits = src.splits
    history = qat.fit(
        data.make_dataset(splits.x_train, splits.y_train, 128, shuffle=True),
        validation_data=data.make_dataset(splits.x_val, splits.y_val, 1024),
        epochs=epochs,
        verbose=0,
    )
    log.info(
        "quantisation-aware fine-tuning: %d epoch(s) on %d training images, val_accuracy %.4f",
        epochs,
        len(splits.x_train),
        history.history["val_accuracy"][-1],
    )
    return qat


def int8_model(src: Source, cfg) -> tuple[bytes, dict]:
    """The int8 TFLite model and its manifest "calibration" entry (converted once per process)."""
    key = ("int8", cfg.calibration, cfg.calibration_samples, cfg.qat, cfg.qat_epochs)
    if key in src.cache:
        return src.cache[key]
    if cfg.qat:
        model = quantization_aware(src, cfg.qat_epochs)
        content = convert(model, src.input_shape, "tflite-int8")
        described = {
            "source": "quantisation-aware training on the training split",
            "samples": int(len(src.splits.x_train)),
            "qat": {"epochs": cfg.qat_epochs, "learning_rate": QAT_LEARNING_RATE},
        }
    else:
        rep = calibration.representative(src, cfg.calibration, cfg.calibration_samples)
        content = convert(src.model, src.input_shape, "tflite-int8", rep.x)
        described = rep.describe()
    described["reads_training_images"] = cfg.qat or cfg.calibration == "train"
    floats = float_operations(content)
    if floats:
        log.warning(
            "the int8 model still computes %s in float: the converter has no int8 kernel "
            "for them; integer-only accelerators run them on the CPU",
            ", ".join(sorted(set(floats))),
        )
    src.cache[key] = (content, described)
    return content, described


def write_model(folder: Path, content: bytes, name: str = MODEL_FILE) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def build_float(src: Source, folder: Path, cfg) -> Artifact:
    path = write_model(folder, convert(src.model, src.input_shape, "tflite"))
    predictor = TFLitePredictor(path)
    tensor_in, tensor_out = predictor.describe()
    return Artifact(MODEL_FILE, [MODEL_FILE], predictor, "float32", tensor_in, tensor_out)


def build_int8(src: Source, folder: Path, cfg) -> Artifact:
    content, described = int8_model(src, cfg)
    path = write_model(folder, content)
    predictor = TFLitePredictor(path)
    tensor_in, tensor_out = predictor.describe()
    manifest = {"calibration": described, "float_operations": float_operations(content)}
    return Artifact(
        MODEL_FILE, [MODEL_FILE], predictor, "int8", tensor_in, tensor_out, manifest=manifest
    )


BUILDERS = {"tflite": build_float, "tflite-int8": build_int8}
