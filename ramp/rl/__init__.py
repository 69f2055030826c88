"""Reinforcement learning (DAPO/GRPO, and PPO with a value model): the trainer (:mod:`ramp.rl.trainer`, with
its actor, critic, rollout worker, metric reductions and checkpoints), the formulas
(:mod:`ramp.rl.core_algos`), the mask-count curriculum and the verl export. ``ramp.finetune.dapo`` is the
entry point."""

from ramp.rl.core_algos import (
    DynamicSamplingExhausted,
    aggregate,
    fill_train_batch,
    gae_advantages,
    groups_with_spread,
    grpo_advantages,
    overlong_penalty,
    policy_loss,
)
from ramp.rl.curriculum import CurriculumConfig, MaskCurriculum

__all__ = [
    "CurriculumConfig",
    "DynamicSamplingExhausted",
    "MaskCurriculum",
    "aggregate",
    "fill_train_batch",
    "gae_advantages",
    "groups_with_spread",
    "grpo_advantages",
    "overlong_penalty",
    "policy_loss",
]
