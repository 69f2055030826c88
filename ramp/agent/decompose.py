"""AceSearcher's two roles played by one policy, chosen by prompt (arXiv 2509.24193): the **decomposer**
writes a question's sub-questions (``1. …`` one per line; ``#n`` stands for sub-question n's answer) and
the **solver** answers each sub-question from the documents its search found, then the question itself
from every sub-question's documents. One search per sub-question, at most ``max_subquestions`` of them:
the question's retrieval budget. Every generation goes through a token-level backend (``hf``/``vllm``),
the sampled decompositions seeded per (seed, question, candidate).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from ramp.agent.backends.base import GenerationRequest, GenerationResult
from ramp.agent.protocol import encode_prompt, format_result_block
from ramp.config import StrictModel
from ramp.retrieval.env import SearchEnv
from ramp.seeding import stable_seed

DECOMPOSER_SYSTEM = (
    "Break the question into the sub-questions a search engine answers, one per line, numbered "
    "(1. ...). Write #n for the answer of sub-question n."
)
SOLVER_SYSTEM = "Answer the question from the documents. Write only the answer."
SUBQUESTION = re.compile(r"^\s*(\d+)[.)]\s*(.+?)\s*$")
REFERENCE = re.compile(r"#(\d+)")


class DecomposeConfig(StrictModel):
    max_subquestions: int = Field(default=3, ge=1)  # the retrieval budget: one search per sub-question
    max_decomposition_tokens: int = Field(default=64, ge=1)
    max_answer_tokens: int = Field(default=16, ge=1)


def decomposer_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": DECOMPOSER_SYSTEM}, {"role": "user", "content": question}]


def solver_messages(question: str, steps: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The solver's prompt: each (sub-question, result block) searched so far, then the question."""
    context = "\n".join(f"{sub}\n{block}" for sub, block in steps)
    return [
        {"role": "system", "content": SOLVER_SYSTEM},
        {"role": "user", "content": f"{context}\nQuestion: {question}"},
    ]


def format_decomposition(subquestions: Sequence[str]) -> str:
    return "\n".join(f"{i}. {sub}" for i, sub in enumerate(subquestions, start=1))


def parse_subquestions(text: str, limit: int) -> list[str]:
    """The numbered lines of a decomposition, in order, at most ``limit``; lines without a number are
    not sub-questions. An unnumbered text falls back to the whole text as one sub-question."""
    subs = [m.group(2) for line in text.splitlines() if (m := SUBQUESTION.match(line))]
    if not subs and text.strip():
        subs = [" ".join(text.split())]
    return subs[:limit]


def fill_references(subquestion: str, answers: Sequence[str]) -> str:
    """``#n`` replaced by the answer of sub-question n (left as written when n has no answer yet)."""

    def answer(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return answers[n - 1] if 1 <= n <= len(answers) else match.group(0)

    return REFERENCE.sub(answer, subquestion)


@dataclass(frozen=True)
class Solution:
    decomposition: str  # the decomposer's text
    queries: tuple[str, ...]  # the sub-questions as searched (references filled)
    answers: tuple[str, ...]  # the solver's answer to each
    doc_ids: tuple[tuple[str, ...], ...]  # retrieved per sub-question
    answer: str  # the final answer
    solver_tokens: int = 0  # tokens the solver generated (sub-answers and the final answer)


class DecomposeSolver:
    """The decomposer-solver pipeline over one backend (the policy) and one search environment."""

    def __init__(self, backend: Any, tokenizer: Any, env: SearchEnv, config: DecomposeConfig) -> None:
        self.backend, self.tokenizer, self.env, self.config = backend, tokenizer, env, config

    def decompose(
        self, questions: Sequence[str], n: int, temperature: float, seed: int, ids: Sequence[str]
    ) -> list[list[str]]:
        """``n`` decompositions per question (greedy when ``temperature`` is 0), seeded per question id."""
        generated = self.decompose_generations(questions, n, temperature, seed, ids)
        return [[g.text for g in row] for row in generated]

    def decompose_generations(
        self, questions: Sequence[str], n: int, temperature: float, seed: int, ids: Sequence[str]
    ) -> list[list[GenerationResult]]:
        """:meth:`decompose` with the backend's results (their token ids)."""
        requests = [
            GenerationRequest(
                prompt_ids=encode_prompt(decomposer_messages(q), self.tokenizer),
                max_new_tokens=self.config.max_decomposition_tokens,
                temperature=temperature,
                seed=stable_seed(seed, "decompose", qid, j) % 2**31,
            )
            for q, qid in zip(questions, ids, strict=True)
            for j in range(n)
        ]
        results = list(self.backend.generate(requests))
        return [results[i * n : (i + 1) * n] for i in range(len(questions))]

    def _answer(self, prompts: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> list[GenerationResult]:
        requests = [
            GenerationRequest(
                prompt_ids=encode_prompt(solver_messages(q, steps), self.tokenizer),
                max_new_tokens=self.config.max_answer_tokens,
            )
            for q, steps in prompts
        ]
        return list(self.backend.generate(requests)) if requests else []

    def solve(self, questions: Sequence[str], decompositions: Sequence[str]) -> list[Solution]:
        """Solve each question along its decomposition (greedy solver), all questions batched per step."""
        subs = [parse_subquestions(d, self.config.max_subquestions) for d in decompositions]
        steps: list[list[tuple[str, str]]] = [[] for _ in questions]
        answers: list[list[str]] = [[] for _ in questions]
        doc_ids: list[list[tuple[str, ...]]] = [[] for _ in questions]
        tokens = [0 for _ in questions]
        for i in range(max((len(s) for s in subs), default=0)):
            rows = [r for r, s in enumerate(subs) if i < len(s)]
            queries = [fill_references(subs[r][i], answers[r]) for r in rows]
            outcomes = self.env.search([(self.env.episode(), q) for q in queries])
            for r, query, outcome in zip(rows, queries, outcomes, strict=True):
                steps[r].append((query, format_result_block(outcome.hits, status=outcome.status)))
                doc_ids[r].append(tuple(h.doc_id for h in outcome.hits))
            sub_answers = self._answer([(q, steps[r][-1:]) for r, q in zip(rows, queries, strict=True)])
            for r, answer in zip(rows, sub_answers, strict=True):
                answers[r].append(_text(answer))
                tokens[r] += len(answer.token_ids)
        finals = self._answer(list(zip(questions, steps, strict=True)))
        return [
            Solution(
                decomposition=d,
                queries=tuple(query for query, _ in steps[r]),
                answers=tuple(answers[r]),
                doc_ids=tuple(doc_ids[r]),
                answer=_text(finals[r]),
                solver_tokens=tokens[r] + len(finals[r].token_ids),
            )
            for r, d in enumerate(decompositions)
        ]


def _text(result: GenerationResult) -> str:
    return " ".join(result.text.split())
