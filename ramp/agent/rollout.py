"""The multi-turn rollout loop: generate, parse, retrieve, insert results, continue.

All active rollouts advance together: each turn sends every unfinished rollout to the backend in one
call, gathers the rollouts that stopped on ``</search>`` and searches for all of them in one retriever
call (each with its own excluded documents and per-search ``k``), then appends the result blocks as
environment tokens. A rollout ends on ``</answer>`` or EOS (then the end-of-turn token closes it), on its
token budget, or after ``max_turns`` model turns. Token layout and boundaries: see
:mod:`ramp.agent.protocol`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tqdm.auto import tqdm

from ramp.agent.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from ramp.agent.config import RolloutConfig
from ramp.agent.parser import extract_last_search, parse_response
from ramp.agent.protocol import (
    ANSWER_CLOSE,
    NO_BUDGET,
    NO_QUERY,
    NO_RESULTS,
    SEARCH_CLOSE,
    STOP_STRINGS,
    encode_prompt,
    encode_segment,
    end_of_turn_id,
    format_result_block,
)
from ramp.data.samples import Sample
from ramp.prompts import Message, PromptTemplates, chat, qa_user_prompt, ramp_user_prompt
from ramp.retrieval.base import Hit, Retriever
from ramp.seeding import stable_seed

TaskKind = Literal["ramp", "qa"]
FinishReason = Literal["answer", "eos", "length", "token_budget", "max_turns"]


@dataclass(frozen=True)
class RolloutTask:
    task_id: str
    messages: list[Message]  # system + user (ramp.prompts.chat)
    kind: TaskKind
    golds: tuple[str | tuple[str, ...], ...] = ()  # ramp: one per mask; qa: accepted answers
    num_masks: int | None = None  # ramp only
    exclude_doc_ids: tuple[str, ...] = ()


def task_from_sample(sample: Sample, templates: PromptTemplates | None = None) -> RolloutTask:
    return RolloutTask(
        task_id=sample.sample_id,
        messages=chat(ramp_user_prompt(sample.masked_passage, sample.num_masks, templates), templates),
        kind="ramp",
        golds=tuple(sample.answers) or tuple(m.text for m in sample.masks),
        num_masks=sample.num_masks,
        exclude_doc_ids=tuple(sample.exclude_doc_ids),
    )


def task_from_qa(row: Mapping[str, Any], templates: PromptTemplates | None = None) -> RolloutTask:
    """A QA row ``{"id", "question", "golden_answers"}`` (the bundled HotpotQA format)."""
    return RolloutTask(
        task_id=str(row["id"]),
        messages=chat(qa_user_prompt(row["question"], templates), templates),
        kind="qa",
        golds=tuple(row["golden_answers"]),
    )


@dataclass
class Segment:
    role: Literal["model", "env"]
    text: str
    token_ids: list[int]
    logprobs: list[float | None]  # model tokens: sampling log-probs (None where unknown); env: None


@dataclass
class Rollout:
    task: RolloutTask
    sample_index: int  # 0..n-1 within the task's group
    seed: int
    prompt_ids: list[int]
    segments: list[Segment] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    documents: list[list[str]] = field(default_factory=list)  # doc ids per search
    end_token: int | None = None  # the end-of-turn token closing a finished rollout
    end_logprob: float | None = None  # its log-prob when the model generated it
    finish_reason: FinishReason | None = None
    turns: int = 0
    generate_s: float = 0.0  # wall time of the batched calls this rollout took part in
    retrieve_s: float = 0.0

    @property
    def token_ids(self) -> list[int]:
        ids = self.prompt_ids + [t for s in self.segments for t in s.token_ids]
        return [*ids, self.end_token] if self.end_token is not None else ids

    @property
    def is_model_token(self) -> list[bool]:
        mask = [False] * len(self.prompt_ids) + [
            s.role == "model" for s in self.segments for _ in s.token_ids
        ]
        return [*mask, True] if self.end_token is not None else mask

    @property
    def logprobs(self) -> list[float | None]:
        lps = [None] * len(self.prompt_ids) + [lp for s in self.segments for lp in s.logprobs]
        return [*lps, self.end_logprob] if self.end_token is not None else lps

    @property
    def num_model_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.segments if s.role == "model") + (
            self.end_token is not None
        )

    @property
    def num_env_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.segments if s.role == "env")

    @property
    def response_text(self) -> str:
        """The whole assistant turn (model text and result blocks), without the end-of-turn token."""
        return "".join(s.text for s in self.segments)

    @property
    def answer(self) -> str | None:
        return parse_response("".join(s.text for s in self.segments if s.role == "model")).answer

    @property
    def ended(self) -> bool:
        return self.end_token is not None

    def to_messages(self) -> list[Message]:
        """System, user, then assistant (model text) and tool (result block) messages, in order."""
        return [
            *self.task.messages,
            *(
                {"role": "assistant" if s.role == "model" else "tool", "content": s.text}
                for s in self.segments
            ),
        ]


@dataclass
class LoopStats:
    generate_s: float = 0.0
    retrieve_s: float = 0.0
    total_s: float = 0.0
    model_tokens: int = 0
    searches: int = 0
    turns: int = 0  # batched backend calls


class RolloutLoop:
    """Runs :class:`RolloutTask`s to :class:`Rollout`s with a backend and a retriever."""

    def __init__(
        self,
        backend: GenerationBackend,
        retriever: Retriever,
        config: RolloutConfig,
        tokenizer: Any | None = None,
    ) -> None:
        self.backend = backend
        self.retriever = retriever
        self.config = config
        self.tokenizer: Any = tokenizer if tokenizer is not None else getattr(backend, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("the rollout loop needs a tokenizer (the backend has none: pass one)")
        self.end_id = end_of_turn_id(self.tokenizer, config.end_of_turn_token)
        self.eos_ids = set(getattr(backend, "eos_ids", ())) | {self.end_id}
        self.stats = LoopStats()

    def run(self, tasks: Sequence[RolloutTask], progress: bool = False) -> list[Rollout]:
        """``config.n`` rollouts per task, in task order; each gets a seed from its task id and index."""
        cfg = self.config
        start = time.perf_counter()
        self.stats = LoopStats()
        rollouts: list[Rollout] = []
        for task in tasks:
            prompt = encode_prompt(task.messages, self.tokenizer)
            for index in range(cfg.n):
                seed = stable_seed(cfg.seed, task.task_id, index) % 2**31
                rollouts.append(Rollout(task=task, sample_index=index, seed=seed, prompt_ids=list(prompt)))
        contexts = [list(r.prompt_ids) for r in rollouts]  # running token ids per rollout
        docs_left = [cfg.retrieval_budget_docs] * len(rollouts)
        active = list(range(len(rollouts)))
        bar = tqdm(total=len(rollouts), desc="rollouts", unit="rollout", disable=not progress)
        while active:
            requests = [self._request(rollouts[i], contexts[i]) for i in active]
            t0 = time.perf_counter()
            results = self.backend.generate(requests)
            elapsed = time.perf_counter() - t0
            self.stats.generate_s += elapsed
            self.stats.turns += 1
            searching: list[tuple[int, str | None]] = []
            still_active = []
            for i, result in zip(active, results, strict=True):
                rollout = rollouts[i]
                rollout.generate_s += elapsed
                segment = self._model_segment(rollout, result)
                contexts[i] += segment.token_ids
                rollout.turns += 1
                self.stats.model_tokens += (
                    len(result.token_ids) if result.token_ids else len(segment.token_ids)
                )
                if rollout.finish_reason is not None:
                    continue
                if result.finish_reason == "stop" and result.stop_string == SEARCH_CLOSE:
                    if rollout.turns >= cfg.max_turns:
                        rollout.finish_reason = "max_turns"
                    elif rollout.num_model_tokens >= cfg.max_total_new_tokens:
                        rollout.finish_reason = "token_budget"
                    else:
                        searching.append((i, extract_last_search(segment.text)))
                        still_active.append(i)
                elif rollout.num_model_tokens >= cfg.max_total_new_tokens:
                    rollout.finish_reason = "token_budget"
                else:
                    rollout.finish_reason = "length"
            if searching:
                t0 = time.perf_counter()
                self._search(rollouts, contexts, docs_left, searching)
                elapsed = time.perf_counter() - t0
                self.stats.retrieve_s += elapsed
                for i, _ in searching:
                    rollouts[i].retrieve_s += elapsed
            bar.update(len(active) - len(still_active))
            active = still_active
        bar.close()
        self.stats.total_s = time.perf_counter() - start
        return rollouts

    def _request(self, rollout: Rollout, context: list[int]) -> GenerationRequest:
        cfg = self.config
        left = cfg.max_total_new_tokens - rollout.num_model_tokens
        return GenerationRequest(
            prompt_ids=context,
            max_new_tokens=max(1, min(cfg.max_new_tokens_per_turn, left)),
            stop=STOP_STRINGS,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=stable_seed(rollout.seed, rollout.turns) % 2**31,
        )

    def _model_segment(self, rollout: Rollout, result: GenerationResult) -> Segment:
        """Append the generated segment; close the rollout on EOS or ``</answer>``."""
        ids = list(result.token_ids) or encode_segment(result.text, self.tokenizer)
        logprobs: list[float | None] = (
            list(result.logprobs)
            if result.logprobs and len(result.logprobs) == len(ids)
            else [None] * len(ids)
        )
        if result.finish_reason == "eos" and ids and ids[-1] in self.eos_ids:
            rollout.end_token, rollout.end_logprob = ids[-1], logprobs[-1]
            ids, logprobs = ids[:-1], logprobs[:-1]
            rollout.finish_reason = "eos"
        elif result.finish_reason == "stop" and result.stop_string == ANSWER_CLOSE:
            rollout.end_token = self.end_id
            rollout.finish_reason = "answer"
        text = self.tokenizer.decode(ids, skip_special_tokens=False) if result.token_ids else result.text
        segment = Segment("model", text, ids, logprobs)
        rollout.segments.append(segment)
        return segment

    def _search(
        self,
        rollouts: list[Rollout],
        contexts: list[list[int]],
        docs_left: list[int | None],
        searching: list[tuple[int, str | None]],
    ) -> None:
        """One retriever call per distinct ``k`` for every rollout searching this turn."""
        cfg = self.config
        hits: dict[int, list[Hit]] = {}
        by_k: dict[int, list[tuple[int, str]]] = {}
        for i, query in searching:
            k = cfg.top_k if docs_left[i] is None else min(cfg.top_k, docs_left[i] or 0)
            if query and k > 0:
                by_k.setdefault(k, []).append((i, query))
        for k, group in by_k.items():
            found = self.retriever.search(
                [q for _, q in group],
                k=k,
                exclude_doc_ids=[rollouts[i].task.exclude_doc_ids for i, _ in group],
            )
            hits.update({i: h for (i, _), h in zip(group, found, strict=True)})
        self.stats.searches += len(searching)
        for i, query in searching:
            rollout = rollouts[i]
            found_hits = hits.get(i, [])
            empty = NO_QUERY if not query else NO_BUDGET if docs_left[i] == 0 else NO_RESULTS
            block = format_result_block(found_hits, cfg.max_chars_per_doc, empty_text=empty)
            ids = encode_segment(block, self.tokenizer)
            rollout.segments.append(Segment("env", block, ids, [None] * len(ids)))
            rollout.queries.append(query or "")
            rollout.documents.append([h.doc_id for h in found_hits])
            if docs_left[i] is not None:
                docs_left[i] = max(0, (docs_left[i] or 0) - len(found_hits))
            contexts[i] += ids
