"""Episodes: one scored rollout each, and the tasks they come from (RAMP samples or a QA set).

A rollout's token masks are read in one place (:func:`sampled_tokens`): only tokens the policy sampled
carry log-probs and loss, never the prompt, retrieved result blocks or the end-of-turn token the loop
appends after ``</answer>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import torch

from ramp.agent.parser import parse_mask_fills
from ramp.agent.rollout import Rollout
from ramp.agent.task import Task, task_from_qa, task_from_sample
from ramp.data.samples import Sample
from ramp.metrics import normalize_answer
from ramp.prompts import load_templates
from ramp.rewards import combined_reward, fewest_searches_bonus
from ramp.rl.config import RLConfig
from ramp.rl.core_algos import overlong_penalty
from ramp.rl.curriculum import CurriculumConfig, MaskCurriculum

# A rollout stopped by a length limit rather than by an answer, the model's end token or its turn limit.
TRUNCATED = frozenset({"length", "token_budget", "context_full"})


def sampled_tokens(rollout: Rollout) -> list[bool]:
    """Per token of ``rollout.token_ids``: did the policy sample it (carries log-prob and loss)?"""
    return rollout.sampled_mask


@dataclass
class Episode:
    rollout: Rollout
    group_id: str  # unique per prompt draw: task id @ step.batch
    answer: float
    format: float
    total: float
    score: float  # total + overlong shaping: what advantages are computed from
    sampled: list[bool] = field(repr=False)
    advantage: float = 0.0  # outcome estimators (grpo): one per episode
    # per position t of [tokens - 1] (token t+1 predicted from the prefix up to t), 0 where nothing sampled:
    old_log_prob: torch.Tensor | None = field(default=None, repr=False)
    ref_log_prob: torch.Tensor | None = field(default=None, repr=False)
    values: torch.Tensor | None = field(default=None, repr=False)  # the critic's, before its update
    token_advantages: torch.Tensor | None = field(default=None, repr=False)  # critic estimators (gae)
    returns: torch.Tensor | None = field(default=None, repr=False)  # the critic's targets

    @property
    def num_sampled(self) -> int:
        return sum(self.sampled)

    @property
    def k(self) -> int:
        return self.rollout.task.num_masks or 0

    @property
    def truncated(self) -> bool:
        return self.rollout.finish_reason in TRUNCATED

    def filter_value(self, metric: str) -> float:
        return float(getattr(self, metric))


def score_rollouts(rollouts: Sequence[Rollout], group_suffix: str, config: RLConfig) -> list[Episode]:
    """Reward every rollout (on the whole response: model text and result blocks), add R1-Searcher++'s
    group reward when on (its groups: the rollouts of one task in this batch), and shape length."""
    overlong = config.algorithm.overlong
    max_length = overlong.max_length or config.rollout.max_total_new_tokens
    rewards = [
        combined_reward(
            r.response_text, list(r.task.golds), num_masks=r.task.num_masks or None, config=config.reward
        )
        for r in rollouts
    ]
    group_ids = [f"{r.task.task_id}@{group_suffix}" for r in rollouts]
    bonus = [0.0] * len(rollouts)
    if config.reward.fewest_searches.enable:
        searches = [len(r.queries) for r in rollouts]
        bonus = fewest_searches_bonus(
            [r.answer for r in rewards], searches, group_ids, config.reward.fewest_searches
        )
    episodes = []
    for rollout, reward, group_id, extra in zip(rollouts, rewards, group_ids, bonus, strict=True):
        sampled = sampled_tokens(rollout)
        shaping = (
            overlong_penalty(sum(sampled), max_length, min(overlong.buffer, max_length), overlong.factor)
            if overlong.enable
            else 0.0
        )
        episodes.append(
            Episode(
                rollout=rollout,
                group_id=group_id,
                answer=reward.answer,
                format=reward.format,
                total=reward.total + extra,
                score=reward.total + extra + shaping,
                sampled=sampled,
            )
        )
    return episodes


def answer_words(episode: Episode) -> float:
    """Mean normalised words per fill of the episode's answer (0 without an answer): padding shows here."""
    answer = episode.rollout.answer
    if answer is None:
        return 0.0
    task = episode.rollout.task
    fills = parse_mask_fills(answer, task.num_masks) if task.kind == "ramp" and task.num_masks else [answer]
    return sum(len(normalize_answer(f).split()) for f in fills) / max(1, len(fills))


def load_tasks(config: RLConfig) -> list[Task]:
    """RAMP samples (``data.samples``: a directory of ``samples-*.parquet`` or one file) or a QA JSONL."""
    templates = load_templates(config.data.prompts)
    if config.data.task == "qa":
        if not config.data.qa:
            raise ValueError("data.qa is empty: give a JSONL of {id, question, golden_answers}")
        with open(config.data.qa, encoding="utf-8") as f:
            return [task_from_qa(json.loads(line), templates) for line in f if line.strip()]
    root = Path(config.data.samples)
    files = [root] if root.is_file() else sorted(root.glob("samples-*.parquet"))
    if not files:
        raise ValueError(f"no samples-*.parquet under {root}")
    rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    return [task_from_sample(Sample.from_row(row), templates) for row in rows]


def build_curriculum(tasks: Sequence[Task], config: RLConfig) -> MaskCurriculum:
    """The mask-count curriculum for RAMP tasks; QA sets train in one stage."""
    if config.data.task == "ramp":
        return MaskCurriculum(tasks, config.curriculum)
    single = CurriculumConfig(
        stages=[1], steps_per_stage=None, reward_threshold=None, seed=config.curriculum.seed
    )
    return MaskCurriculum(tasks, single, key=lambda _: 1)
