"""Exporters: a trained run folder to the artifacts boards run, each verified here first.

  python -m exporters --run runs/mnist-none --target edgetpu
  make export TARGET=all DATASET=mnist PROT=none

One module per target family; each defines `BUILDERS`, mapping its targets to
`build(source, folder, cfg) -> exporters.artifact.Artifact`. Modules are
imported only when their target is chosen, so a missing converter stops only
that target. See docs/exporters.md for what each board needs.
"""

from __future__ import annotations

import importlib

from pipeline.errors import choice_error

# target -> module defining BUILDERS[target]; `all` exports them in this order.
TARGETS: dict[str, str] = {
    "tflite": "exporters.tflite",
    "tflite-int8": "exporters.tflite",
    "edgetpu": "exporters.edgetpu",
    "openvino": "exporters.openvino",
    "onnx": "exporters.onnx",
    "tensorrt": "exporters.tensorrt",
}


def get(target: str):
    """The build function of `target`."""
    if target not in TARGETS:
        raise choice_error("target", target, [*TARGETS, "all"])
    return importlib.import_module(TARGETS[target]).BUILDERS[target]
