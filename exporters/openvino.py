"""The `openvino` target: OpenVINO IR, FP16 for the Neural Compute Stick 2 and FP32 for CPUs.

The NCS2's MYRIAD plugin was removed after OpenVINO 2022.3 (LTS; 2022.3.1 is
its last release), so the stick runs only on that release, which reads IR
version 11 with operations of opset1 to opset10. The converter here is newer;
the IR is converted with a static input shape (batch 1, which MYRIAD needs)
and checked to use only operations that 2022.3 reads. A newer operation is
an error naming it, rather than an IR the stick cannot load.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from exporters.artifact import Artifact, Variant
from exporters.errors import UnsupportedOnTarget, conversion_failed
from exporters.source import Source
from exporters.verify import OpenVINOPredictor
from pipeline.errors import require

log = logging.getLogger(__name__)

FILES = {"FP32": "model_fp32.xml", "FP16": "model_fp16.xml"}
IR_VERSION = "11"
NEWEST_NCS2_OPSET = 10  # OpenVINO 2022.3's newest operation set
# Layer types the MYRIAD plugin of 2022.3 runs that these models use; others are warned about.
MYRIAD_TESTED_TYPES = {
    "Parameter",
    "Result",
    "Const",
    "Convert",
    "Convolution",
    "GroupConvolution",
    "Add",
    "Multiply",
    "Subtract",
    "MatMul",
    "MaxPool",
    "AvgPool",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Clamp",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "SoftMax",
}


def ir_layers(xml_path: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """The IR's version and its layers as (name, type, opset)."""
    root = ET.parse(xml_path).getroot()
    layers = [(lay.get("name"), lay.get("type"), lay.get("version")) for lay in root.iter("layer")]
    return root.get("version", ""), layers


def check_ncs2_readable(xml_path: Path) -> None:
    """Raises UnsupportedOnTarget if OpenVINO 2022.3 (the NCS2's last) cannot read the IR."""
    version, layers = ir_layers(xml_path)
    if version != IR_VERSION:
        raise UnsupportedOnTarget(
            f"openvino: {xml_path.name} is IR version {version}; the NCS2's OpenVINO 2022.3 "
            f"reads version {IR_VERSION}; convert with an OpenVINO release that writes it"
        )
    for name, kind, opset in layers:
        m = re.fullmatch(r"opset(\d+)", opset or "")
        if m is None or int(m.group(1)) > NEWEST_NCS2_OPSET:
            raise UnsupportedOnTarget(
                f"openvino: operation {kind} ({opset}, layer {name!r}) is newer than OpenVINO "
                f"2022.3, the last release with the NCS2's MYRIAD plugin (up to "
                f"opset{NEWEST_NCS2_OPSET}); replace it in the model or use the FP32 IR on a CPU"
            )
    untested = sorted({kind for _, kind, _ in layers} - MYRIAD_TESTED_TYPES)
    if untested:
        log.warning(
            "openvino: %s uses %s, which 2022.3 reads but these exporters have not seen run "
            "on the NCS2; check it on the stick",
            xml_path.name,
            ", ".join(untested),
        )


def convert(src: Source):
    """The Keras model as an OpenVINO model with a static batch-1 input named "image"."""
    ov = require("openvino", "openvino", "the openvino target")
    try:
        model = ov.convert_model(src.model, input=[1, *src.input_shape])
    except Exception as exc:  # OpConversionFailure and friends
        raise conversion_failed("openvino", "OpenVINO's model converter", exc) from None
    model.inputs[0].get_tensor().set_names({"image"})
    model.outputs[0].get_tensor().set_names({"logits"})
    return model


def build(src: Source, folder: Path, cfg) -> Artifact:
    ov = require("openvino", "openvino", "the openvino target")
    model = convert(src)
    for precision, name in FILES.items():
        ov.save_model(model, str(folder / name), compress_to_fp16=precision == "FP16")
        check_ncs2_readable(folder / name)
    files = [f for name in FILES.values() for f in (name, name.replace(".xml", ".bin"))]

    fp32 = OpenVINOPredictor(folder / FILES["FP32"])
    return Artifact(
        FILES["FP32"],
        files,
        fp32,
        "float32",
        *fp32.describe(),
        size_files=[FILES["FP32"], FILES["FP32"].replace(".xml", ".bin")],
        variants={
            "FP16": Variant(FILES["FP16"], OpenVINOPredictor(folder / FILES["FP16"]), "float16")
        },
        manifest={
            "variants": dict(FILES),
            "openvino": {
                "converted_with": ov.__version__.split("-")[0],
                "ir_version": int(IR_VERSION),
                "ncs2": {
                    "model_file": FILES["FP16"],
                    "device": "MYRIAD",
                    "openvino": "2022.3.1 (the last release with the MYRIAD plugin)",
                    "newest_opset": f"opset{NEWEST_NCS2_OPSET}",
                },
                "layout": "NHWC",
                "fp16_check": "weights rounded to FP16, activations computed in FP32 on the CPU "
                "plugin here; the stick computes activations in FP16",
            },
        },
    )


BUILDERS = {"openvino": build}
