"""Training health, shared by every training loop (the DAPO trainer, the Megatron SFT loop).

Signals: a non-finite loss or gradient norm (every loop); entropy collapse and response-length blow-up
(RL: the policy's mean entropy on its sampled tokens before the update, and the share of episodes cut by
a length limit). Entropy and length must breach ``patience`` steps in a row, in a run whose first step
was within the limit (a policy that starts out rambling into the length limit has nothing to blow up).
On a breach the loop either stops (``on_breach: stop``) with a one-line :class:`TrainingHealthError`
raised before that step's checkpoint is written, so the last checkpoint on disk is the last good one, or
skips the step (``skip``): its update is not applied, and after ``max_consecutive_skips`` skipped steps
in a row it stops anyway. Each step's values are logged as ``health/...`` metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from ramp.config import StrictModel
from ramp.errors import UserError


class HealthConfig(StrictModel):
    on_breach: Literal["stop", "skip"] = "stop"
    min_entropy: float | None = Field(default=1e-3, ge=0)  # nats per sampled token (RL); null: not watched
    max_truncated_share: float | None = Field(default=0.9, gt=0, le=1)  # of episodes (RL); null: not watched
    patience: int = Field(default=3, ge=1)  # steps in a row an entropy or length signal must breach
    max_consecutive_skips: int = Field(default=5, ge=1)  # skip mode: skipped steps in a row before stopping


# signal: (its limit in HealthConfig, the side of the limit that breaches)
SOFT_LIMITS = {"entropy": ("min_entropy", "below"), "truncated_share": ("max_truncated_share", "above")}


def _beyond(value: float, limit: float | None, side: str) -> bool:
    return limit is not None and (value < limit if side == "below" else value > limit)


class TrainingHealthError(UserError):
    """A breach with ``on_breach: stop`` (or too many skips); the message is one line."""


class HealthMonitor:
    """Checks a loop's signals step by step; ``last_good`` describes the last checkpoint on disk."""

    def __init__(
        self,
        config: HealthConfig,
        last_good: Callable[[], str],
        log: Callable[[dict[str, float], int], None] | None = None,
    ) -> None:
        self.config = config
        self.last_good = last_good
        self.log = log
        self.streaks = dict.fromkeys(SOFT_LIMITS, 0)  # steps in a row beyond the limit
        self.first: dict[str, float] = {}  # each signal's value at the run's first step
        self.consecutive_skips = 0
        self.skipped_steps = 0  # in this process's run
        self._nonfinite = 0
        self._skipped = 0

    def check(self, step: int, **signals: float | None) -> bool:
        """Check step ``step``'s signals (``None``: not measured). True: go on. False: a breach in skip mode,
        the caller must not apply this update. Stop mode raises :class:`TrainingHealthError`."""
        breaches = []
        for name, value in signals.items():
            if value is None:
                continue
            if not math.isfinite(value):
                self._nonfinite += 1
                breaches.append(f"non-finite {name} ({value})")
            elif name in self.streaks:
                breaches += self._soft(name, value)
        if not breaches:
            return True
        return self._breach(step, breaches)

    def _soft(self, name: str, value: float) -> list[str]:
        field, side = SOFT_LIMITS[name]
        limit = getattr(self.config, field)
        first = self.first.setdefault(name, value)
        breached = _beyond(value, limit, side) and not _beyond(first, limit, side)
        self.streaks[name] = self.streaks[name] + 1 if breached else 0
        if self.streaks[name] < self.config.patience:
            return []
        what = "entropy collapse" if name == "entropy" else "response-length blow-up"
        return [f"{what}: {name} {value:.3g} {side} {field} {limit} for {self.streaks[name]} steps"]

    def _breach(self, step: int, breaches: list[str]) -> bool:
        if self.config.on_breach == "skip" and self.consecutive_skips < self.config.max_consecutive_skips:
            self._skipped += 1
            return False
        if self.config.on_breach == "skip":
            breaches.append(f"{self.consecutive_skips} steps in a row skipped (max_consecutive_skips)")
        if self.log is not None:
            self.log(self.step_metrics(), step)
        raise TrainingHealthError(
            f"training health: stopped at step {step}: {'; '.join(breaches)}; {self.last_good()}"
        )

    def end_step(self) -> dict[str, float]:
        """This step's ``health/nonfinite`` and ``health/skipped_updates``, and ``health/skipped_steps`` so
        far; the step's counters start over."""
        self.skipped_steps += bool(self._skipped)
        metrics = self.step_metrics()
        self.consecutive_skips = self.consecutive_skips + 1 if self._skipped else 0
        self._nonfinite = self._skipped = 0
        return metrics

    def step_metrics(self) -> dict[str, float]:
        return {
            "health/nonfinite": float(self._nonfinite),
            "health/skipped_updates": float(self._skipped),
            "health/skipped_steps": float(self.skipped_steps),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "streaks": dict(self.streaks),
            "first": dict(self.first),
            "consecutive_skips": self.consecutive_skips,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.streaks, self.first = dict(state["streaks"]), dict(state["first"])
        self.consecutive_skips, self.skipped_steps = state["consecutive_skips"], state["skipped_steps"]


def last_good_checkpoint(step: int | None, where: str | Path) -> str:
    """The end of a stop message: where the last good checkpoint is."""
    if not step:
        return "no checkpoint was written yet"
    return f"the last good checkpoint is step {step} in {where}"


class SkipNonFiniteSteps:
    """A torch optimizer whose ``step()`` leaves the parameters alone when a gradient is not finite (the
    ``skip`` mode of a loop that checks health after its optimizer step); everything else is delegated."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        grads = (p.grad for group in self.optimizer.param_groups for p in group["params"])
        if all(g is None or bool(torch.isfinite(g).all()) for g in grads):
            self.optimizer.step()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def guard_optimizer(optimizer: Any, config: HealthConfig) -> Any:
    """``optimizer`` itself, or in skip mode one that never applies a non-finite gradient (a torch
    optimizer: megatron's GPU optimizer applies its update before the loop can look)."""
    if config.on_breach != "skip":
        return optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UserError(
            f"health.on_breach: skip needs a torch optimizer (the CPU path), not {type(optimizer).__name__}: "
            "use on_breach: stop"
        )
    return SkipNonFiniteSteps(optimizer)
