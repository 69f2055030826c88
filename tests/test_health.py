"""Training health (ramp.train.health): which signals breach, after how many steps, what stop and skip do.
The loops themselves are tested in test_rl_trainer.py (DAPO) and test_pretrain_health.py (Megatron)."""

from __future__ import annotations

import math

import pytest
import torch

from ramp.errors import UserError
from ramp.train.health import (
    HealthConfig,
    HealthMonitor,
    SkipNonFiniteSteps,
    TrainingHealthError,
    guard_optimizer,
    last_good_checkpoint,
)


def monitor(**config: object) -> tuple[HealthMonitor, list[tuple[dict[str, float], int]]]:
    logged: list[tuple[dict[str, float], int]] = []
    health = HealthMonitor(
        HealthConfig(**config),  # type: ignore[arg-type]
        lambda: last_good_checkpoint(2, "runs/x/checkpoint"),
        lambda metrics, step: logged.append((metrics, step)),
    )
    return health, logged


def test_non_finite_loss_stops_with_one_line_naming_the_last_good_checkpoint():
    health, logged = monitor()
    assert health.check(1, loss=0.7, grad_norm=1.2)
    health.end_step()
    with pytest.raises(TrainingHealthError) as err:
        health.check(3, loss=math.nan, grad_norm=math.inf)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        "training health: stopped at step 3: non-finite loss (nan); non-finite grad_norm (inf); "
        "the last good checkpoint is step 2 in runs/x/checkpoint"
    )
    assert logged == [
        ({"health/nonfinite": 2.0, "health/skipped_updates": 0.0, "health/skipped_steps": 0.0}, 3)
    ]
    assert last_good_checkpoint(None, "x") == "no checkpoint was written yet"


def test_skip_mode_skips_then_stops_after_too_many_in_a_row():
    health, _ = monitor(on_breach="skip", max_consecutive_skips=2)
    for step in (1, 2):
        assert not health.check(step, loss=math.nan)
        assert health.end_step()["health/skipped_updates"] == 1.0
    assert health.check(3, loss=0.1)  # a good step resets the run of skips
    assert health.end_step() == {
        "health/nonfinite": 0.0,
        "health/skipped_updates": 0.0,
        "health/skipped_steps": 2.0,
    }
    for step in (4, 5):
        assert not health.check(step, grad_norm=math.nan)
        health.end_step()
    with pytest.raises(TrainingHealthError, match=r"at step 6: .*; 2 steps in a row skipped"):
        health.check(6, grad_norm=math.nan)


def test_entropy_collapse_is_caught_after_patience_steps():
    health, _ = monitor(min_entropy=1e-3, patience=2)
    for step, entropy in enumerate([0.9, 0.4, 5e-4, 0.2, 1e-4], start=1):  # a dip that recovers: no breach
        assert health.check(step, entropy=entropy)
    with pytest.raises(
        TrainingHealthError, match=r"entropy collapse: entropy 1e-05 below min_entropy 0\.001 for 2"
    ):
        health.check(6, entropy=1e-5)


def test_length_blow_up_counts_only_in_a_run_that_started_within_the_limit():
    health, _ = monitor(max_truncated_share=0.9, patience=2)
    assert health.check(1, truncated_share=0.1) and health.check(2, truncated_share=0.95)
    with pytest.raises(TrainingHealthError, match="response-length blow-up: truncated_share 1 above"):
        health.check(3, truncated_share=1.0)
    rambling, _ = monitor(max_truncated_share=0.9, patience=2)  # a policy from scratch: cut from the start
    assert all(rambling.check(step, truncated_share=1.0) for step in range(1, 6))
    off, _ = monitor(min_entropy=None, max_truncated_share=None, patience=1)
    assert off.check(1, entropy=0.5, truncated_share=0.0) and off.check(2, entropy=0.0, truncated_share=1.0)


def test_streaks_survive_a_resume():
    health, _ = monitor(min_entropy=1e-3, patience=3)
    for step, entropy in enumerate([0.5, 1e-4, 1e-4], start=1):
        assert health.check(step, entropy=entropy)
    resumed, _ = monitor(min_entropy=1e-3, patience=3)
    resumed.load_state_dict(health.state_dict())
    with pytest.raises(TrainingHealthError, match="for 3 steps"):
        resumed.check(4, entropy=1e-4)


def test_skip_guard_leaves_parameters_alone_on_a_non_finite_gradient():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = guard_optimizer(torch.optim.SGD([weight], lr=0.5), HealthConfig(on_breach="skip"))
    assert isinstance(optimizer, SkipNonFiniteSteps)
    weight.grad = torch.tensor([1.0, math.nan, 0.0])
    optimizer.step()
    assert torch.equal(weight.detach(), torch.ones(3))
    weight.grad = torch.tensor([1.0, 2.0, 0.0])
    optimizer.step()
    assert torch.equal(weight.detach(), torch.tensor([0.5, 0.0, 1.0]))
    assert optimizer.state_dict()["param_groups"][0]["lr"] == 0.5  # everything else is the optimizer's
    plain = torch.optim.SGD([weight], lr=0.5)
    assert guard_optimizer(plain, HealthConfig()) is plain  # stop mode: the loop raises before saving
    with pytest.raises(UserError, match="needs a torch optimizer"):
        guard_optimizer(object(), HealthConfig(on_breach="skip"))
