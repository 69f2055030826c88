"""The one turn loop: generate, parse, search, insert results, continue -- for every stage.

All active rollouts advance together: each turn asks the policy for the next model segment of every
unfinished rollout in one call, searches for all rollouts that stopped on ``</search>`` in one
:class:`~ramp.retrieval.env.SearchEnv` call (each with its task's exclusions and its own budget), then
appends the result blocks as environment tokens. Who writes the model segments is a
:class:`TurnPolicy`: a generation backend (student, RL policy, evaluation; :class:`BackendPolicy`) or
the multi-agent CoT roles (``ramp.cot``), which differ in prompts and in who generates, not in how a
turn runs.

A rollout ends ``answer`` on ``</answer>`` (the loop then appends the end-of-turn token), ``eos`` when
the model stops (a sampled EOS stays a sampled token), ``token_budget`` / ``length`` on the model-token
budgets, ``max_turns``, ``context_full`` before the next turn would pass the context limit
(``search.max_context_tokens`` and the backend's maximum length; one position is kept for the end-of-turn
token) or ``error`` when the policy failed for it (``Rollout.error``).

Long rollouts (``rollout.context``): with ``keep_results`` K the model reads the prompt, all its own
segments and the K latest result blocks whole, each older block in its short form (a marker or each
document's first sentence); ``Rollout.dropped_results`` counts them. ``token_ids`` stays the whole
trajectory; :meth:`Rollout.training_views` gives the sequences each turn was actually sampled from.

Per token, ``sampled_mask`` (drawn by the model: carries a log-prob and the policy loss), ``env_mask``
(result blocks) and ``appended_mask`` (the end-of-turn token the loop adds after ``</answer>``) are
disjoint; the prompt is in none. Each rollout's sampling is seeded from (seed, task id, sample index)
and its turn, never from the batch it runs in. Token layout and boundaries: :mod:`ramp.agent.protocol`.
Without a tokenizer (a text-level policy such as the CoT roles) rollouts carry text only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from tqdm.auto import tqdm

from ramp.agent.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from ramp.agent.config import RolloutConfig
from ramp.agent.parser import extract_last_search, parse_response
from ramp.agent.protocol import (
    ANSWER_CLOSE,
    SEARCH_CLOSE,
    STOP_STRINGS,
    encode_prompt,
    encode_segment,
    end_of_turn_id,
    format_result_block,
    short_result_block,
)
from ramp.agent.task import Task, task_from_qa, task_from_sample
from ramp.prompts import Message
from ramp.retrieval.base import Retriever
from ramp.retrieval.env import SearchEnv, SearchEpisode, SearchOutcome
from ramp.seeding import stable_seed

__all__ = ["Rollout", "RolloutLoop", "Task", "TrainingView", "TurnPolicy", "task_from_qa", "task_from_sample"]

FinishReason = Literal["answer", "eos", "length", "token_budget", "max_turns", "context_full", "error"]


@dataclass(frozen=True)
class PolicyError:
    """A policy could not produce a rollout's next turn; the rollout ends with reason ``error``."""

    reason: str  # e.g. teacher_error, unparseable_teacher_output, max_turns
    detail: str = ""


@runtime_checkable
class TurnPolicy(Protocol):
    """Writes the next model segment of each rollout (text ending in ``</search>`` or ``</answer>``)."""

    def next_turns(
        self, rollouts: Sequence[Rollout], requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | PolicyError]:
        """One result or error per rollout, in order; ``requests[i]`` is rollout i's token request."""
        ...


class BackendPolicy:
    """A generation backend continuing each rollout's token context."""

    def __init__(self, backend: GenerationBackend) -> None:
        self.backend = backend

    def next_turns(
        self, rollouts: Sequence[Rollout], requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | PolicyError]:
        return list(self.backend.generate(requests))


@dataclass
class Segment:
    role: Literal["model", "env"]
    text: str
    token_ids: list[int]
    logprobs: list[float | None]  # model tokens: their log-probs (None if not requested); env: None
    window: int = 0  # model: how many older result blocks were short in the context it was sampled from
    short_ids: list[int] | None = None  # env, with context management: the block's short form


@dataclass(frozen=True)
class TrainingView:
    """One training sequence of a rollout: the context its model segments of one window were sampled
    from, and those segments (``sampled``: their tokens, and the end token in the last view)."""

    token_ids: list[int]
    sampled: list[bool]
    logprobs: list[float | None]


@dataclass
class Rollout:
    task: Task
    sample_index: int  # 0..n-1 within the task's group
    seed: int
    prompt_ids: list[int]
    episode: SearchEpisode
    segments: list[Segment] = field(default_factory=list)
    results: list[SearchOutcome] = field(default_factory=list)  # one per search, in order
    end_token: int | None = None  # the end-of-turn token closing a finished rollout
    end_sampled: bool = False  # drawn by the model (EOS) rather than appended by the loop
    end_logprob: float | None = None
    finish_reason: FinishReason | None = None
    error: PolicyError | None = None
    turns: int = 0
    dropped_results: int = 0  # older result blocks the model now reads in their short form
    generate_s: float = 0.0  # wall time of the batched calls this rollout took part in
    retrieve_s: float = 0.0
    scratch: dict[str, Any] = field(default_factory=dict)  # private to the policy

    def _per_token(self, model: Any, env: Any, end: Any, prompt: Any) -> list[Any]:
        values = [prompt] * len(self.prompt_ids)
        for s in self.segments:
            values += [model if s.role == "model" else env] * len(s.token_ids)
        return [*values, end] if self.end_token is not None else values

    @property
    def token_ids(self) -> list[int]:
        ids = self.prompt_ids + [t for s in self.segments for t in s.token_ids]
        return [*ids, self.end_token] if self.end_token is not None else ids

    @property
    def sampled_mask(self) -> list[bool]:
        """Tokens the model sampled: they carry log-probs and the policy loss."""
        return self._per_token(True, False, self.end_sampled, False)

    @property
    def env_mask(self) -> list[bool]:
        """Tokens the environment inserted (result blocks)."""
        return self._per_token(False, True, False, False)

    @property
    def appended_mask(self) -> list[bool]:
        """The end-of-turn token the loop appended after ``</answer>`` (never sampled, no log-prob)."""
        return self._per_token(False, False, not self.end_sampled, False)

    @property
    def is_model_token(self) -> list[bool]:
        """The SFT loss mask of ``render_trajectory``: sampled or appended."""
        return self._per_token(True, False, True, False)

    @property
    def logprobs(self) -> list[float | None]:
        """Per token: the sampled tokens' log-probs, None elsewhere."""
        lps: list[float | None] = [None] * len(self.prompt_ids)
        lps += [lp for s in self.segments for lp in s.logprobs]
        return [*lps, self.end_logprob] if self.end_token is not None else lps

    @property
    def num_sampled_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.segments if s.role == "model") + (
            self.end_token is not None and self.end_sampled
        )

    @property
    def num_env_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.segments if s.role == "env")

    @property
    def queries(self) -> list[str]:
        return [r.query for r in self.results]

    @property
    def documents(self) -> list[list[str]]:
        """Doc ids shown per search."""
        return [[h.doc_id for h in r.hits] for r in self.results]

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

    def context_ids(self, window: int | None = None) -> list[int]:
        """What the model reads: the prompt and every segment, the first ``window`` result blocks short
        (default: ``dropped_results``, i.e. the context of the next turn)."""
        window = self.dropped_results if window is None else window
        ids, results = list(self.prompt_ids), 0
        for s in self.segments:
            if s.role == "env":
                short = results < window and s.short_ids is not None
                ids += s.short_ids if short and s.short_ids is not None else s.token_ids
                results += 1
            else:
                ids += s.token_ids
        return ids

    def training_views(self) -> list[TrainingView]:
        """One sequence per window: the context the window's model segments were sampled from, then those
        segments (sampled); earlier model segments are in the prefix but not sampled there. Without a
        short result block there is one view: ``token_ids``, ``sampled_mask`` and ``logprobs``."""
        windows = sorted({s.window for s in self.segments if s.role == "model"}) or [0]
        views = []
        for w in windows:
            model = [i for i, s in enumerate(self.segments) if s.role == "model" and s.window == w]
            ids, sampled = list(self.prompt_ids), [False] * len(self.prompt_ids)
            lps: list[float | None] = [None] * len(ids)
            results = 0
            for s in self.segments[: model[-1] + 1 if model else 0]:
                mine = s.role == "model" and s.window == w
                tokens = s.token_ids
                if s.role == "env":
                    tokens = s.short_ids if results < w and s.short_ids is not None else s.token_ids
                    results += 1
                ids += tokens
                sampled += [mine] * len(tokens)
                lps += s.logprobs if mine else [None] * len(tokens)
            if w == windows[-1] and self.end_token is not None:
                ids, sampled, lps = (
                    [*ids, self.end_token],
                    [*sampled, self.end_sampled],
                    [*lps, self.end_logprob],
                )
            views.append(TrainingView(ids, sampled, lps))
        return views

    def to_messages(self) -> list[Message]:
        """System, user, then assistant (model text) and tool (result block) messages, in order."""
        return [
            *(dict(m) for m in self.task.messages),
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
    turns: int = 0  # batched policy calls


class RolloutLoop:
    """Runs :class:`Task`s to :class:`Rollout`s with a backend (or a :class:`TurnPolicy`) and a search env.

    A bare :class:`Retriever` is wrapped in a :class:`SearchEnv` with the default ``search:`` settings.
    """

    def __init__(
        self,
        backend: GenerationBackend | TurnPolicy,
        env: SearchEnv | Retriever,
        config: RolloutConfig,
        tokenizer: Any | None = None,
    ) -> None:
        self.policy: TurnPolicy = backend if isinstance(backend, TurnPolicy) else BackendPolicy(backend)
        self.env = env if isinstance(env, SearchEnv) else SearchEnv(env)
        self.config = config
        self.tokenizer: Any = tokenizer if tokenizer is not None else getattr(backend, "tokenizer", None)
        if self.tokenizer is None and not isinstance(backend, TurnPolicy):
            raise ValueError("the rollout loop needs a tokenizer (the backend has none: pass one)")
        self.end_id = end_of_turn_id(self.tokenizer, config.end_of_turn_token) if self.tokenizer else None
        self.eos_ids = set(getattr(backend, "eos_ids", ())) | (
            {self.end_id} if self.end_id is not None else set()
        )
        limits = [self.env.config.max_context_tokens, getattr(backend, "max_length", None)]
        self.max_context: int | None = min((n for n in limits if n), default=None)
        self.stats = LoopStats()

    def _encode(self, text: str) -> list[int]:
        return encode_segment(text, self.tokenizer) if self.tokenizer is not None else []

    def run(self, tasks: Sequence[Task], progress: bool = False) -> list[Rollout]:
        """``config.n`` rollouts per task, in task order; each gets a seed from its task id and index."""
        cfg = self.config
        start = time.perf_counter()
        self.stats = LoopStats()
        rollouts: list[Rollout] = []
        for task in tasks:
            prompt = encode_prompt(task.messages, self.tokenizer) if self.tokenizer is not None else []
            for index in range(cfg.n):
                rollouts.append(
                    Rollout(
                        task=task,
                        sample_index=index,
                        seed=stable_seed(cfg.seed, task.task_id, index) % 2**31,
                        prompt_ids=list(prompt),
                        episode=self.env.episode(task.exclude_doc_ids),
                    )
                )
        contexts = [list(r.prompt_ids) for r in rollouts]  # running token ids per rollout
        active = list(range(len(rollouts)))
        bar = tqdm(total=len(rollouts), desc="rollouts", unit="rollout", disable=not progress)
        while active:
            asking, requests = [], []
            for i in active:
                request = self._request(rollouts[i], contexts[i])
                if request is None:
                    rollouts[i].finish_reason = "context_full"
                else:
                    asking.append(i)
                    requests.append(request)
            t0 = time.perf_counter()
            results = self.policy.next_turns([rollouts[i] for i in asking], requests) if asking else []
            elapsed = time.perf_counter() - t0
            self.stats.generate_s += elapsed
            self.stats.turns += 1
            searching: list[tuple[int, str | None]] = []
            for i, request, result in zip(asking, requests, results, strict=True):
                rollout = rollouts[i]
                rollout.generate_s += elapsed
                rollout.turns += 1
                if isinstance(result, PolicyError):
                    rollout.finish_reason, rollout.error = "error", result
                    continue
                segment = self._model_segment(rollout, result, request)
                contexts[i] += segment.token_ids
                self.stats.model_tokens += len(segment.token_ids) + (rollout.end_sampled and rollout.ended)
                if rollout.finish_reason is not None:
                    continue
                if result.finish_reason == "stop" and result.stop_string == SEARCH_CLOSE:
                    if rollout.turns >= cfg.max_turns:
                        rollout.finish_reason = "max_turns"
                    elif rollout.num_sampled_tokens >= cfg.max_total_new_tokens:
                        rollout.finish_reason = "token_budget"
                    else:
                        searching.append((i, extract_last_search(segment.text)))
                elif rollout.num_sampled_tokens >= cfg.max_total_new_tokens:
                    rollout.finish_reason = "token_budget"
                elif self.max_context is not None and len(contexts[i]) + 1 >= self.max_context:
                    rollout.finish_reason = "context_full"
                else:
                    rollout.finish_reason = "length"
            if searching:
                t0 = time.perf_counter()
                self._search(rollouts, contexts, searching)
                elapsed = time.perf_counter() - t0
                self.stats.retrieve_s += elapsed
                for i, _ in searching:
                    rollouts[i].retrieve_s += elapsed
            still_active = [i for i in active if rollouts[i].finish_reason is None]
            bar.update(len(active) - len(still_active))
            active = still_active
        bar.close()
        self.stats.total_s = time.perf_counter() - start
        return rollouts

    def _request(self, rollout: Rollout, context: list[int]) -> GenerationRequest | None:
        """The next turn's request, or None when the context has no room for it (and the end token)."""
        cfg = self.config
        budget = min(cfg.max_new_tokens_per_turn, cfg.max_total_new_tokens - rollout.num_sampled_tokens)
        if self.max_context is not None and self.tokenizer is not None:
            budget = min(budget, self.max_context - len(context) - 1)
            if budget < 1:
                return None
        return GenerationRequest(
            prompt_ids=context,
            max_new_tokens=max(1, budget),
            stop=STOP_STRINGS,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=stable_seed(rollout.seed, rollout.turns) % 2**31,
            logprobs=cfg.logprobs,
        )

    def _model_segment(
        self, rollout: Rollout, result: GenerationResult, request: GenerationRequest
    ) -> Segment:
        """Append the generated segment; close the rollout on EOS or ``</answer>``."""
        ids = list(result.token_ids) or self._encode(result.text)
        logprobs: list[float | None] = [None] * len(ids)
        if request.logprobs:
            if result.logprobs is None or len(result.logprobs) != len(ids):
                got = "none" if result.logprobs is None else len(result.logprobs)
                raise ValueError(
                    f"rollout {rollout.task.task_id}: log-probs were requested but the backend returned "
                    f"{got} for {len(ids)} tokens (set rollout.logprobs=false, or use a token-level backend)"
                )
            logprobs = list(result.logprobs)
        if result.finish_reason == "eos":
            rollout.finish_reason = "eos"
            if ids and ids[-1] in self.eos_ids:  # the model sampled its end
                rollout.end_token, rollout.end_sampled, rollout.end_logprob = ids[-1], True, logprobs[-1]
                ids, logprobs = ids[:-1], logprobs[:-1]
            else:  # a text-level server stripped it
                rollout.end_token = self.end_id
        elif result.finish_reason == "stop" and result.stop_string == ANSWER_CLOSE:
            rollout.end_token = self.end_id
            rollout.finish_reason = "answer"
        text = self.tokenizer.decode(ids, skip_special_tokens=False) if result.token_ids else result.text
        segment = Segment("model", text, ids, logprobs, window=rollout.dropped_results)
        rollout.segments.append(segment)
        return segment

    def _search(
        self, rollouts: list[Rollout], contexts: list[list[int]], searching: list[tuple[int, str | None]]
    ) -> None:
        """One environment call for every rollout searching this turn; result blocks that would leave
        no room for another model token end their rollout ``context_full`` instead.

        With ``context.keep_results`` K, a block beyond the K-th whole one turns the oldest whole block
        short (``context.older``) in the context of every later turn; the prompt, the model's segments
        and the K latest blocks are never cut."""
        keep, older = self.config.context.keep_results, self.config.context.older
        outcomes = self.env.search([(rollouts[i].episode, query) for i, query in searching])
        self.stats.searches += len(searching)
        for (i, _), outcome in zip(searching, outcomes, strict=True):
            rollout = rollouts[i]
            block = format_result_block(outcome.hits, status=outcome.status)
            ids = self._encode(block)
            short = None
            if keep is not None:
                short = self._encode(short_result_block(outcome.hits, status=outcome.status, older=older))
            drop = keep is not None and len(rollout.results) + 1 - rollout.dropped_results > keep
            length = len(contexts[i]) + len(ids)
            if drop:
                oldest = [s for s in rollout.segments if s.role == "env"][rollout.dropped_results]
                length -= len(oldest.token_ids) - len(oldest.short_ids or oldest.token_ids)
            if self.max_context is not None and length + 2 > self.max_context:
                rollout.finish_reason = "context_full"
                continue
            rollout.segments.append(Segment("env", block, ids, [None] * len(ids), short_ids=short))
            rollout.results.append(outcome)
            if drop:
                rollout.dropped_results += 1
                contexts[i] = rollout.context_ids()
            else:
                contexts[i] += ids
