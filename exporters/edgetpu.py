"""The `edgetpu` target: the int8 TFLite model compiled by Coral's edgetpu_compiler.

The compiler (x86-64 Linux only) maps the operations it can to the Edge TPU
and leaves the rest to the CPU; its log says which, and how many parameter
bytes it caches on chip or streams from the host. Where it is not installed
the folder still gets the int8 model and a static compatibility report
(exporters.edgetpu_compat), and the export ends with exit status 2 and how to
install the compiler. Both report kinds go into edgetpu_report.json.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

from exporters import edgetpu_compat, tflite
from exporters.artifact import Artifact
from exporters.errors import UnsupportedOnTarget
from exporters.source import Source
from exporters.verify import TFLitePredictor
from pipeline import runs

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
COMPILED_FILE = "model_edgetpu.tflite"
COMPILER_LOG_FILE = "model_edgetpu.log"
REPORT_FILE = "edgetpu_report.json"
COMPILE_TIMEOUT_SECONDS = 900
INSTALL_HINT = (
    "install Coral's compiler on an x86-64 Linux host (apt repository "
    "https://packages.cloud.google.com/apt, suite coral-edgetpu-stable, package "
    "edgetpu-compiler; see docs/exporters.md) and export again"
)

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = r"([\d.]+)\s*(B|KiB|MiB|GiB)"


def parse_compiler_output(text: str) -> dict:
    """Reads edgetpu_compiler's summary: version, memory use and each operation's mapping.

    Returns {version, edgetpu_subgraphs, total_operations, on_chip_memory_bytes,
    on_chip_remaining_bytes, off_chip_memory_bytes, operations [{op, count, status,
    on_edgetpu}], edgetpu_operations, cpu_operations, fully_mapped}.
    """

    def size(label: str) -> int | None:
        m = re.search(rf"{label}:\s*{_SIZE}", text)
        return int(round(float(m.group(1)) * _UNITS[m.group(2)])) if m else None

    def number(label: str) -> int | None:
        m = re.search(rf"{label}:\s*(\d+)", text)
        return int(m.group(1)) if m else None

    version = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    operations = []
    table = text.split("Operator", 1)[1] if re.search(r"^Operator\s+Count", text, re.M) else ""
    for m in re.finditer(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$", table, re.M):
        status = m.group(3)
        operations.append(
            {
                "op": m.group(1),
                "count": int(m.group(2)),
                "status": status,
                "on_edgetpu": status.startswith("Mapped to Edge TPU"),
            }
        )
    on_tpu = sum(o["count"] for o in operations if o["on_edgetpu"])
    on_cpu = sum(o["count"] for o in operations if not o["on_edgetpu"])
    return {
        "version": version.group(1) if version else None,
        "edgetpu_subgraphs": number("Number of Edge TPU subgraphs"),
        "total_operations": number("Total number of operations"),
        "on_chip_memory_bytes": size("On-chip memory used for caching model parameters"),
        "on_chip_remaining_bytes": size("On-chip memory remaining for caching model parameters"),
        "off_chip_memory_bytes": size(
            "Off-chip memory used for streaming uncached model parameters"
        ),
        "operations": operations,
        "edgetpu_operations": on_tpu,
        "cpu_operations": on_cpu,
        "fully_mapped": bool(operations) and on_cpu == 0,
    }


def compile_model(compiler: str, model_path: Path) -> dict:
    """Runs edgetpu_compiler on `model_path`, writing beside it; returns the parsed summary."""
    cmd = [compiler, "--show_operations", "--out_dir", str(model_path.parent), str(model_path)]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UnsupportedOnTarget(f"edgetpu: {compiler} could not run ({exc})") from None
    output = done.stdout + done.stderr
    compiled = model_path.parent / COMPILED_FILE
    if done.returncode != 0 or not compiled.is_file():
        last = [line for line in output.splitlines() if line.strip()][-1:] or ["no output"]
        raise UnsupportedOnTarget(
            f"edgetpu: {compiler} failed with status {done.returncode} ({last[0].strip()}); "
            f"see {REPORT_FILE} of a run without the compiler for the operations it would map"
        )
    summary = parse_compiler_output(output)
    summary["command"] = " ".join(cmd[:1] + cmd[1:-1] + [model_path.name])
    return summary


def build(src: Source, folder: Path, cfg) -> Artifact:
    content, described = tflite.int8_model(src, cfg)
    model_path = tflite.write_model(folder, content)
    report = edgetpu_compat.report(content)
    if not report["fully_mapped"]:
        first = report["first_unsupported"]
        log.warning(
            "edgetpu: predicted to stop mapping at operation %d (%s: %s); it and the %d "
            "after it would run on the CPU",
            first["index"],
            first["op"],
            first["reason"],
            report["cpu_operations"] - 1,
        )

    compiler = shutil.which(COMPILER)
    files = [tflite.MODEL_FILE, REPORT_FILE]
    if compiler:
        report["compiler"] = compile_model(compiler, model_path)
        files += [COMPILED_FILE] + [COMPILER_LOG_FILE] * (folder / COMPILER_LOG_FILE).is_file()
        summary = report["compiler"]
        log.info(
            "edgetpu: compiler %s mapped %d of %d operations, %s on-chip, %s off-chip bytes",
            summary["version"],
            summary["edgetpu_operations"],
            summary["edgetpu_operations"] + summary["cpu_operations"],
            summary["on_chip_memory_bytes"],
            summary["off_chip_memory_bytes"],
        )
    runs.write_json_atomic(folder / REPORT_FILE, report)

    predictor = TFLitePredictor(model_path)
    tensor_in, tensor_out = predictor.describe()
    manifest = {
        "calibration": described,
        "edgetpu": {
            "compiled": bool(compiler),
            "verified_file": tflite.MODEL_FILE,
            "report": REPORT_FILE,
            "predicted_fully_mapped": report["fully_mapped"],
            "first_unsupported": report["first_unsupported"],
            "parameter_bytes": report["parameter_bytes"],
            "parameters_fit_on_chip": report["parameters_fit_on_chip"],
            "compiler": report["compiler"],
        },
    }
    unfinished = None
    if not compiler:
        verdict = (
            f"all {report['edgetpu_operations']} operations predicted to map"
            if report["fully_mapped"]
            else f"predicted to map {report['edgetpu_operations']} of "
            f"{report['edgetpu_operations'] + report['cpu_operations']} operations"
        )
        unfinished = (
            f"edgetpu: {COMPILER} is not installed; wrote the int8 model and {REPORT_FILE} "
            f"({verdict}) to {Path(cfg.out) / src.name / 'edgetpu'}; to compile, {INSTALL_HINT}"
        )
    return Artifact(
        COMPILED_FILE if compiler else tflite.MODEL_FILE,
        files,
        predictor,
        "int8",
        tensor_in,
        tensor_out,
        manifest=manifest,
        unfinished=unfinished,
    )


BUILDERS = {"edgetpu": build}
