"""A policy on held-out RAMP tasks: does its first query name the entity the oracle's does (the copy rate,
the experiment's gate), and how much of the masks does it fill (the answer reward DAPO optimises)?

Held-out RAMP tasks are masked passages whose oracle searches name held-out entities (never named by a
RAMP training search), so copying them is a skill, not a memorised name. Rollouts are greedy, through
the same search environment, exclusions and prompts as training; one JSON line per task is kept.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ramp.agent.backends import build_backend
from ramp.agent.config import BackendConfig, HFBackendConfig, RolloutConfig
from ramp.agent.rollout import RolloutLoop
from ramp.agent.task import Task, task_from_sample
from ramp.data.samples import Sample
from ramp.experiment.measures import names_subject
from ramp.experiment.world import read_jsonl
from ramp.prompts import PromptTemplates
from ramp.retrieval.env import SearchEnv
from ramp.rewards import combined_reward


@dataclass(frozen=True)
class HeldOutTask:
    """A RAMP task and the entity the oracle's first search names (its display name)."""

    task: Task
    subject: str


def evaluate_ramp(
    policy: str | Path,
    tasks: Sequence[HeldOutTask],
    env: SearchEnv,
    rollout: RolloutConfig,
    batch_size: int = 64,
    rows_path: Path | None = None,
) -> dict[str, float]:
    """Greedy rollouts of ``policy`` (an HF directory) on ``tasks``: copy rate of the first query, answer
    reward, well-formed rate and searches per task; rows go to ``rows_path`` (JSON lines) when given."""
    backend = build_backend(
        BackendConfig(kind="hf", hf=HFBackendConfig(model=str(policy), device="cpu", batch_size=batch_size))
    )
    loop = RolloutLoop(
        backend, env, rollout.model_copy(update={"temperature": 0.0, "n": 1, "logprobs": False})
    )
    rollouts = loop.run([t.task for t in tasks])
    rows: list[dict[str, Any]] = []
    for held, rollout_ in zip(tasks, rollouts, strict=True):
        task = held.task
        reward = combined_reward(rollout_.response_text, list(task.golds), num_masks=task.num_masks or None)
        first = rollout_.queries[0] if rollout_.queries else ""
        rows.append(
            {
                "task_id": task.task_id,
                "num_masks": task.num_masks,
                "subject": held.subject,
                "first_query": first,
                "copied": names_subject(first, held.subject) if first else False,
                "answer_reward": reward.answer,
                "well_formed": rollout_.finish_reason == "answer",
                "searches": len(rollout_.queries),
            }
        )
    if rows_path is not None:
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        rows_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    n = max(1, len(rows))
    return {
        "copy_rate": sum(r["copied"] for r in rows) / n,
        "answer_reward": statistics.fmean(r["answer_reward"] for r in rows) if rows else 0.0,
        "well_formed": sum(r["well_formed"] for r in rows) / n,
        "searches": sum(r["searches"] for r in rows) / n,
        "tasks": float(len(rows)),
    }


def held_out_tasks(samples: Path, templates: PromptTemplates, limit: int) -> list[tuple[Task, str]]:
    """The first ``limit`` tasks of a held-out set (``rl-heldout``) with their first search's subject."""
    subjects = {r["sample_id"]: r["subject"] for r in read_jsonl(samples / "subjects.jsonl")}
    rows = pq.read_table(samples / "samples-00000.parquet").to_pylist()[:limit]
    return [(task_from_sample(Sample.from_row(r), templates), subjects[r["sample_id"]]) for r in rows]
