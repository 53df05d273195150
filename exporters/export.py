"""Exports a trained run to one target (or all), verifies it here and writes its manifest.

  python -m exporters --run runs/mnist-none --target tflite-int8
  make export TARGET=edgetpu DATASET=mnist PROT=none

Each target writes exports/<run>/<target>/ with the model files, the board's
test data (test_data.npz: the whole test split, preprocessed and, for int8
inputs, quantised) and manifest.json (checksums, tensors, preprocessing, the
source run and what verification measured here).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import exporters
from devices import manifest as manifest_format
from exporters import source, verify
from exporters.artifact import Artifact, staging
from exporters.calibration import DEFAULT_SAMPLES, check_source
from pipeline.errors import OneLineParser, UsageError, choice_error, run_cli

log = logging.getLogger(__name__)

OUTPUTS_ARE = "logits"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What to export and how to check it.

    Attributes:
      run: the trained run folder (runs/<name>).
      target: one of exporters.TARGETS, or "all".
      out: the folder that holds exports/<run>/<target>/.
      calibration: int8 representative data: "train", "test" or an .npz of public raw images.
      calibration_samples: representative images, >= 1 (a few hundred fix the ranges).
      qat: fine-tune with quantisation-aware training before int8 conversion.
      qat_epochs: quantisation-aware fine-tuning epochs, >= 1.
      robustness_samples: test images attacked for the transferred robustness, >= 0.
      pgd_steps: PGD iterations for that measurement, >= 1.
      eps: the attacks' L-infinity budget; None uses 0.1 (MNIST-like) or 8/255 (colour).
      data_dir: the data set on this machine; None uses the run's own DATA_DIR.
    """

    run: str
    target: str
    out: str = "exports"
    calibration: str = "train"
    calibration_samples: int = DEFAULT_SAMPLES
    qat: bool = False
    qat_epochs: int = 1
    robustness_samples: int = 500
    pgd_steps: int = 20
    eps: float | None = None
    data_dir: str | None = None

    def __post_init__(self):
        if self.target != "all" and self.target not in exporters.TARGETS:
            raise choice_error("target", self.target, [*exporters.TARGETS, "all"])
        check_source(self.calibration)
        for name in ("calibration_samples", "qat_epochs", "pgd_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"Expected {name} >= 1, got {name}={getattr(self, name)}")
        if self.robustness_samples < 0:
            raise UsageError(
                f"Expected robustness_samples >= 0, got robustness_samples={self.robustness_samples}"
            )
        if self.eps is not None and not 0 < self.eps <= 1:
            raise UsageError(f"Expected 0 < eps <= 1, got eps={self.eps}")

    @property
    def targets(self) -> list[str]:
        return list(exporters.TARGETS) if self.target == "all" else [self.target]


def export(cfg: ExportConfig, src: source.Source | None = None) -> dict[str, dict]:
    """Exports `cfg.run` to each of cfg.targets; returns their manifests by target.

    A target that needs a tool this machine lacks (edgetpu_compiler) still
    writes its folder; the UsageError saying how to install the tool comes
    after every target is done.
    """
    src = src if src is not None else source.load(cfg.run, cfg.data_dir)
    manifests, unfinished = {}, []
    for target in cfg.targets:
        manifests[target], message = export_target(src, target, cfg)
        if message:
            unfinished.append(message)
    if unfinished:
        raise UsageError("; ".join(unfinished))
    return manifests


def export_target(src: source.Source, target: str, cfg: ExportConfig) -> tuple[dict, str | None]:
    """Builds, verifies and writes one target's folder; returns its manifest and any
    message about a step left undone for lack of a tool."""
    start = time.perf_counter()
    final = Path(cfg.out) / src.name / target
    build = exporters.get(target)
    with staging(final) as folder:
        artifact: Artifact = build(src, folder, cfg)

        x_board = artifact.predictor.prepare(src.splits.x_test)
        np.savez(folder / manifest_format.TEST_DATA_FILE, x=x_board, y=src.splits.y_test)

        transfer = verify.transfer_sets(src, cfg.robustness_samples, cfg.pgd_steps, cfg.eps)
        verification = verify.verify(artifact.predictor, src, artifact.precision, transfer)
        if artifact.variants:
            verification["variants"] = {
                name: {
                    "model_file": v.model_file,
                    **verify.verify(v.predictor, src, v.precision, transfer),
                }
                for name, v in artifact.variants.items()
            }
        manifest = {
            "target": target,
            "model_file": artifact.model_file,
            "files": [*artifact.files, manifest_format.TEST_DATA_FILE],
            "input": artifact.input,
            "output": artifact.output,
            "outputs_are": OUTPUTS_ARE,
            "preprocessing": src.preprocessing.to_dict(),
            "test_data": {
                "file": manifest_format.TEST_DATA_FILE,
                "samples": int(len(x_board)),
                "x_dtype": x_board.dtype.name,
                "x_shape": list(x_board.shape),
            },
            "source": src.source_description(),
            "model_size_bytes": sum(
                (folder / f).stat().st_size for f in artifact.size_files or [artifact.model_file]
            ),
            "verification": verification,
            **artifact.manifest,
        }
        manifest = manifest_format.write_manifest(str(folder), manifest)
    _log_result(target, final, verification, time.perf_counter() - start)
    return manifest, artifact.unfinished


def _log_result(target: str, folder: Path, verification: dict, seconds: float) -> None:
    log.info("%s: %s -> %s, %.1f s", target, verify.summary(verification), folder, seconds)
    for name, v in verification.get("variants", {}).items():
        log.info("%s %s: %s", target, name, verify.summary(v))
    checked = [verification, *verification.get("variants", {}).values()]
    if not all(v["goal_met"] for v in checked):
        log.warning(
            "%s: agreement with the Keras model is below the goal; the artifact is written, but "
            "check the disagreements (for int8, try --calibration-samples 1000 or --qat)",
            target,
        )


# --- command line ------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="exporters", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="the trained run folder, runs/<name>")
    p.add_argument("--target", required=True, help=f"one of {', '.join(exporters.TARGETS)}, or all")
    p.add_argument("--out", default="exports", help="exports/<run>/<target>/ goes here")
    p.add_argument(
        "--calibration",
        default="train",
        help="int8 representative data: train, test, or an .npz of public raw images",
    )
    p.add_argument("--calibration-samples", type=int, default=DEFAULT_SAMPLES)
    p.add_argument(
        "--qat", action="store_true", help="quantisation-aware fine-tuning before int8 conversion"
    )
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--robustness-samples", type=int, default=500)
    p.add_argument("--pgd-steps", type=int, default=20)
    p.add_argument("--eps", type=float, default=None, help="default 0.1 (MNIST-like) or 8/255")
    p.add_argument("--data-dir", default=None, help="the data set here, if not the run's DATA_DIR")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = ExportConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ExportConfig)})
    export(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
