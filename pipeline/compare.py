"""What each protection costs and buys, measured against the unprotected run of the same data set.

Costs: the change in clean test accuracy (percentage points) and the ratio of
training times. Gains, each in percentage points:
  robustness  accuracy under the reference attack (PGD at the smallest radius both runs
              were evaluated at, see reference_attack), run minus baseline;
  privacy     the membership-inference attacker's advantage (max TPR - FPR), baseline minus run;
  poisoning   for anomaly filtering with injected records: accuracy with the filter minus
              accuracy of the same training without it.
"""

from __future__ import annotations

import dataclasses

from pipeline.collect import Run

BASELINE = "none"
# Protections in the order every table and chart lists them; others follow alphabetically.
PROTECTION_ORDER = ("none", "dp", "adv", "adv-retrain", "anomaly", "he")
GAIN_KINDS = ("robustness", "privacy", "poisoning")


def protection_sort_key(prot: str) -> tuple[int, str]:
    known = PROTECTION_ORDER.index(prot) if prot in PROTECTION_ORDER else len(PROTECTION_ORDER)
    return known, prot


def attack_label(entry: dict) -> str:
    """'FGSM eps=0.1' or 'PGD-40 eps=0.1' for a robustness.attacks entry."""
    name = str(entry.get("attack", "?")).upper()
    if entry.get("steps"):
        name += f"-{entry['steps']}"
    return f"{name} ε={entry.get('eps', '?'):g}" if _is_num(entry.get("eps")) else name


def robust_accuracies(metrics: dict) -> dict[str, float]:
    """{attack label: accuracy} from metrics["robustness"], empty when not evaluated."""
    robustness = metrics.get("robustness") or {}
    out = {}
    for entry in robustness.get("attacks") or []:
        if isinstance(entry, dict) and _is_num(entry.get("accuracy")):
            out[attack_label(entry)] = float(entry["accuracy"])
    return out


def training_seconds(metrics: dict) -> float:
    """Epoch time plus the time a protection spends on the data before training.

    The anomaly filter scores the training set before the first epoch
    (protection.filter_seconds); that is part of what the protection costs.
    """
    extra = (metrics.get("protection") or {}).get("filter_seconds")
    return float(metrics["train_seconds"]) + (float(extra) if _is_num(extra) else 0.0)


def baseline_for(run: Run, runs: list[Run]) -> Run | None:
    """The finished unprotected run of the same data set, preferring the same training device."""
    candidates = [r for r in runs if r.finished and r.prot == BASELINE and r.dataset == run.dataset]
    same_device = [r for r in candidates if r.device == run.device]
    return (same_device or candidates or [None])[0]


@dataclasses.dataclass
class Cost:
    run: Run
    baseline: Run
    accuracy_change_pp: float
    train_time_ratio: float | None
    gains_pp: dict[str, float]  # kind -> gain, only the kinds that could be measured
    robustness_attack: str | None  # the attack the robustness gain refers to


def cost_of(run: Run, baseline: Run) -> Cost:
    m, b = run.metrics, baseline.metrics
    gains: dict[str, float] = {}

    attack = reference_attack(m, b)
    if attack:
        gains["robustness"] = 100 * (robust_accuracies(m)[attack] - robust_accuracies(b)[attack])

    mia, mia_base = m.get("membership_inference") or {}, b.get("membership_inference") or {}
    if _is_num(mia.get("attacker_advantage")) and _is_num(mia_base.get("attacker_advantage")):
        gains["privacy"] = 100 * (mia_base["attacker_advantage"] - mia["attacker_advantage"])

    # Without injected records, filtered against unfiltered measures only the filter's cost.
    prot = m.get("protection") or {}
    unfiltered = prot.get("unfiltered") or {}
    injected = prot.get("injected_count")
    if _is_num(unfiltered.get("test_accuracy")) and _is_num(injected) and injected > 0:
        gains["poisoning"] = 100 * (m["test_accuracy"] - unfiltered["test_accuracy"])

    base_seconds = training_seconds(b)
    ratio = training_seconds(m) / base_seconds if base_seconds > 0 else None
    return Cost(
        run=run,
        baseline=baseline,
        accuracy_change_pp=100 * (m["test_accuracy"] - b["test_accuracy"]),
        train_time_ratio=ratio,
        gains_pp=gains,
        robustness_attack=attack,
    )


def reference_attack(metrics: dict, baseline: dict) -> str | None:
    """The attack both runs were evaluated with that the robustness gain refers to.

    PGD (most steps, else FGSM) at the smallest radius both were evaluated at:
    chosen by the evaluation settings, never by the results, and at larger radii
    small models of every protection often sit at 0 %, which hides differences.
    """
    mine = robust_accuracies(metrics)
    entries = [
        e
        for e in (baseline.get("robustness") or {}).get("attacks") or []
        if isinstance(e, dict) and _is_num(e.get("eps")) and attack_label(e) in mine
    ]
    if not entries:
        return None
    best = min(entries, key=lambda e: (e["eps"], e.get("attack") != "pgd", -(e.get("steps") or 0)))
    return attack_label(best)


def costs(runs: list[Run]) -> list[Cost]:
    """The cost of every finished protected run that has a baseline."""
    out = []
    for run in runs:
        if run.finished and run.prot != BASELINE:
            baseline = baseline_for(run, runs)
            if baseline is not None:
                out.append(cost_of(run, baseline))
    return out


def _is_num(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
