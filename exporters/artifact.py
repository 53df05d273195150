"""An export folder: built under a temporary name, renamed into place only when complete.

A target writes its files into a staging folder next to the final one
(exports/<run>/.tmp-<target>-<pid>); the folder replaces any earlier export
of that target in two renames only after the model files, test data and
manifest are written. A failed export leaves the earlier folder as it was
and no half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from exporters.verify import Predictor


@dataclasses.dataclass
class Variant:
    """A further model file in the same folder (FP16 beside FP32, fixed beside dynamic batch)."""

    model_file: str
    predictor: Predictor
    precision: str


@dataclasses.dataclass
class Artifact:
    """What a target wrote into its folder, and how to run it here.

    Attributes:
      model_file: the file a board loads, relative to the folder.
      files: every file the target wrote (model_file included), for the manifest's checksums.
      predictor: runs model_file here; its prepare() makes the board's test data.
      precision: "float32", "float16" or "int8" (the arithmetic, which sets the agreement goal).
      input, output: the manifest's tensor descriptions.
      size_files: the files that make up model_file's model (an IR's .xml and .bin), for
        model_size_bytes; empty means model_file alone.
      variants: further model files by name, each verified too.
      manifest: further manifest keys of this target (calibration, edgetpu, tensorrt, ...).
      unfinished: set when the folder is complete but a step needs a tool this machine lacks;
        the export ends with this message and exit status 2 after the folder is in place.
    """

    model_file: str
    files: list[str]
    predictor: Predictor
    precision: str
    input: dict
    output: dict
    size_files: list[str] = dataclasses.field(default_factory=list)
    variants: dict[str, Variant] = dataclasses.field(default_factory=dict)
    manifest: dict = dataclasses.field(default_factory=dict)
    unfinished: str | None = None


@contextlib.contextmanager
def staging(final: Path) -> Iterator[Path]:
    """Yields an empty staging folder that replaces `final` when the block completes."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.parent / f".old-{final.name}-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
