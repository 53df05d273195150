"""Stand-ins for the grid's tests: a protection that fails, an exporter and a board runner.

The stand-in exporter and runner write files in the shared formats and log each
call, so the tests can tell what the grid ran and what it skipped.
"""

from __future__ import annotations

import dataclasses

from pipeline.protections.base import Protection

EXPORTER_MAIN = """
import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("--run"); p.add_argument("--target"); p.add_argument("--out")
a = p.parse_args()
run = os.path.basename(a.run.rstrip("/"))
with open(os.environ["GRID_TEST_LOG"], "a") as f:
    f.write("export %s %s\\n" % (run, a.target))
if a.target == "edgetpu":
    print("error: edgetpu_compiler is not installed; see docs", file=sys.stderr)
    sys.exit(2)
folder = os.path.join(a.out, run, a.target)
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, "manifest.json"), "w") as f:
    json.dump({"target": a.target, "model_file": "model", "source": {"run": run},
               "model_size_bytes": 1000, "verification": {"agreement": 1.0}}, f)
"""

BENCH_SCRIPT = """
import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("folder"); p.add_argument("--results"); p.add_argument("--device-label")
p.add_argument("--limit", type=int)
a = p.parse_args()
target = os.path.basename(a.folder.rstrip("/"))
run = os.path.basename(os.path.dirname(a.folder.rstrip("/")))
with open(os.environ["GRID_TEST_LOG"], "a") as f:
    f.write("bench %s %s\\n" % (run, target))
if target == "tensorrt":
    print("error: TensorRT is not installed here; run this on a Jetson", file=sys.stderr)
    sys.exit(2)
dataset, prot = run.split("-", 1)
out = os.path.join(a.results, a.device_label)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "%s-%s.json" % (run, target)), "w") as f:
    json.dump({"device_label": a.device_label, "run": run, "target": target, "dataset": dataset,
               "prot": prot, "backend": "stand-in", "accuracy": 0.9,
               "latency_ms": {"mean": 0.02, "p50": 0.02, "p90": 0.03, "p99": 0.05}}, f)
"""


@dataclasses.dataclass(frozen=True)
class BrokenOptions:
    broken_rate: float = 0.1


class BrokenProtection(Protection):
    """Fails while building its model, as a protection with a bug would."""

    name = "broken"

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--broken-rate", type=float, default=None)

    @classmethod
    def options_from_args(cls, args):
        rate = args.broken_rate
        return BrokenOptions() if rate is None else BrokenOptions(broken_rate=rate)

    def build_model(self, input_shape, num_classes):
        raise RuntimeError("this protection is broken on purpose")


PROTECTION = BrokenProtection
