"""A model that a target cannot take: one error naming the target and the operation."""

from __future__ import annotations

import re

from pipeline.errors import UsageError

# How converters name the operation they stopped at.
_OP_PATTERNS = (
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),  # TFLite converter
    re.compile(r"Custom ops: ([\w, ]+)"),  # TFLite converter
    re.compile(r"'tfl\.(\w+)' op"),  # TFLite quantiser
    re.compile(r"[Nn]o conversion rule found for operations: ([\w, ]+)"),  # OpenVINO frontend
    re.compile(r"[Uu]nsupported ops: Counter\(\{'(\w+)'"),  # tf2onnx
)


class UnsupportedOnTarget(UsageError):
    """A model uses an operation (or shape) that an export target cannot represent or run."""


def operations_in(message: str) -> list[str]:
    """Operation names a converter's error message mentions, in order, without repeats."""
    found: list[str] = []
    for pattern in _OP_PATTERNS:
        for match in pattern.finditer(message):
            for name in match.group(1).split(","):
                name = name.strip()
                if name and name not in found:
                    found.append(name)
    return found


def conversion_failed(target: str, tool: str, exc: BaseException) -> UnsupportedOnTarget:
    """The UsageError for a converter exception: target, operation(s) and the first line."""
    message = str(exc)
    ops = operations_in(message)
    first_line = next((line.strip() for line in message.splitlines() if line.strip()), "")
    what = f"the operation(s) {', '.join(ops)}" if ops else "this model"
    return UnsupportedOnTarget(
        f"{target}: {tool} cannot convert {what} ({type(exc).__name__}: {first_line[:300]}); "
        "nothing was written; replace the operation in the model or choose another target"
    )
