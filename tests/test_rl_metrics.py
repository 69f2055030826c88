"""Every RL metric is reduced as it declares (ramp.rl.metrics), over micro-batches, updates and ranks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from ramp.rl.distributed import Dist
from ramp.rl.metrics import METRICS, Reduce, StepMetrics, reduction


@dataclass(frozen=True)
class TwoRanks(Dist):
    """This rank in a world of two; the other rank's vector for the one all-reduce is given."""

    other: tuple[float, ...] = ()

    def sum_all(self, values: Sequence[float]) -> list[float]:
        return [a + b for a, b in zip(values, self.other, strict=True)]


def rank(
    rewards: list[float], entropy: tuple[float, float], losses: list[float], seconds: float
) -> StepMetrics:
    metrics = StepMetrics()
    metrics.add("reward/answer", sum(rewards), len(rewards))
    metrics.add("count/k1", len(rewards))
    metrics.add("reward/k2", 0.0, 0.0)  # no episode of k = 2 on any rank
    metrics.add("actor/entropy", *entropy)
    for loss in losses:  # one value per update: this rank's share of the update's loss
        metrics.add("actor/pg_loss", loss)
        metrics.add("actor/grad_norm", 2.0 * len(losses))  # the same global value on every rank
    metrics.add("time/rollout_s", seconds)
    return metrics


def test_each_metric_is_reduced_as_declared():
    mine = rank([1.0, 0.0, 1.0, 1.0], (2.0, 10.0), [0.3, 0.5], seconds=2.0)
    theirs = rank([1.0, 0.0], (1.0, 5.0), [0.1, 0.1], seconds=4.0)
    names = sorted(theirs.sums)
    other = tuple([theirs.sums[n] for n in names] + [theirs.weights[n] for n in names])
    reduced = mine.reduce(TwoRanks(rank=0, world=2, other=other))
    assert reduced == pytest.approx(
        {
            "reward/answer": 4 / 6,  # mean over all 6 episodes, not the mean of the ranks' means (0.625)
            "count/k1": 6.0,  # a sum
            "actor/entropy": 3.0 / 15.0,  # per sampled token
            "actor/pg_loss": (0.3 + 0.5 + 0.1 + 0.1) / 2,  # the two updates' losses, summed over ranks
            "actor/grad_norm": 4.0,  # already global: this rank's mean over its updates
            "time/rollout_s": 3.0,  # mean over ranks
        }
    )
    assert "reward/k2" not in reduced  # a mean without any weight is left out
    assert mine.reduce(Dist())["reward/answer"] == 0.75  # one process: the same rules


def test_every_metric_name_is_declared():
    assert reduction("reward/k3") is Reduce.EPISODE_MEAN and reduction("count/k12") is Reduce.SUM
    assert all(isinstance(kind, Reduce) for kind in METRICS.values())
    with pytest.raises(KeyError, match="not declared"):
        StepMetrics().add("actor/loss", 1.0)
