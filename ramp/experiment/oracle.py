"""World-oracle trajectories: the teacher of the RAMP-effect experiment.

The oracle knows the world, so it knows which search finds each value; everything it shows the
student is real: its queries go through the search environment (the sample's exclusions apply) and
each result block is exactly what the environment returns. A trajectory is kept only when every
search's result block holds the value it was made for; otherwise the task is rejected with its reason.

- RAMP samples: one ``<search>`` per mask, in order, with the world's lookup for that masked value
  (:class:`ramp.experiment.world.Lookup`); a chained value's query names the earlier value, which the
  policy has by then read in an earlier result (or sees in the passage).
- QA questions: the question's two hop queries (the bridge entity comes from the world), then the answer.
- Fact questions (one search): the question as the query, then the answer.
- Synthesized questions (``ramp data synthesize``): the chain undone from its last hop (each description's
  search finds the entity it replaced), then the seed question, then the answer.

Before each search the oracle thinks aloud the one sentence that search is about, quoted: for a RAMP
mask the passage's sentence holding that ``[mask]``; for a question's first hop the question; for its
second hop the sentence of an earlier result (or of the question) that names the entity the search is for.
A quote is content, not a template: writing it trains the copying a query then needs (most of a quote is
predictable by copying the token that followed the previous one), and it brings the name to copy next to
the query. (Constant templated thoughts were tried before and only put tokens between passage and query.)

A space opens each query and short answer (``<search> Name company founded by</search>``): a word-level
tokenizer gives `` Name`` (as every passage and question writes it) and ``Name`` different ids, so
without it a copied name would be a different token from the one read, and copying could not generalise
to names never searched in training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ramp.agent.protocol import format_result_block
from ramp.agent.task import MASK_TOKEN, Task
from ramp.cot.trajectories import Trajectory
from ramp.experiment.world import Lookup, Question
from ramp.retrieval.env import SearchEnv
from ramp.rewards import combined_reward
from ramp.text import normalize

TEACHER = "world-oracle"
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")


@dataclass(frozen=True)
class Step:
    """One oracle search: its query, the value its result must hold ('' when any result will do), the id
    of the entity the query names, and what the oracle thinks before it: ``thought`` as given, or else the
    sentence of an earlier result or of the task that names ``quote_name``."""

    query: str
    value: str
    subject: str = ""
    thought: str = ""
    quote_name: str = ""


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def mask_sentences(masked_passage: str) -> list[str]:
    """The sentence holding each ``[mask]`` of a passage, in mask order."""
    return [s for s in sentences(masked_passage) for _ in range(s.count(MASK_TOKEN))]


def ramp_steps(task: Task, article_id: str, lookups: dict[tuple[str, str], Lookup]) -> list[Step] | str:
    """The searches for a RAMP task's masks, each after quoting its mask's sentence, or why the oracle
    cannot make them."""
    steps = []
    for n, (gold, sentence) in enumerate(zip(task.golds, mask_sentences(task.source), strict=True), start=1):
        found = lookups.get((article_id, gold))
        if found is None:
            return f"mask {n}: the world states its value nowhere else"
        steps.append(Step(found.query, gold, found.subject, thought=sentence))
    return steps


def qa_steps(question: Question, bridge_name: str) -> list[Step]:
    """The two hop searches of a question (the value each result must hold: its supporting fact); the
    first quotes the question, the second the sentence naming ``bridge_name`` (its entity)."""
    first, second = question.hop_queries
    first_subject, second_subject = question.supporting_ids
    second_value = question.golden_answers[0] if question.type == "bridge" else ""
    return [
        Step(first, "", first_subject, thought=question.question),
        Step(second, second_value, second_subject, quote_name=bridge_name),
    ]


def _quote(step: Step, shown: Sequence[str], task: Task) -> str:
    """The step's thought: given, or the first sentence naming its name in the latest shown result that
    has one, else in the task."""
    if step.thought or not step.quote_name:
        return step.thought
    for text in (*reversed(shown), task.source):
        found = [s for s in sentences(text) if step.quote_name in s]
        if found:
            return found[0]
    return ""


def oracle_trajectory(
    task: Task, steps: Sequence[Step], answer_text: str, fills: Sequence[str], env: SearchEnv
) -> Trajectory | str:
    """Run ``steps`` through ``env`` and write the trajectory, or the reason it fails verification."""
    episode = env.episode(task.exclude_doc_ids)
    messages = [dict(m) for m in task.messages]
    queries: list[str] = []
    retrieved: list[tuple[str, ...]] = []
    shown: list[str] = []
    turn = ""
    for step in steps:
        thought = _quote(step, shown, task)
        outcome = env.search([(episode, step.query)])[0]
        block = format_result_block(outcome.hits, status=outcome.status)
        if step.value and normalize(step.value, "ramp") not in normalize(block, "ramp"):
            return f"search {step.query!r} does not show {step.value!r}"
        shown += [h.text for h in outcome.hits]
        content = (f"<think> {thought}</think>" if thought else "") + f"<search> {step.query}</search>"
        messages += [{"role": "assistant", "content": content}, {"role": "tool", "content": block}]
        turn += content + block
        queries.append(step.query)
        retrieved.append(tuple(h.doc_id for h in outcome.hits))
    spaced = answer_text if answer_text[:1].isspace() else " " + answer_text
    final = f"<answer>{spaced}</answer>"
    messages.append({"role": "assistant", "content": final})
    turn += final
    golds = list(task.golds) if task.kind == "ramp" else [list(task.golds)]
    reward = combined_reward(turn, golds, num_masks=task.num_masks if task.kind == "ramp" else None)
    if reward.answer < 1.0 or reward.format < 1.0:
        return f"answer score {reward.answer:.2f}, format {reward.format:.0f}"
    return Trajectory(
        sample_id=task.task_id,
        kind=task.kind,
        teacher=TEACHER,
        teacher_model="",
        round=0,
        messages=tuple(messages),
        answer=answer_text,
        fills=tuple(fills),
        golds=tuple(task.golds),
        score=reward.answer,
        reward=reward.total,
        verified=True,
        num_masks=task.num_masks,
        queries=tuple(queries),
        retrieved_doc_ids=tuple(retrieved),
        exclude_doc_ids=task.exclude_doc_ids,
    )


def ramp_trajectory(task: Task, steps: Sequence[Step], env: SearchEnv) -> Trajectory | str:
    """The trajectory of a RAMP task's searches (:func:`ramp_steps`) and its one-line-per-mask answer."""
    answer = "\n" + "".join(f"[{n}] {gold}\n" for n, gold in enumerate(task.golds, start=1))
    return oracle_trajectory(task, steps, answer, task.golds, env)


def synthesized_steps(row: dict[str, Any]) -> list[Step]:
    """The searches of a synthesized question (a ``ramp data synthesize`` row): each hop's description
    from the last hop made (its search must show the entity it replaced), then the seed question; the
    first quotes the question, each later one the sentence naming the entity found before it."""
    chain = list(reversed(row["metadata"]["chain"]))
    steps = [
        Step(hop["description"], hop["entity"], thought=row["question"] if n == 0 else "",
             quote_name=chain[n - 1]["entity"] if n else "")
        for n, hop in enumerate(chain)
    ]  # fmt: skip
    last = chain[-1]["entity"] if chain else ""
    seed = row["metadata"]["seed_question"]
    steps.append(
        Step(seed, row["golden_answers"][0], thought="" if chain else row["question"], quote_name=last)
    )
    return steps


def synthesized_trajectory(task: Task, row: dict[str, Any], env: SearchEnv) -> Trajectory | str:
    """The trajectory of a synthesized question's chain of searches (:func:`synthesized_steps`)."""
    answer = row["golden_answers"][0]
    return oracle_trajectory(task, synthesized_steps(row), answer, [answer], env)


def fact_trajectory(task: Task, row: dict[str, Any], env: SearchEnv) -> Trajectory | str:
    """One search with the question itself as the query, then its answer (a fact question's row)."""
    answer = row["golden_answers"][0]
    step = Step(" ".join(row["question"].split()), answer, thought=row["question"])
    return oracle_trajectory(task, [step], answer, [answer], env)


def qa_trajectory(task: Task, question: Question, bridge_name: str, env: SearchEnv) -> Trajectory | str:
    """The trajectory of a question's two hops (the second about ``bridge_name``) and its answer."""
    answer = question.golden_answers[0]
    return oracle_trajectory(task, qa_steps(question, bridge_name), answer, [answer], env)
