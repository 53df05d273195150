"""Membership inference: how well an attacker tells training members from non-members.

Uses tensorflow-privacy's attacks (from the tensorflow-empirical-privacy
package): a threshold attack on the loss and a trained logistic-regression
attacker, on an equal number of training members and held-out non-members
(the test split). Reports the best attack's AUC, attacker advantage
(max TPR - FPR) and TPR at 0.1% FPR.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import require

MAX_EXAMPLES = 5000  # per side; the attack cost grows with it, the estimate barely


def _mia():
    pkg = "tensorflow-empirical-privacy==0.1.0 (with --no-deps, see the Makefile)"
    feature = "membership-inference evaluation"
    base = "tensorflow_privacy.privacy.privacy_tests.membership_inference_attack"
    return (
        require(f"{base}.membership_inference_attack", pkg, feature),
        require(f"{base}.data_structures", pkg, feature),
    )


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float = 0.001) -> float:
    """The highest true-positive rate reached at a false-positive rate <= target."""
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def attack(logits_members, labels_members, logits_non, labels_non, seed: int = 0) -> dict:
    """Runs the threshold and logistic-regression attacks; returns the strongest figures."""
    mia, ds = _mia()
    inputs = ds.AttackInputData(
        logits_train=logits_members,
        logits_test=logits_non,
        labels_train=labels_members,
        labels_test=labels_non,
    )
    np.random.seed(seed)  # the trained attacker's split
    results = mia.run_attacks(
        inputs,
        ds.SlicingSpec(entire_dataset=True),
        attack_types=(ds.AttackType.THRESHOLD_ATTACK, ds.AttackType.LOGISTIC_REGRESSION),
    )
    per_attack = {}
    for r in results.single_attack_results:
        roc = r.roc_curve
        per_attack[str(r.attack_type.value)] = {
            "auc": float(roc.get_auc()),
            "attacker_advantage": float(roc.get_attacker_advantage()),
            "tpr_at_0.1pct_fpr": tpr_at_fpr(np.asarray(roc.fpr), np.asarray(roc.tpr)),
        }
    best = max(per_attack.values(), key=lambda d: d["auc"])
    return {
        "auc": best["auc"],
        "attacker_advantage": max(d["attacker_advantage"] for d in per_attack.values()),
        "tpr_at_0.1pct_fpr": max(d["tpr_at_0.1pct_fpr"] for d in per_attack.values()),
        "attacks": per_attack,
    }


def evaluate(model, splits, cfg) -> dict:
    """Members: training examples; non-members: the test split; equal numbers of each."""
    n = min(len(splits.x_train), len(splits.x_test), MAX_EXAMPLES)
    rng = np.random.default_rng(cfg.seed)
    members = rng.choice(len(splits.x_train), n, replace=False)
    non = rng.choice(len(splits.x_test), n, replace=False)
    logits_m = model.predict(splits.x_train[members], batch_size=1024, verbose=0)
    logits_n = model.predict(splits.x_test[non], batch_size=1024, verbose=0)
    result = attack(logits_m, splits.y_train[members], logits_n, splits.y_test[non], cfg.seed)
    result["members"] = result["non_members"] = int(n)
    return result
