"""The RL trainer's metrics: every name declares how a step's values are reduced over micro-batches,
updates and ranks, and one all-reduce per step does it.

Callers add ``(value, weight)`` pairs; what the weight counts is the metric's reduction:

- ``EPISODE_MEAN``: value summed over episodes, weight = episodes; Σ values / Σ weights over ranks.
- ``TOKEN_MEAN``: value × sampled tokens, weight = sampled tokens; Σ / Σ over ranks.
- ``UPDATE_MEAN``: one value per optimizer update (this rank's share, e.g. its part of a loss whose
  denominator already counts every rank), weight 1; Σ values over ranks / updates.
- ``RANK_MEAN``: Σ values over ranks / ranks (e.g. seconds spent in a phase).
- ``SUM``: Σ values over ranks (counts).
- ``LOCAL``: the mean of this process's values, no collective (values already the same on every rank:
  learning rate, gradient norm, curriculum stage; or rank 0's own clock).

Per mask count ``k`` names end in ``k1``, ``k2``, ...: they are declared once with ``k{k}``.
"""

from __future__ import annotations

import re
from enum import Enum

from ramp.rl.distributed import Dist


class Reduce(Enum):
    EPISODE_MEAN = "mean over episodes"
    TOKEN_MEAN = "mean per sampled token"
    UPDATE_MEAN = "mean per optimizer update"
    RANK_MEAN = "mean over ranks"
    SUM = "sum over ranks"
    LOCAL = "this process's mean"


METRICS: dict[str, Reduce] = {
    **{f"reward/{name}": Reduce.EPISODE_MEAN for name in ("total", "answer", "format", "score", "k{k}")},
    "response/sampled_tokens": Reduce.EPISODE_MEAN,
    "response/searches": Reduce.EPISODE_MEAN,
    "response/answer_words": Reduce.EPISODE_MEAN,
    "response/answer_words_k{k}": Reduce.EPISODE_MEAN,
    "count/k{k}": Reduce.SUM,
    "train/episodes": Reduce.SUM,
    "train/kept_episodes": Reduce.SUM,
    "train/gen_batches": Reduce.LOCAL,
    "actor/pg_loss": Reduce.UPDATE_MEAN,
    "actor/kl": Reduce.UPDATE_MEAN,
    "actor/clipfrac": Reduce.TOKEN_MEAN,
    "actor/approx_kl": Reduce.TOKEN_MEAN,
    "actor/entropy": Reduce.TOKEN_MEAN,
    "actor/grad_norm": Reduce.LOCAL,
    "actor/lr": Reduce.LOCAL,
    "actor/reward_kl": Reduce.TOKEN_MEAN,
    "critic/vf_loss": Reduce.UPDATE_MEAN,
    "critic/vf_clipfrac": Reduce.TOKEN_MEAN,
    "critic/values_mean": Reduce.TOKEN_MEAN,
    "critic/grad_norm": Reduce.LOCAL,
    "critic/lr": Reduce.LOCAL,
    "curriculum/stage": Reduce.LOCAL,
    "curriculum/advanced": Reduce.LOCAL,
    "search/noise_probability": Reduce.LOCAL,  # a simulated search engine's noise curriculum
    **{f"time/{phase}_s": Reduce.RANK_MEAN for phase in ("rollout", "retrieval", "reward", "update")},
    "time/step_s": Reduce.LOCAL,
    "health/entropy": Reduce.TOKEN_MEAN,
    "health/truncated_share": Reduce.EPISODE_MEAN,
    "health/nonfinite": Reduce.LOCAL,
    "health/skipped_updates": Reduce.LOCAL,
    "health/skipped_steps": Reduce.LOCAL,
}


def reduction(name: str) -> Reduce:
    """The declared reduction of ``name``; an undeclared name is an error (declare it in METRICS)."""
    declared = METRICS.get(re.sub(r"k\d+$", "k{k}", name))
    if declared is None:
        raise KeyError(f"metric {name!r} is not declared in ramp.rl.metrics.METRICS")
    return declared


class StepMetrics:
    """One step's metric sums and weights on this process; :meth:`reduce` gives the logged values."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}

    def add(self, name: str, value: float, weight: float = 1.0) -> None:
        reduction(name)
        self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.weights[name] = self.weights.get(name, 0.0) + float(weight)

    def reduce(self, dist_info: Dist) -> dict[str, float]:
        """Every metric reduced as declared; means with no weight anywhere (no episode of some k) are left
        out. Every rank must have added the same names (add a zero weight where a rank has no values)."""
        names = sorted(self.sums)
        totals = dist_info.sum_all([self.sums[n] for n in names] + [self.weights[n] for n in names])
        out = {}
        for i, name in enumerate(names):
            total, weight = totals[i], totals[len(names) + i]
            kind = reduction(name)
            if kind is Reduce.SUM:
                out[name] = total
            elif kind is Reduce.LOCAL:
                out[name] = self.sums[name] / max(1.0, self.weights[name])
            elif kind is Reduce.RANK_MEAN:
                out[name] = total / dist_info.world
            elif kind is Reduce.UPDATE_MEAN:
                out[name] = total / max(1.0, weight / dist_info.world)
            elif weight > 0:
                out[name] = total / weight
        return out
