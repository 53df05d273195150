"""Converter error messages are turned into one line naming the target and the operation."""

from __future__ import annotations

from exporters.errors import conversion_failed, operations_in

# The first lines of what each converter raised for a model using tf.math.erfinv.
TFLITE = (
    "Could not translate MLIR to FlatBuffer. UNKNOWN: model.py:9:1: error: 'tf.Erfinv' op is "
    "neither a custom op nor a flex op\n...\nCustom ops: Erfinv\nDetails:\n"
)
OPENVINO = (
    "Check 'false' failed at src/frontends/common_translators/src/unconverted_ops_report.cpp:151:"
    "\nFrontEnd API failed with OpConversionFailure:\nModel wasn't fully converted.\nSummary:\n"
    "-- No conversion rule found for operations: Erfinv, BesselI0\n"
)


def test_operation_names_are_read_from_converter_messages():
    assert operations_in(TFLITE) == ["Erfinv"]
    assert operations_in(OPENVINO) == ["Erfinv", "BesselI0"]
    assert operations_in("something else went wrong") == []


def test_conversion_error_is_one_line_naming_target_and_operation():
    message = str(conversion_failed("openvino", "OpenVINO's model converter", ValueError(OPENVINO)))
    assert message.startswith("openvino: OpenVINO's model converter cannot convert the operation")
    assert "Erfinv, BesselI0" in message and "\n" not in message
