"""Bare loops of each runtime's own invoke call, the reference for the runner's overhead.

  python benchmarks/bare_loops.py tflite exports/<run>/tflite-int8 '{"threads": 1, "xnnpack": true}'

Prints the median milliseconds per call over the export's test samples at
batch 1, after a warm-up. Runs in its own process (numpy and the runtime only),
as devices/run_bench.py does on a board, so neither carries TensorFlow's state.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

WARMUP = 50


def _timed(call, x) -> list[float]:
    clock = time.perf_counter
    for i in range(min(WARMUP, len(x))):
        call(x[i : i + 1])
    seconds = []
    for i in range(len(x)):
        sample = x[i : i + 1]
        start = clock()
        call(sample)
        seconds.append(clock() - start)
    return seconds


def bare_tflite(folder: Path, x, settings: dict) -> list[float]:
    from ai_edge_litert import interpreter as litert

    resolver = (
        litert.OpResolverType.BUILTIN
        if settings["xnnpack"]
        else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interp = litert.Interpreter(
        model_path=str(folder / "model.tflite"),
        num_threads=settings["threads"],
        experimental_op_resolver_type=resolver,
    )
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]

    def call(sample):
        interp.set_tensor(inp, sample)
        interp.invoke()
        return interp.get_tensor(out)

    return _timed(call, x)


def bare_onnxruntime(folder: Path, x, settings: dict) -> list[float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings["threads"]
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    return _timed(lambda sample: session.run(None, {name: sample}), x)


def bare_openvino(folder: Path, x, settings: dict) -> list[float]:
    """The cheapest loop: one shared input tensor, refilled per sample, then infer()."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(folder / settings["model_file"]), "CPU", settings["config"]
    )
    request = compiled.create_infer_request()
    buffer = np.zeros((1, *x.shape[1:]), x.dtype)
    request.set_input_tensor(ov.Tensor(buffer, shared_memory=True))

    def call(sample):
        buffer[...] = sample
        request.infer()
        return request.get_output_tensor(0).data

    return _timed(call, x)


def bare_openvino_dict(folder: Path, x, settings: dict) -> list[float]:
    """The loop OpenVINO's documentation shows: infer() with a dict of inputs per sample."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(folder / settings["model_file"]), "CPU", settings["config"]
    )
    request = compiled.create_infer_request()
    return _timed(lambda sample: request.infer({0: sample}), x)


LOOPS = {
    "tflite": bare_tflite,
    "onnxruntime": bare_onnxruntime,
    "openvino": bare_openvino,
    "openvino-dict": bare_openvino_dict,
}


def main(argv: list[str]) -> int:
    kind, folder, settings = argv[0], Path(argv[1]), json.loads(argv[2])
    x = np.load(folder / "test_data.npz")["x"]
    print(f"{np.median(LOOPS[kind](folder, x, settings)) * 1e3:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
