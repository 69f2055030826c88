"""AceSearcher's SFT conversations (decomposer and solver) made from verified QA trajectories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ramp.agent.decompose import decomposer_messages, format_decomposition, solver_messages
from ramp.cot.trajectories import Trajectory


def decomposition_trajectories(
    trajectories: Sequence[Trajectory], questions: Mapping[str, str]
) -> list[Trajectory]:
    """AceSearcher's SFT data from verified QA trajectories (``questions``: id -> question text): per
    trajectory, a decomposer conversation (question -> its search queries as numbered sub-questions) and
    a solver conversation (every search's query and result block, then the question -> its answer).
    Trajectories without a search are skipped."""
    out: list[Trajectory] = []
    for t in trajectories:
        if not (t.verified and t.queries):
            continue
        if t.sample_id not in questions:
            raise KeyError(f"trajectory {t.sample_id!r} is not one of the questions given")
        question, queries = questions[t.sample_id], [q.strip() for q in t.queries]
        blocks = [m["content"] for m in t.messages if m["role"] == "tool"]
        steps = list(zip(queries, blocks, strict=True))
        for role, messages, target in (
            ("decomposer", decomposer_messages(question), format_decomposition(queries)),
            ("solver", solver_messages(question, steps), t.answer),
        ):
            conversation = (*messages, {"role": "assistant", "content": target})
            out.append(_conversation(t, f"{t.sample_id}/{role}", conversation))
    return out


def _conversation(source: Trajectory, sample_id: str, messages: Sequence[dict[str, str]]) -> Trajectory:
    return Trajectory(
        sample_id=sample_id,
        kind=source.kind,
        teacher=source.teacher,
        teacher_model=source.teacher_model,
        round=source.round,
        messages=tuple(messages),
        answer=source.answer,
        fills=source.fills,
        golds=source.golds,
        score=source.score,
        reward=source.reward,
        verified=True,
        num_masks=0,
        queries=(),
        retrieved_doc_ids=(),
        exclude_doc_ids=source.exclude_doc_ids,
    )
