"""A finished rollout in trajectory form (a draft), before verification.

Every teacher -- the multi-agent roles, the built-in teacher, a student model -- runs the agent's one
loop (:class:`ramp.agent.rollout.RolloutLoop`); its rollouts become drafts here, in one way: the
messages are ``Rollout.to_messages()`` (the task's rendered prompt, then assistant and tool messages).
"""

from __future__ import annotations

from dataclasses import dataclass

from ramp.agent.parser import parse_mask_fills
from ramp.agent.rollout import PolicyError, Rollout
from ramp.agent.task import Task

# Rollouts that ended without an answer -> dead-letter reason.
_UNANSWERED = {"max_turns": "max_turns", "context_full": "context_full"}


@dataclass(frozen=True)
class Draft:
    task: Task
    messages: tuple[dict[str, str], ...]
    answer: str
    fills: tuple[str, ...]  # ramp: one per mask ("" when missing); qa: (answer,)
    queries: tuple[str, ...]
    retrieved_doc_ids: tuple[tuple[str, ...], ...]


def draft_from_rollout(rollout: Rollout) -> Draft | PolicyError:
    """The rollout's draft, or why it has none (the policy's error, or no answer)."""
    if rollout.error is not None:
        return rollout.error
    if rollout.finish_reason not in ("answer", "eos"):
        reason = _UNANSWERED.get(rollout.finish_reason or "", "no_answer")
        return PolicyError(
            reason, f"the rollout ended with {rollout.finish_reason} after {rollout.turns} turns"
        )
    answer = rollout.answer
    task = rollout.task
    fills = tuple(parse_mask_fills(answer, task.num_masks)) if task.kind == "ramp" else (answer or "",)
    if not answer or not any(fill.strip() for fill in fills):
        return PolicyError("no_answer", f"no answer: {rollout.response_text[-300:]!r}")
    return Draft(
        task=task,
        messages=tuple(rollout.to_messages()),
        answer=answer,
        fills=fills,
        queries=tuple(rollout.queries),
        retrieved_doc_ids=tuple(tuple(ids) for ids in rollout.documents),
    )
