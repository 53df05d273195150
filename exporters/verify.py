"""Runs an artifact here and compares it with the Keras model it came from.

Each runtime this machine has (the TFLite interpreter, OpenVINO's CPU plugin,
ONNX Runtime) is wrapped as a `Predictor`: float32 preprocessed images in,
float32 logits out, with the artifact's own input conversion (int8
quantisation) in between. `verify` measures top-1 agreement with Keras and
test accuracy on the whole test split, and the accuracy on adversarial
examples crafted against the Keras model and transferred to the artifact, so
the report shows whether conversion weakens or strengthens a protection.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from exporters.source import Source
from pipeline import attacks
from pipeline.errors import UsageError, require

log = logging.getLogger(__name__)

# Minimum top-1 agreement with the Keras model, by the artifact's arithmetic.
AGREEMENT_GOALS = {"float32": 0.999, "float16": 0.999, "int8": 0.99}
BATCH_SIZE = 256


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Float to integer the way TFLite does: round(x / scale) + zero_point, saturated."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def tflite_interpreter(model_path: str | Path | None = None, model_content: bytes | None = None):
    """A TFLite interpreter without delegates: LiteRT's when installed, else TensorFlow's.

    Returns (interpreter, runtime description). Without the default XNNPACK
    delegate the interpreter lists the model's own operations and runs them
    on its built-in CPU kernels.
    """
    try:
        from ai_edge_litert import interpreter as litert

        interpreter_class, resolvers = litert.Interpreter, litert.OpResolverType
        runtime = f"ai-edge-litert {_version('ai-edge-litert')}"
    except ImportError:
        tf = require("tensorflow", "tensorflow", "TFLite verification")
        interpreter_class, resolvers = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
        runtime = f"tensorflow.lite {tf.__version__}"
    interpreter = interpreter_class(
        model_path=None if model_path is None else str(model_path),
        model_content=model_content,
        experimental_op_resolver_type=resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    return interpreter, runtime


class Predictor:
    """Runs one artifact file here: float32 preprocessed images in, float32 logits out."""

    runtime = ""
    input_quantization: dict | None = None  # {"scale", "zero_point"} for integer inputs
    input_dtype = np.float32

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed float images to what the artifact takes (quantised for int8 inputs)."""
        if self.input_quantization is None:
            return np.asarray(x, np.float32)
        q = self.input_quantization
        return quantize(x, q["scale"], q["zero_point"], self.input_dtype)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits for preprocessed float images, shape (len(x), classes)."""
        prepared = self.prepare(x)
        batch = self._batch_size()
        outputs = [
            self._run(prepared[i : i + batch])
            for i in tqdm(
                range(0, len(prepared), batch),
                desc=self.runtime.split()[0],
                leave=False,
                disable=True if len(prepared) < 2000 else None,  # None: only on a terminal
            )
        ]
        return np.concatenate(outputs).astype(np.float32)

    def _batch_size(self) -> int:
        return 1

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TFLitePredictor(Predictor):
    """A .tflite model on the TFLite interpreter's CPU kernels, one image at a time."""

    def __init__(self, model_path: str | Path):
        self.interpreter, self.runtime = tflite_interpreter(model_path=model_path)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_dtype = self.input["dtype"]
        self.input_quantization = _tflite_quantization(self.input)
        self.output_quantization = _tflite_quantization(self.output)

    def describe(self) -> tuple[dict, dict]:
        """The manifest's "input" and "output" entries."""
        return _tflite_tensor(self.input), _tflite_tensor(self.output)

    def _run(self, x):
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if self.output_quantization is None:
            return y.copy()
        q = self.output_quantization
        return (y.astype(np.float32) - q["zero_point"]) * np.float32(q["scale"])


def _tflite_quantization(detail: dict) -> dict | None:
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32 or scale == 0:
        return None
    return {"scale": float(scale), "zero_point": int(zero_point)}


def _tflite_tensor(detail: dict) -> dict:
    return {
        "name": detail["name"],
        "shape": [int(d) for d in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": _tflite_quantization(detail),
    }


class OpenVINOPredictor(Predictor):
    """An OpenVINO IR on the CPU plugin, in full float32 arithmetic (no bf16 shortcut)."""

    def __init__(self, xml_path: str | Path):
        ov = require("openvino", "openvino", "OpenVINO verification")
        core = ov.Core()
        model = core.read_model(str(xml_path))
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()
        self.runtime = f"openvino {ov.__version__.split('-')[0]} CPU"
        self.static_batch = not model.input(0).get_partial_shape().is_dynamic

    def describe(self) -> tuple[dict, dict]:
        """The manifest's "input" and "output" entries."""

        def tensor(port) -> dict:
            return {
                "name": port.get_any_name(),
                "shape": [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()],
                "dtype": port.get_element_type().to_dtype().name,
                "quantization": None,
            }

        return tensor(self.compiled.input(0)), tensor(self.compiled.output(0))

    def _batch_size(self):
        return 1 if self.static_batch else BATCH_SIZE

    def _run(self, x):
        self.request.infer({0: x})
        return self.request.get_output_tensor(0).data.copy()


class OnnxPredictor(Predictor):
    """An ONNX model on ONNX Runtime's CPU execution provider."""

    def __init__(self, onnx_path: str | Path):
        ort = require("onnxruntime", "onnxruntime", "ONNX verification")
        self.session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        batch = self.session.get_inputs()[0].shape[0]
        self.static_batch = isinstance(batch, int)
        self.runtime = f"onnxruntime {ort.__version__} CPU"

    def describe(self) -> tuple[dict, dict]:
        """The manifest's "input" and "output" entries (-1 for a dynamic batch)."""

        def tensor(arg) -> dict:
            return {
                "name": arg.name,
                "shape": [d if isinstance(d, int) else -1 for d in arg.shape],
                "dtype": "float32" if arg.type == "tensor(float)" else arg.type,
                "quantization": None,
            }

        return tensor(self.session.get_inputs()[0]), tensor(self.session.get_outputs()[0])

    def _batch_size(self):
        return 1 if self.static_batch else BATCH_SIZE

    def _run(self, x):
        return self.session.run(None, {self.input_name: x})[0]


# --- transferred adversarial examples ----------------------------------------


@dataclasses.dataclass(frozen=True)
class TransferSet:
    """Adversarial test images crafted against the Keras model, and its accuracy on them."""

    attack: str
    eps: float
    steps: int | None
    x: np.ndarray
    y: np.ndarray
    keras_accuracy: float


def default_eps(source: Source) -> float:
    """The data set's customary L-infinity budget: 0.1 for MNIST-like images, 8/255 for colour."""
    return 0.1 if source.spec.mnist_like else 8 / 255


def transfer_sets(
    source: Source, samples: int, pgd_steps: int, eps: float | None = None
) -> list[TransferSet]:
    """FGSM and PGD examples for the first `samples` test images (crafted once per process).

    Args:
      samples: test images to attack, >= 0 (0 skips the robustness measurement).
      pgd_steps: PGD iterations, >= 1.
      eps: the L-infinity budget; None uses default_eps.
    """
    eps = default_eps(source) if eps is None else eps
    key = ("transfer", samples, pgd_steps, eps)
    if key in source.cache:
        return source.cache[key]
    if samples == 0:
        return []
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)  # PGD's random start
    x, y = source.splits.x_test[:samples], source.splits.y_test[:samples]
    lo, hi = source.preprocessing.value_range
    sets = []
    for attack, steps in (("fgsm", None), ("pgd", pgd_steps)):
        start = time.perf_counter()
        extra = {"steps": steps} if steps else {}
        x_adv = attacks.adversarial_examples(
            source.model, x, y, attack, eps, clip_min=lo, clip_max=hi, **extra
        ).astype(np.float32)
        keras_acc = float(np.mean(np.argmax(source.keras_logits(x_adv), 1) == y))
        sets.append(TransferSet(attack, eps, steps, x_adv, y, keras_acc))
        log.info(
            "%s: %s eps %.4g on %d test images, Keras accuracy %.4f, %.1f s",
            source.name,
            attack.upper(),
            eps,
            len(x),
            keras_acc,
            time.perf_counter() - start,
        )
    source.cache[key] = sets
    return sets


# --- verification --------------------------------------------------------------


def verify(
    predictor: Predictor, source: Source, precision: str, transfer: list[TransferSet]
) -> dict:
    """Top-1 agreement with Keras and accuracy on the test split, plus transferred robustness.

    Args:
      precision: "float32", "float16" or "int8", which chooses the agreement goal.
      transfer: adversarial sets from transfer_sets ([] skips robustness).
    Returns the manifest's "verification" entry.
    """
    if precision not in AGREEMENT_GOALS:
        raise UsageError(f"unknown precision {precision!r}; choose one of {list(AGREEMENT_GOALS)}")
    start = time.perf_counter()
    x, y = source.splits.x_test, source.splits.y_test
    keras_top1 = source.keras_test_predictions()
    top1 = np.argmax(predictor.predict(x), axis=1)
    goal = AGREEMENT_GOALS[precision]
    agreement = float(np.mean(top1 == keras_top1))
    result = {
        "runtime": predictor.runtime,
        "precision": precision,
        "samples": int(len(x)),
        "agreement": agreement,
        "disagreements": int(np.sum(top1 != keras_top1)),
        "accuracy": float(np.mean(top1 == y)),
        "keras_accuracy": float(np.mean(keras_top1 == y)),
        "agreement_goal": goal,
        "goal_met": agreement >= goal,
        "robustness": [
            {
                "attack": s.attack,
                "eps": s.eps,
                "steps": s.steps,
                "samples": int(len(s.x)),
                "keras_accuracy": s.keras_accuracy,
                "artifact_accuracy": float(np.mean(np.argmax(predictor.predict(s.x), 1) == s.y)),
            }
            for s in transfer
        ],
    }
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def summary(verification: dict) -> str:
    """One log line: agreement against its goal, accuracy, transferred robustness."""
    v = verification
    parts = [
        f"agreement {v['agreement']:.4f} on {v['samples']} test images "
        f"(goal {v['agreement_goal']}: {'met' if v['goal_met'] else 'MISSED'})",
        f"accuracy {v['accuracy']:.4f} (Keras {v['keras_accuracy']:.4f})",
    ]
    parts += [
        f"{r['attack'].upper()} eps {r['eps']:.3g}: {r['artifact_accuracy']:.4f} "
        f"(Keras {r['keras_accuracy']:.4f})"
        for r in v["robustness"]
    ]
    return ", ".join(parts) + f", {v['runtime']}"
