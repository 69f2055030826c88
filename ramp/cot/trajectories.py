"""Chain-of-thought trajectories: the output of ``ramp data cot`` and the input of SFT and RL.

Written as ``trajectories-*.parquet`` (zstd), one row per accepted trajectory, no tokens (SFT
tokenizes with ``ramp.agent.protocol.render_trajectory``). Columns:

- ``sample_id``: the task's id (a RAMP sample id or a QA question id).
- ``kind``: ``ramp`` (fill masked spans) or ``qa`` (answer a question).
- ``teacher``: ``builtin`` | ``openai`` | ``student``; ``teacher_model``: the served model name
  (``""`` for the built-in teacher); ``round``: the self-evolving round (0 = first teacher).
- ``messages``: ``list<struct{role, content}>`` in the single-agent format the student learns:
  ``system`` and ``user`` (the task's prompt, rendered once by ``ramp.agent.task``), then alternating
  ``assistant`` and ``tool``.
  Every assistant content is ``<think>...</think><search>query</search>``, except the last one,
  ``<think>...</think><answer>...</answer>``. Every tool content is exactly
  ``ramp.agent.protocol.format_result_block(hits)`` of the search environment's shown hits for the
  search just before it, i.e. the
  ``<result>...</result>`` text the environment inserts (loss-masked as environment tokens).
- ``answer``: the text inside the final ``<answer>``; ``fills``: the parsed per-mask fills (RAMP: one
  per mask, ``""`` when missing; QA: ``[answer]``); ``golds``: the gold fills / answers.
- ``score``: the answer score (``ramp_answer_score``, the configured metric) in [0, 1];
  ``reward``: the combined reward (answer + format); ``judge_verdict``: the LLM judge's verdict
  (null when verification used the score threshold); ``verified``: passed verification (always true
  in the accepted file: rejected ones go to ``rejected-*.jsonl`` with reason ``not_verified``).
- ``num_masks``, ``num_searches``; ``queries``: the search queries in order; ``retrieved_doc_ids``:
  per search, the doc ids in its result block; ``exclude_doc_ids``: the documents the search tool
  never returned for this task (at least the sample's own passage).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

MESSAGE_STRUCT = pa.struct(
    [pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string(), nullable=False)]
)

TRAJECTORY_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),
        pa.field("teacher_model", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("messages", pa.list_(MESSAGE_STRUCT), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("fills", pa.list_(pa.string()), nullable=False),
        pa.field("golds", pa.list_(pa.string()), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("judge_verdict", pa.bool_()),
        pa.field("verified", pa.bool_(), nullable=False),
        pa.field("num_masks", pa.int32(), nullable=False),
        pa.field("num_searches", pa.int32(), nullable=False),
        pa.field("queries", pa.list_(pa.string()), nullable=False),
        pa.field("retrieved_doc_ids", pa.list_(pa.list_(pa.string())), nullable=False),
        pa.field("exclude_doc_ids", pa.list_(pa.string()), nullable=False),
    ]
)

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Trajectory:
    sample_id: str
    kind: str
    teacher: str
    teacher_model: str
    round: int
    messages: tuple[dict[str, str], ...]
    answer: str
    fills: tuple[str, ...]
    golds: tuple[str, ...]
    score: float
    reward: float
    verified: bool
    num_masks: int
    queries: tuple[str, ...]
    retrieved_doc_ids: tuple[tuple[str, ...], ...]
    exclude_doc_ids: tuple[str, ...]
    judge_verdict: bool | None = None
    num_searches: int = field(init=False)

    def __post_init__(self) -> None:
        for message in self.messages:
            if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise ValueError(f"bad trajectory message {message!r}")
        if len(self.retrieved_doc_ids) != len(self.queries):
            raise ValueError("retrieved_doc_ids must have one entry per query")
        object.__setattr__(self, "num_searches", len(self.queries))

    def to_row(self) -> dict[str, Any]:
        return {
            "sample_id": self.sample_id,
            "kind": self.kind,
            "teacher": self.teacher,
            "teacher_model": self.teacher_model,
            "round": self.round,
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            "answer": self.answer,
            "fills": list(self.fills),
            "golds": list(self.golds),
            "score": float(self.score),
            "reward": float(self.reward),
            "judge_verdict": self.judge_verdict,
            "verified": self.verified,
            "num_masks": self.num_masks,
            "num_searches": self.num_searches,
            "queries": list(self.queries),
            "retrieved_doc_ids": [list(ids) for ids in self.retrieved_doc_ids],
            "exclude_doc_ids": list(self.exclude_doc_ids),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Trajectory:
        return cls(
            sample_id=row["sample_id"],
            kind=row["kind"],
            teacher=row["teacher"],
            teacher_model=row["teacher_model"],
            round=int(row["round"]),
            messages=tuple({"role": m["role"], "content": m["content"]} for m in row["messages"]),
            answer=row["answer"],
            fills=tuple(row["fills"]),
            golds=tuple(row["golds"]),
            score=float(row["score"]),
            reward=float(row["reward"]),
            verified=bool(row["verified"]),
            num_masks=int(row["num_masks"]),
            queries=tuple(row["queries"]),
            retrieved_doc_ids=tuple(tuple(ids) for ids in row["retrieved_doc_ids"]),
            exclude_doc_ids=tuple(row["exclude_doc_ids"]),
            judge_verdict=row.get("judge_verdict"),
        )


def read_trajectories(path: str | Path) -> list[Trajectory]:
    """All trajectories in a Parquet file or a directory of ``trajectories-*.parquet`` files."""
    source = Path(path)
    files = sorted(source.glob("trajectories-*.parquet")) if source.is_dir() else [source]
    if not files:
        return []
    table = ds.dataset([str(f) for f in files], format="parquet", schema=TRAJECTORY_SCHEMA).to_table()
    return [Trajectory.from_row(row) for row in table.to_pylist()]
