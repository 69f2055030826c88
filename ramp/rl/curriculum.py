"""The mask-count curriculum: RAMP tasks served by number of masks, stage by stage (1, 2, 3, 4 masks).
ZeroSearch's noise curriculum belongs to the simulated retriever (``ramp.retrieval.simulated``).

``staged`` mode serves only the current stage's k and advances after ``steps_per_stage`` steps or as soon
as the stage's mean reward over the last ``window`` steps reaches ``reward_threshold`` (whichever comes
first; either may be off). ``mixed`` mode (the paper's ablation) serves every stage's samples at once,
shuffled together. Draws walk a seeded permutation of each pool (a new permutation every epoch), so the
whole state is a few integers: :meth:`state_dict` / :meth:`load_state_dict` make a resumed run draw
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from ramp.agent.task import Task
from ramp.config import StrictModel
from ramp.retrieval.simulated import noise_probability as noise_probability  # ZeroSearch's schedule
from ramp.seeding import stable_seed

MIXED = 0  # the pool key of mixed mode


class CurriculumConfig(StrictModel):
    mode: Literal["staged", "mixed"] = "staged"
    stages: list[int] = Field(default_factory=lambda: [1, 2, 3, 4], min_length=1)  # masks per stage
    steps_per_stage: int | None = Field(default=100, ge=1)  # None: advance by reward only
    reward_threshold: float | None = 0.7  # None: advance by steps only
    window: int = Field(default=10, ge=1)  # steps averaged for the reward test
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> CurriculumConfig:
        if len(set(self.stages)) != len(self.stages) or min(self.stages) < 1:
            raise ValueError("stages must be distinct mask counts >= 1")
        return self


def _num_masks(task: Task) -> int:
    if not task.num_masks:
        raise ValueError(f"task {task.task_id!r} has no mask count (a QA task): give the curriculum a key")
    return task.num_masks


class MaskCurriculum:
    """Serves tasks by mask count; call :meth:`record` once per training step with that step's reward.

    ``key`` gives a task's stage key (default: its number of masks; QA tasks use one constant key).
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        config: CurriculumConfig,
        key: Callable[[Task], int] = _num_masks,
    ) -> None:
        self.config = config
        by_k: dict[int, list[Task]] = {}
        for task in tasks:
            by_k.setdefault(key(task), []).append(task)
        missing = [k for k in config.stages if not by_k.get(k)]
        if missing:
            have = {k: len(v) for k, v in sorted(by_k.items())}
            raise ValueError(f"no tasks with {missing} masks for the curriculum stages (have {have})")
        staged = {k: sorted(by_k[k], key=lambda t: t.task_id) for k in config.stages}
        if config.mode == "mixed":
            mixed = (t for k in config.stages for t in staged[k])
            self.pools = {MIXED: sorted(mixed, key=lambda t: t.task_id)}
        else:
            self.pools = staged
        self.stage_index = 0
        self.steps_in_stage = 0
        self.step = 0
        self.stage_rewards: list[float] = []  # mean reward of each step in the current stage (last window)
        self.cursor = {k: 0 for k in self.pools}
        self.epoch = {k: 0 for k in self.pools}
        self.advances: list[tuple[int, int, str]] = []  # (step, new stage index, reason)

    @property
    def stage(self) -> int:
        """The current stage's mask count (0 in mixed mode)."""
        return MIXED if self.config.mode == "mixed" else self.config.stages[self.stage_index]

    @property
    def finished(self) -> bool:
        """True once the last stage has met its own advance condition (training may go on in it)."""
        return any(index >= len(self.config.stages) for _, index, _ in self.advances)

    def _permutation(self, key: int) -> list[int]:
        order = list(range(len(self.pools[key])))
        random.Random(stable_seed(self.config.seed, "curriculum", key, self.epoch[key])).shuffle(order)
        return order

    def sample(self, n: int) -> list[Task]:
        """The next ``n`` tasks of the current stage (walking its seeded permutation)."""
        key = self.stage
        pool, out = self.pools[key], list[Task]()
        order = self._permutation(key)
        while len(out) < n:
            if self.cursor[key] >= len(pool):
                self.epoch[key] += 1
                self.cursor[key] = 0
                order = self._permutation(key)
            out.append(pool[order[self.cursor[key]]])
            self.cursor[key] += 1
        return out

    def record(self, mean_reward: float) -> bool:
        """End of a training step with the step's mean reward; returns True when the stage advanced."""
        cfg = self.config
        self.step += 1
        self.steps_in_stage += 1
        self.stage_rewards = [*self.stage_rewards, float(mean_reward)][-cfg.window :]
        if cfg.mode == "mixed" or self.finished:
            return False
        reason = None
        if (
            cfg.reward_threshold is not None
            and len(self.stage_rewards) >= cfg.window
            and sum(self.stage_rewards) / len(self.stage_rewards) >= cfg.reward_threshold
        ):
            reason = "reward"
        elif cfg.steps_per_stage is not None and self.steps_in_stage >= cfg.steps_per_stage:
            reason = "steps"
        if reason is None:
            return False
        last = self.stage_index == len(cfg.stages) - 1
        self.advances.append((self.step, self.stage_index + 1, reason))
        if not last:
            self.stage_index += 1
            self.steps_in_stage = 0
            self.stage_rewards = []
        return not last

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage_index": self.stage_index,
            "steps_in_stage": self.steps_in_stage,
            "step": self.step,
            "stage_rewards": list(self.stage_rewards),
            "cursor": {str(k): v for k, v in self.cursor.items()},
            "epoch": {str(k): v for k, v in self.epoch.items()},
            "advances": [list(a) for a in self.advances],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if {int(k) for k in state["cursor"]} != set(self.pools):
            raise ValueError(
                "curriculum state does not match this curriculum's pools (mode or stages changed)"
            )
        self.stage_index = int(state["stage_index"])
        self.steps_in_stage = int(state["steps_in_stage"])
        self.step = int(state["step"])
        self.stage_rewards = [float(r) for r in state["stage_rewards"]]
        self.cursor = {int(k): int(v) for k, v in state["cursor"].items()}
        self.epoch = {int(k): int(v) for k, v in state["epoch"].items()}
        self.advances = [(int(s), int(i), str(r)) for s, i, r in state["advances"]]
