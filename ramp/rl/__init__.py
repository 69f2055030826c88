"""DAPO reinforcement learning: the formulas (:mod:`ramp.rl.core_algos`), the mask-count curriculum and the
verl export. Pure torch; the trainer loop is ``ramp.finetune.dapo``."""

from ramp.rl.core_algos import (
    DynamicSamplingExhausted,
    aggregate,
    fill_train_batch,
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
    "groups_with_spread",
    "grpo_advantages",
    "overlong_penalty",
    "policy_loss",
]
