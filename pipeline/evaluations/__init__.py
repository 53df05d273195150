"""Post-training evaluations that run for every protection, so runs can be compared.

Each entry maps a name (used by `--evaluations`) to a module with
`evaluate(model, splits, cfg) -> dict`; the dict is stored in metrics.json
under that name. Modules are imported only when run.
"""

from __future__ import annotations

import importlib
import logging
import time

from pipeline.errors import MissingDependency, choice_error

log = logging.getLogger(__name__)

# name -> module defining evaluate(model, splits, cfg) -> dict
EVALUATIONS: dict[str, str] = {
    "membership_inference": "pipeline.evaluations.membership",
    "robustness": "pipeline.evaluations.robustness",
}


def resolve(names: tuple[str, ...]) -> list[str]:
    """Expands "all" and "none" and checks every name."""
    if tuple(names) in (("all",), ()):
        return list(EVALUATIONS)
    if tuple(names) == ("none",):
        return []
    for name in names:
        if name not in EVALUATIONS:
            raise choice_error("evaluation", name, ["all", "none", *EVALUATIONS])
    return list(names)


def run(names: list[str], model, splits, cfg) -> dict:
    results = {}
    for name in names:
        start = time.perf_counter()
        try:
            module = importlib.import_module(EVALUATIONS[name])
            results[name] = module.evaluate(model, splits, cfg)
        except MissingDependency as exc:
            # The model is trained already; losing it for want of an attack library
            # (a Jetson without tensorflow-privacy) would waste the run. Say so instead.
            log.warning("evaluation %s skipped: %s", name, exc)
            results[name] = {"skipped": str(exc)}
            continue
        results[name]["seconds"] = round(time.perf_counter() - start, 3)
        log.info("evaluation %s: %s", name, _short(results[name]))
    return results


def _short(result: dict) -> str:
    parts = [f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)]
    return ", ".join(parts[:6])
