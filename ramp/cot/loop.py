"""The multi-agent loop: planner -> (rewriter -> search -> observer)* -> answer, batched over tasks.

Per task: the planner writes a plan and a first query; each turn the rewriter expands the pending
query into several search queries, the retriever answers them (never returning the task's
``exclude_doc_ids``), and the observer reads every result so far and either asks for another search
or answers. The observer's last turn must answer; searching then ends the episode as ``max_turns``.

The finished episode is merged into the single-agent message format of :mod:`ramp.cot.trajectories`:
one ``<think>..</think><search>q</search>`` assistant message per search (the plan or the observer's
reasoning as the think), each followed by its tool result block, then the final answer message.
A rewritten query whose hits add no document the episode has not seen is dropped (except the first
of a turn), so the trajectory never shows a search that taught nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ramp.agent.parser import parse_mask_fills
from ramp.agent.protocol import format_result_block
from ramp.cot.config import LoopConfig
from ramp.cot.roles import ChatMessages, Observation, PlanOutput, RoleTemplates
from ramp.data.samples import Sample
from ramp.prompts import chat
from ramp.retrieval.base import Hit, Retriever


@dataclass(frozen=True)
class CotTask:
    """What a teacher solves: a RAMP sample (masked passage) or a QA question."""

    task_id: str
    kind: str  # ramp | qa
    user_prompt: str
    masked_passage: str  # "" for qa
    num_masks: int  # 0 for qa
    golds: tuple[str, ...]
    exclude_doc_ids: tuple[str, ...]

    @classmethod
    def from_sample(cls, sample: Sample) -> CotTask:
        return cls(
            task_id=sample.sample_id,
            kind="ramp",
            user_prompt=sample.prompt,
            masked_passage=sample.masked_passage,
            num_masks=sample.num_masks,
            golds=sample.answers,
            exclude_doc_ids=sample.exclude_doc_ids,
        )

    def prompt_messages(self) -> ChatMessages:
        return chat(self.user_prompt)


@dataclass(frozen=True)
class SearchStep:
    think: str
    query: str
    hits: tuple[Hit, ...]
    block: str  # format_result_block(hits): the tool message


@dataclass
class Episode:
    """One task's state while the loop runs; ``scratch`` is private to the teacher."""

    task: CotTask
    plan: str = ""
    steps: list[SearchStep] = field(default_factory=list)
    pending_query: str = ""
    pending_think: str = ""
    scratch: dict[str, Any] = field(default_factory=dict)
    final: Observation | None = None
    failure: Failure | None = None

    @property
    def open(self) -> bool:
        return self.final is None and self.failure is None

    def seen_doc_ids(self) -> set[str]:
        return {hit.doc_id for step in self.steps for hit in step.hits}


@dataclass(frozen=True)
class Failure:
    """An episode that ended without an answer; ``reason`` becomes the dead-letter reason."""

    reason: str  # teacher_error | unparseable_teacher_output | max_turns | no_answer
    detail: str = ""


@dataclass(frozen=True)
class Draft:
    """A finished episode in trajectory form, not yet verified."""

    task: CotTask
    messages: tuple[dict[str, str], ...]
    answer: str
    fills: tuple[str, ...]
    queries: tuple[str, ...]
    retrieved_doc_ids: tuple[tuple[str, ...], ...]


class RoleTeacher(Protocol):
    """Plays planner, rewriter and observer for a batch of episodes (one result per episode)."""

    name: str
    model: str

    def plan(self, episodes: Sequence[Episode]) -> list[PlanOutput | Failure]: ...

    def rewrite(self, episodes: Sequence[Episode], num_queries: int) -> list[list[str] | Failure]: ...

    def observe(self, episodes: Sequence[Episode], turns_left: int) -> list[Observation | Failure]: ...


def answer_message(task: CotTask, think: str, answer: str) -> tuple[str, str, tuple[str, ...]]:
    """The final assistant content, its answer text and the fills; RAMP answers are rewritten as
    ``[i] fill`` lines."""
    if task.kind == "ramp":
        fills = tuple(parse_mask_fills(answer, task.num_masks))
        body = "\n".join(f"[{i}] {fill}" for i, fill in enumerate(fills, start=1))
    else:
        body = " ".join(answer.split())
        fills = (body,)
    return f"<think>{think}</think>\n<answer>\n{body}\n</answer>", body.strip(), fills


def to_draft(episode: Episode) -> Draft | Failure:
    if episode.failure is not None:
        return episode.failure
    final = episode.final
    if final is None or final.answer is None:
        return Failure("no_answer", "the episode ended without an answer")
    messages = episode.task.prompt_messages()
    for step in episode.steps:
        messages.append(
            {"role": "assistant", "content": f"<think>{step.think}</think>\n<search>{step.query}</search>"}
        )
        messages.append({"role": "tool", "content": step.block})
    content, answer, fills = answer_message(episode.task, final.think, final.answer)
    if not any(fill.strip() for fill in fills):
        return Failure("no_answer", f"the answer has no fill: {final.answer[:200]!r}")
    messages.append({"role": "assistant", "content": content})
    return Draft(
        task=episode.task,
        messages=tuple(messages),
        answer=answer,
        fills=fills,
        queries=tuple(step.query for step in episode.steps),
        retrieved_doc_ids=tuple(tuple(hit.doc_id for hit in step.hits) for step in episode.steps),
    )


def _search_turn(
    episodes: Sequence[Episode],
    rewrites: Sequence[list[str]],
    retriever: Retriever,
    templates: RoleTemplates,
    config: LoopConfig,
) -> None:
    """Run every episode's rewritten queries in one retriever call and record the useful ones as steps."""
    flat = [
        (episode, query) for episode, queries in zip(episodes, rewrites, strict=True) for query in queries
    ]
    if not flat:
        return
    results = retriever.search(
        [query for _, query in flat],
        k=config.top_k,
        exclude_doc_ids=[set(episode.task.exclude_doc_ids) for episode, _ in flat],
    )
    first_of_turn: set[int] = set()
    for (episode, query), hits in zip(flat, results, strict=True):
        is_first = id(episode) not in first_of_turn
        first_of_turn.add(id(episode))
        if not is_first and {hit.doc_id for hit in hits} <= episode.seen_doc_ids():
            continue
        think = episode.pending_think if is_first else templates.rewrite_think.format(query=query)
        block = format_result_block(hits, config.max_chars_per_doc)
        episode.steps.append(SearchStep(think=think, query=query, hits=tuple(hits), block=block))


def _turn_queries(episode: Episode, rewrites: list[str]) -> list[str]:
    """The pending query leads (the rewrites add wordings); previous queries are not repeated."""
    asked = {step.query.lower() for step in episode.steps}
    queries, seen = [], set()
    for query in [episode.pending_query, *rewrites]:
        if query.lower() not in seen and query.lower() not in asked:
            seen.add(query.lower())
            queries.append(query)
    return queries


def run_episodes(
    tasks: Sequence[CotTask],
    teacher: RoleTeacher,
    retriever: Retriever,
    templates: RoleTemplates,
    config: LoopConfig,
) -> list[Draft | Failure]:
    """Run the multi-agent loop for a batch of tasks; one draft or failure per task, in order."""
    episodes = [Episode(task=task) for task in tasks]
    for episode, plan in zip(episodes, teacher.plan(episodes), strict=True):
        if isinstance(plan, Failure):
            episode.failure = plan
        else:
            episode.plan, episode.pending_query, episode.pending_think = plan.think, plan.query, plan.think
    for turn in range(config.max_turns):
        active = [e for e in episodes if e.open]
        if not active:
            break
        kept: list[Episode] = []
        rewrites: list[list[str]] = []
        for episode, rewritten in zip(active, teacher.rewrite(active, config.queries_per_turn), strict=True):
            if isinstance(rewritten, Failure):
                episode.failure = rewritten
                continue
            kept.append(episode)
            rewrites.append(_turn_queries(episode, rewritten)[: config.queries_per_turn])
        _search_turn(kept, rewrites, retriever, templates, config)
        turns_left = config.max_turns - turn
        for episode, observation in zip(kept, teacher.observe(kept, turns_left), strict=True):
            if isinstance(observation, Failure):
                episode.failure = observation
            elif observation.answer is not None:
                episode.final = observation
            elif turns_left <= 1:
                episode.failure = Failure("max_turns", f"still searching after {config.max_turns} turns")
            else:
                episode.pending_query = observation.search or ""
                episode.pending_think = observation.think
    return [to_draft(episode) for episode in episodes]
