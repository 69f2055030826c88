"""The one task record every stage runs: a RAMP sample (fill the masks) or a QA question.

Tasks are built here only, and their prompt is rendered here only, from ``configs/prompts.yaml``
(:mod:`ramp.prompts`): the CoT builder records these messages in its trajectories (what SFT trains on),
and RL rollouts and evaluation render the same messages for the same sample or question.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ramp.data.samples import MASK_TOKEN, Sample
from ramp.prompts import Message, PromptTemplates, chat, qa_user_prompt, ramp_user_prompt

TaskKind = Literal["ramp", "qa"]


@dataclass(frozen=True)
class Task:
    task_id: str
    kind: TaskKind
    messages: tuple[Message, ...]  # system + user, rendered once
    golds: tuple[str, ...]  # ramp: one gold fill per mask; qa: the accepted answers
    num_masks: int = 0  # ramp: masks to fill; qa: 0
    exclude_doc_ids: tuple[str, ...] = ()  # documents the search tool never returns for this task
    source: str = ""  # ramp: the masked passage; qa: the question (what role prompts quote)

    @property
    def user_prompt(self) -> str:
        return self.messages[-1]["content"]


def task_from_sample(sample: Sample, templates: PromptTemplates | None = None) -> Task:
    """A RAMP task; ``ValueError`` when the sample's masks, mask tokens and answers disagree."""
    in_text = sample.masked_passage.count(MASK_TOKEN)
    answers = tuple(sample.answers) or tuple(m.text for m in sample.masks)
    if not sample.num_masks or in_text != sample.num_masks or len(answers) != sample.num_masks:
        raise ValueError(f"{sample.num_masks} masks, {in_text} mask tokens and {len(answers)} answers")
    return Task(
        task_id=sample.sample_id,
        kind="ramp",
        messages=tuple(chat(ramp_user_prompt(sample.masked_passage, sample.num_masks, templates), templates)),
        golds=answers,
        num_masks=sample.num_masks,
        exclude_doc_ids=tuple(sample.exclude_doc_ids),
        source=sample.masked_passage,
    )


def task_from_qa(row: Mapping[str, Any], templates: PromptTemplates | None = None) -> Task:
    """A QA task from ``{"id", "question", "golden_answers"}`` (the bundled HotpotQA format)."""
    question, golds = row.get("question"), row.get("golden_answers")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("a QA row needs a non-empty 'question'")
    if isinstance(golds, str) or not golds or not all(isinstance(g, str) for g in golds):
        raise ValueError("a QA row needs 'golden_answers', a non-empty list of strings")
    if row.get("id") is None:
        raise ValueError("a QA row needs an 'id'")
    return Task(
        task_id=str(row["id"]),
        kind="qa",
        messages=tuple(chat(qa_user_prompt(question, templates), templates)),
        golds=tuple(golds),
        exclude_doc_ids=tuple(str(d) for d in row.get("exclude_doc_ids") or ()),
        source=question,
    )


def task_from_row(row: Mapping[str, Any], templates: PromptTemplates | None = None) -> Task:
    """A sample row (``samples-*.parquet``) or a QA row; ``ValueError`` when it is neither."""
    if "sample_id" in row:
        try:
            sample = Sample.from_row(dict(row))
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a sample row: {err}") from None
        return task_from_sample(sample, templates)
    if "question" in row:
        return task_from_qa(row, templates)
    raise ValueError("neither a sample row (sample_id, …) nor a QA row (id, question, golden_answers)")
