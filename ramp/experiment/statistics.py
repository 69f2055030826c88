"""Paired differences between arms over seeds, their intervals, and the experiment's verdict.

Every seed draws its own world, so a seed is the unit of replication: per-seed differences of arm means
give a paired t interval (n - 1 degrees of freedom); a two-level bootstrap (seeds, then questions within
each drawn seed) gives a second interval from the per-question rows. A verdict needs both to agree.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as scipy_stats

Verdict = Literal["shown", "refuted", "inconclusive"]
SHOWN_MIN_GAIN = 0.2  # first-query accuracy A - X must be at least this (and its intervals above 0)
REFUTED_MAX_GAIN = 0.05  # refuted when the gate passed and the upper bound is below this
BOOTSTRAP_DRAWS = 2000


def mean_std(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided t interval of the mean of ``values`` (the per-seed paired differences)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return (mean, mean) if math.isfinite(mean) else (math.nan, math.nan)
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean - half, mean + half


def bootstrap_interval(
    per_seed: Sequence[Sequence[float]], seed: int = 0, draws: int = BOOTSTRAP_DRAWS, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean paired difference, resampling seeds and then the questions of each
    drawn seed (``per_seed[s][q]``: the difference on question q of seed s)."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(values, dtype=float) for values in per_seed if len(values)]
    if not arrays:
        return math.nan, math.nan
    means = np.empty(draws)
    for n in range(draws):
        picked = rng.integers(0, len(arrays), len(arrays))
        means[n] = np.mean(
            [arrays[s][rng.integers(0, len(arrays[s]), len(arrays[s]))].mean() for s in picked]
        )
    low, high = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class Difference:
    """A - X of one metric: the mean of the per-seed differences and its two 95% intervals."""

    mean: float
    ci95: tuple[float, float]  # paired t over seeds
    bootstrap95: tuple[float, float]  # seeds x questions
    per_seed: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean,
            "ci95": list(self.ci95),
            "bootstrap95": list(self.bootstrap95),
            "per_seed": list(self.per_seed),
        }


def paired_difference(
    first: Mapping[int, Sequence[float]], second: Mapping[int, Sequence[float]], seed: int = 0
) -> Difference:
    """A - X of one metric from per-question values of each arm by seed (same questions, same order)."""
    seeds = sorted(first)
    diffs = [[a - b for a, b in zip(first[s], second[s], strict=True)] for s in seeds]
    per_seed = tuple(statistics.fmean(d) if d else math.nan for d in diffs)
    return Difference(
        statistics.fmean(per_seed), t_interval(per_seed), bootstrap_interval(diffs, seed=seed), per_seed
    )


def verdict(first_query: Difference, bridge_em: Difference, gate_passed: bool) -> Verdict:
    """``shown``: both intervals of first-query accuracy A - X exclude 0 with mean >= +0.2, and both of
    bridge EM exclude 0; ``refuted``: the gate passed and the upper bounds of first-query A - X are
    below +0.05; otherwise ``inconclusive`` (a failed gate is never read as "no effect")."""
    first = (first_query.ci95, first_query.bootstrap95)
    bridge = (bridge_em.ci95, bridge_em.bootstrap95)
    if first_query.mean >= SHOWN_MIN_GAIN and all(lo > 0 for lo, _ in (*first, *bridge)):
        return "shown"
    if gate_passed and all(hi < REFUTED_MAX_GAIN for _, hi in first):
        return "refuted"
    return "inconclusive"


def overall(verdicts: Mapping[str, Verdict]) -> Verdict:
    """The experiment's verdict over its comparisons (A - B, A - C): shown when every one is shown,
    refuted when any is refuted (RAMP is then no better than that arm), else inconclusive."""
    if all(v == "shown" for v in verdicts.values()):
        return "shown"
    if any(v == "refuted" for v in verdicts.values()):
        return "refuted"
    return "inconclusive"
