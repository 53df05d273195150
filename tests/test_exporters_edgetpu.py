"""The static Edge TPU compatibility report and the compiler-log parser."""

from __future__ import annotations

import numpy as np

from exporters import edgetpu, edgetpu_compat, tflite
from pipeline import models

# A summary as edgetpu_compiler prints it for a model it maps only in part.
COMPILER_OUTPUT = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 431 ms.

Input model: model.tflite
Input size: 5.61MiB
Output model: model_edgetpu.tflite
Output size: 5.70MiB
On-chip memory used for caching model parameters: 6.25MiB
On-chip memory remaining for caching model parameters: 1.50KiB
Off-chip memory used for streaming uncached model parameters: 512.00KiB
Number of Edge TPU subgraphs: 1
Total number of operations: 9
Operation log: model_edgetpu.log

Operator                       Count      Status

CONV_2D                        6          Mapped to Edge TPU
CUMSUM                         1          Operation not supported
FULLY_CONNECTED                2          More than one subgraph is not supported
"""


def _int8(build_body, input_shape=(8, 8, 1)) -> bytes:
    import tensorflow as tf

    inputs = tf.keras.Input(input_shape, name="image")
    model = tf.keras.Model(inputs, build_body(tf, inputs))
    images = np.random.default_rng(0).random((32, *input_shape), dtype=np.float32)
    return tflite.convert(model, input_shape, "edgetpu", images)


def test_compiler_summary_is_parsed_into_operations_and_memory():
    s = edgetpu.parse_compiler_output(COMPILER_OUTPUT)
    assert s["version"] == "16.0.384591198"
    assert s["on_chip_memory_bytes"] == int(6.25 * 1024**2)
    assert s["on_chip_remaining_bytes"] == int(1.5 * 1024)
    assert s["off_chip_memory_bytes"] == 512 * 1024
    assert s["edgetpu_subgraphs"] == 1 and s["total_operations"] == 9
    assert [(o["op"], o["count"], o["on_edgetpu"]) for o in s["operations"]] == [
        ("CONV_2D", 6, True),
        ("CUMSUM", 1, False),
        ("FULLY_CONNECTED", 2, False),
    ]
    assert (s["edgetpu_operations"], s["cpu_operations"], s["fully_mapped"]) == (6, 3, False)


def test_unsupported_operation_splits_the_graph_and_everything_after_runs_on_cpu():
    def body(tf, inputs):
        x = tf.keras.layers.Flatten()(inputs)
        x = tf.keras.layers.Dense(16, activation="relu")(x)
        x = tf.keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=1))(x)
        return tf.keras.layers.Dense(10)(x)

    report = edgetpu_compat.report(_int8(body))
    ops = report["operations"]
    assert not report["fully_mapped"]
    first = report["first_unsupported"]
    # The int8 converter keeps CUMSUM in float, behind a DEQUANTIZE: either stops the mapping.
    assert first["op"] in ("CUMSUM", "DEQUANTIZE")
    cumsum = next(o for o in ops if o["op"] == "CUMSUM")
    assert cumsum["device"] == "cpu" and "CUMSUM" in report["counts"]
    assert all(o["device"] == "edgetpu" for o in ops[: first["index"]])
    assert all(o["device"] == "cpu" for o in ops[first["index"] :])
    assert ops[-1]["op"] == "FULLY_CONNECTED" and "after the first unsupported" in ops[-1]["reason"]


def test_five_dimensional_tensor_is_flagged():
    def body(tf, inputs):
        x = tf.keras.layers.Dense(64)(tf.keras.layers.Flatten()(inputs))
        x = tf.keras.layers.Reshape((2, 2, 4, 4))(x)
        x = tf.keras.layers.Lambda(lambda t: t * 2.0)(x)
        x = tf.keras.layers.Flatten()(x)
        return tf.keras.layers.Dense(10)(x)

    report = edgetpu_compat.report(_int8(body))
    assert not report["fully_mapped"]
    assert "5 dimensions" in report["first_unsupported"]["reason"]


def test_float_model_is_flagged_as_not_quantised():
    model = models.build("mlp", (8, 8, 1), 10, seed=0)
    report = edgetpu_compat.report(tflite.convert(model, (8, 8, 1), "tflite"))
    assert not report["fully_mapped"]
    assert "float32, not 8-bit quantised" in report["first_unsupported"]["reason"]


def test_dp_ready_cifar10_cnn_is_predicted_to_map_completely():
    # The BatchNorm CNN and the MLP are checked on their real exports in test_exporters.py.
    input_shape = (32, 32, 3)
    model = models.build("cnn", input_shape, 10, dp_ready=True, seed=0)
    images = np.random.default_rng(0).random((16, *input_shape), dtype=np.float32)
    report = edgetpu_compat.report(tflite.convert(model, input_shape, "edgetpu", images))
    assert report["fully_mapped"], report["first_unsupported"]
    assert report["counts"]["TANH"]["edgetpu"] == 8
    # 5.87 M int8 weights (and int32 biases) fit the roughly 8 MiB on-chip memory.
    assert 5_870_000 < report["parameter_bytes"] < edgetpu_compat.ON_CHIP_MEMORY_BYTES
