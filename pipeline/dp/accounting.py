"""Privacy accounting for DP-SGD with dp_accounting: epsilon from noise, and noise from epsilon.

Each step is a Gaussian mechanism (noise multiplier sigma) applied to a
Poisson subsample (rate q = batch_size / N); `steps` of them compose. Both the
Renyi-DP accountant and the privacy-loss-distribution (PLD) accountant bound
epsilon at a given delta; both are valid upper bounds, so the smaller is
reported. With shuffled fixed-size batches this analysis is an approximation
(it assumes Poisson sampling); docs/dp.md explains.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import dp_accounting
from dp_accounting import pld, rdp

from pipeline.errors import UsageError

# PLD discretisation: 1e-3 changes epsilon by < 0.1% against 1e-4 on the project's
# settings, and is ~10x faster; the estimate stays pessimistic (an upper bound).
PLD_DISCRETIZATION = 1e-3
# Noise multipliers searched by `noise_for_epsilon`.
MIN_NOISE, MAX_NOISE = 0.05, 500.0


@dataclasses.dataclass(frozen=True)
class PrivacySpent:
    """Epsilon at delta after some steps, from both accountants."""

    epsilon: float
    delta: float
    accountant: str  # "rdp" or "pld": the one that gave the smaller (tighter) epsilon
    epsilon_rdp: float
    epsilon_pld: float


def dp_event(sampling_rate: float, noise_multiplier: float, steps: int):
    """The dp_accounting event of `steps` Poisson-subsampled Gaussian steps."""
    step = dp_accounting.PoissonSampledDpEvent(
        sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    return dp_accounting.SelfComposedDpEvent(step, steps)


@functools.lru_cache(maxsize=256)
def epsilon_rdp(sampling_rate, noise_multiplier, steps, delta) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event(sampling_rate, noise_multiplier, steps))
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def epsilon_pld(sampling_rate, noise_multiplier, steps, delta) -> float:
    accountant = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    accountant.compose(dp_event(sampling_rate, noise_multiplier, steps))
    return float(accountant.get_epsilon(delta))


def privacy_spent(
    sampling_rate: float, noise_multiplier: float, steps: int, delta: float
) -> PrivacySpent:
    """Epsilon at `delta` after `steps` DP-SGD steps; inf without noise, 0 before any step."""
    if steps == 0:
        return PrivacySpent(0.0, delta, "rdp", 0.0, 0.0)
    if noise_multiplier == 0:
        return PrivacySpent(math.inf, delta, "rdp", math.inf, math.inf)
    eps_rdp = epsilon_rdp(sampling_rate, noise_multiplier, steps, delta)
    eps_pld = epsilon_pld(sampling_rate, noise_multiplier, steps, delta)
    best = "pld" if eps_pld < eps_rdp else "rdp"
    return PrivacySpent(min(eps_rdp, eps_pld), delta, best, eps_rdp, eps_pld)


def noise_for_epsilon(
    target_epsilon: float, sampling_rate: float, steps: int, delta: float, rel_tol: float = 0.004
) -> float:
    """The smallest noise multiplier (to `rel_tol`) whose epsilon is at most `target_epsilon`.

    The epsilon reached lies in [target * (1 - 2 rel_tol), target]. Bisection on log(sigma)
    (epsilon falls as the noise grows), first with the cheap RDP bound, which is never below
    the PLD one here, then with both accountants between half and all of the RDP answer:
    PLD is slow for small noise multipliers, so it is never evaluated far from the answer.
    """
    if epsilon_rdp(sampling_rate, MAX_NOISE, steps, delta) > target_epsilon:
        raise UsageError(
            f"EPSILON={target_epsilon} is out of reach even with noise multiplier {MAX_NOISE} "
            f"for {steps} steps at sampling rate {sampling_rate:.4g}; raise EPSILON or DELTA, "
            "or train fewer epochs or with smaller batches"
        )
    sigma_rdp = _bisect(
        lambda s: epsilon_rdp(sampling_rate, s, steps, delta),
        target_epsilon,
        MIN_NOISE,
        MAX_NOISE,
        rel_tol,
    )

    def tightest(sigma):
        return privacy_spent(sampling_rate, sigma, steps, delta).epsilon

    high = sigma_rdp
    if tightest(high) >= target_epsilon * (1 - 2 * rel_tol):
        return high
    low = high * 0.9
    while low > MIN_NOISE and tightest(low) <= target_epsilon:
        high, low = low, low * 0.9
    return _bisect(tightest, target_epsilon, max(low, MIN_NOISE), high, rel_tol)


def _bisect(epsilon, target, low, high, rel_tol) -> float:
    """Noise in [low, high] with target (1 - 2 rel_tol) <= epsilon(noise) <= target.

    Assumes epsilon(high) <= target; returns `low` if epsilon(low) is already <= target.
    False position on log(epsilon) against log(noise), where the curve is nearly straight,
    so a few evaluations suffice (Illinois variant, which keeps both ends moving).
    """
    eps_low, eps_high = epsilon(low), epsilon(high)
    if eps_low <= target:
        return low
    goal = math.log(target * (1 - rel_tol))  # aim inside the accepted band
    kept = None
    for _ in range(60):
        if high / low < 1 + 1e-6 or target * (1 - 2 * rel_tol) <= eps_high:
            break
        f_low, f_high = math.log(eps_low) - goal, math.log(eps_high) - goal
        x_low, x_high = math.log(low), math.log(high)
        mid = math.exp(x_high - f_high * (x_high - x_low) / (f_high - f_low))
        mid = min(max(mid, low * (1 + 1e-9)), high * (1 - 1e-9))
        eps = epsilon(mid)
        if eps > target:
            low, eps_low = mid, eps
            if kept == "low":
                eps_high = target * (eps_high / target) ** 0.5  # Illinois: halve the stale side
            kept = "low"
        else:
            high, eps_high = mid, eps
            if kept == "high":
                eps_low = target * (eps_low / target) ** 0.5
            kept = "high"
    return high
