"""Static Edge TPU compatibility: which operations of an int8 TFLite model would map.

Where Coral's `edgetpu_compiler` is not installed (it runs on x86-64 Linux
only), this predicts its verdict from the model alone, by the rules Coral
documents at https://coral.ai/docs/edgetpu/models-intro/ ("Model
requirements" and "Supported operations"):

- tensors are 8-bit quantised (int32 only for biases and shape operands);
- tensor sizes are constant at compile time (no dynamic shapes);
- only the three innermost dimensions of a tensor may exceed 1 (and, as a
  conservative rule of this check, no tensor has more than 4 dimensions);
  weights are exempt, as convolution filters are 4-D by layout;
- the operation is in the supported list, within its documented limits;
- the compiler maps one graph from the input on: the first operation that
  cannot be mapped, and everything after it, runs on the CPU.

Parameters beyond the roughly 8 MiB on-chip memory stream from the host
at every inference, which costs latency but not correctness.
"""

from __future__ import annotations

import numpy as np

from exporters.tflite import Graph, graph

RULES_URL = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
ON_CHIP_MEMORY_BYTES = 8 * 1024 * 1024
MAX_ELEMENTS_SOFTMAX = 16000

# TFLite builtin operation -> the documented limitation this check cannot see ("" if none).
SUPPORTED_OPERATIONS = {
    "ADD": "",
    "AVERAGE_POOL_2D": "no fused activation",
    "CONCATENATION": "no fused activation; a constant input must be all zeros, with 2 inputs",
    "CONV_2D": "same dilation in x and y",
    "DEPTHWISE_CONV_2D": "same dilation in x and y",
    "EXPAND_DIMS": "",
    "FULLY_CONNECTED": "default weights format only",
    "L2_NORMALIZATION": "",
    "LOGISTIC": "",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "",
    "MAXIMUM": "",
    "MAX_POOL_2D": "no fused activation",
    "MEAN": "",
    "MINIMUM": "",
    "MUL": "",
    "PACK": "not along the batch dimension",
    "PAD": "not along the batch dimension",
    "PRELU": "alpha 1-dimensional",
    "QUANTIZE": "",
    "REDUCE_MAX": "",
    "REDUCE_MIN": "",
    "RELU": "",
    "RELU6": "",
    "RELU_N1_TO_1": "",
    "RESHAPE": "large tensors may not map",
    "RESIZE_BILINEAR": "3-D input and output; some sizes stay on the CPU for precision",
    "RESIZE_NEAREST_NEIGHBOR": "3-D input and output; some sizes stay on the CPU for precision",
    "RSQRT": "",
    "SLICE": "",
    "SOFTMAX": "",
    "SPACE_TO_DEPTH": "",
    "SPLIT": "not along the batch dimension",
    "SQUARED_DIFFERENCE": "",
    "SQUEEZE": "",
    "STRIDED_SLICE": "all strides 1, no ellipsis or new-axis mask",
    "SUB": "",
    "SUM": "",
    "TANH": "",
    "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}
# Reductions whose axis operand must leave the batch dimension alone.
_REDUCTIONS = ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN")
# Integer types allowed besides 8-bit: int32 biases and shape/axis operands.
_QUANTISED = ("int8", "uint8")


def report(model_content: bytes) -> dict:
    """The predicted mapping of every operation of an int8 TFLite model to the Edge TPU or CPU.

    Returns a JSON-ready dict: fully_mapped, operations [{index, op, device,
    reason}], first_unsupported, counts by operation, parameter_bytes against
    the on-chip memory, and the rules' source.
    """
    g = graph(model_content)
    constants = g.constants
    rows, first = [], None
    for op in g.ops:
        reason = _unsupported_reason(op, g, constants)
        if first is None and reason:
            first = {"index": op["index"], "op": op["op"], "reason": reason}
        elif first is not None and not reason:
            reason = f"after the first unsupported operation ({first['op']} at {first['index']})"
        rows.append(
            {
                "index": op["index"],
                "op": op["op"],
                "device": "cpu" if reason else "edgetpu",
                "reason": reason,
                "limitation_not_checked": SUPPORTED_OPERATIONS.get(op["op"], ""),
            }
        )

    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["op"], {"edgetpu": 0, "cpu": 0})[row["device"]] += 1
    parameter_bytes = sum(_nbytes(g.tensors[i]) for i in constants)
    return {
        "compiler": None,
        "prediction": "static check of the documented rules; the compiler has the last word",
        "rules": RULES_URL,
        "fully_mapped": first is None,
        "edgetpu_operations": sum(r["device"] == "edgetpu" for r in rows),
        "cpu_operations": sum(r["device"] == "cpu" for r in rows),
        "first_unsupported": first,
        "counts": counts,
        "operations": rows,
        "parameter_bytes": parameter_bytes,
        "on_chip_memory_bytes": ON_CHIP_MEMORY_BYTES,
        "parameters_fit_on_chip": parameter_bytes <= ON_CHIP_MEMORY_BYTES,
    }


def _unsupported_reason(op: dict, g: Graph, constants: set[int]) -> str:
    name = op["op"]
    if name not in SUPPORTED_OPERATIONS:
        return f"{name} is not among the Edge TPU's supported operations"
    for i in op["inputs"] + op["outputs"]:
        if i < 0:
            continue
        t = g.tensors[i]
        dtype = np.dtype(t["dtype"]).name
        shape = [int(d) for d in t["shape_signature"]]
        if dtype not in _QUANTISED and not (dtype == "int32" and i in constants):
            return f"tensor {t['name']!r} is {dtype}, not 8-bit quantised"
        if i in constants:
            continue  # the shape rules concern the data flowing through, not weight layouts
        if any(d < 0 for d in shape):
            return f"tensor {t['name']!r} has a dynamic shape {shape}"
        if len(shape) > 4:
            return f"tensor {t['name']!r} has {len(shape)} dimensions (at most 4)"
        if any(d > 1 for d in shape[:-3]):
            return (
                f"tensor {t['name']!r} has shape {shape}: only the 3 innermost dimensions "
                "may exceed 1"
            )
    out = g.tensors[op["outputs"][0]]
    out_shape = [int(d) for d in out["shape"]]
    if name == "FULLY_CONNECTED" and int(np.prod(out_shape[:-1])) != 1:
        return f"FULLY_CONNECTED output {out_shape} is not one-dimensional"
    if name == "SOFTMAX" and (
        int(np.prod(out_shape[:-1])) != 1 or out_shape[-1] > MAX_ELEMENTS_SOFTMAX
    ):
        return f"SOFTMAX on {out_shape}: only a 1-D input of at most 16,000 elements"
    if name in _REDUCTIONS and op["inputs"][1] in constants:
        axes = np.atleast_1d(g.value(op["inputs"][1]))
        if 0 in axes:
            return f"{name} reduces the batch dimension"
    return ""


def _nbytes(tensor: dict) -> int:
    return int(np.prod(tensor["shape"])) * np.dtype(tensor["dtype"]).itemsize
