"""Long rollouts inside the context limit (``rollout.context``): a scripted policy searching 40 times with
a real Lucene index stays within the limit, what it reads at every turn follows the rule (prompt and own
segments whole, the last K result blocks whole, older ones short), and the training views are exactly
the contexts each turn was sampled from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from tiny_model import ScriptedBackend, tiny_backend

from ramp.agent.backends.base import GenerationRequest, GenerationResult
from ramp.agent.config import RolloutConfig
from ramp.agent.protocol import (
    DROPPED,
    encode_segment,
    first_sentence,
    format_result_block,
    short_result_block,
)
from ramp.agent.rollout import RolloutLoop
from ramp.agent.task import Task
from ramp.prompts import chat
from ramp.retrieval.env import SearchConfig, SearchEnv

QUERIES = ["Medicare Medicaid", "Genentech Roche", "Clinton White House intern", "Evan Morris lobbyist"]
SEARCHES = 40
SCRIPT = [f"<search> {QUERIES[i % len(QUERIES)]} {i}</search>" for i in range(SEARCHES)]
SCRIPT.append("<answer>Washington</answer>")


class Recording:
    """A backend that keeps every request it was sent (the contexts the model read)."""

    def __init__(self, inner: ScriptedBackend) -> None:
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.eos_ids, self.max_length = inner.eos_ids, inner.max_length
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests += [replace(r, prompt_ids=list(r.prompt_ids or [])) for r in requests]  # a snapshot
        return self.inner.generate(requests)


@pytest.fixture(scope="module")
def scripted():
    return ScriptedBackend(tiny_backend(), {" longkey": SCRIPT})


@pytest.fixture(scope="module")
def free(scripted, lucene_retriever):
    """The rollout without a context limit or management."""
    return _run(scripted, lucene_retriever, None)[0]


def _run(scripted, retriever, limit: int | None, **context):
    backend = Recording(scripted)
    env = SearchEnv(retriever, SearchConfig(top_k=2, max_chars_per_doc=160, max_context_tokens=limit))
    config = RolloutConfig(
        max_turns=SEARCHES + 1, max_new_tokens_per_turn=24, max_total_new_tokens=2000, context=context
    )
    task = Task(task_id="longkey", kind="qa", messages=tuple(chat("Question about longkey ?")), golds=("x",))
    [rollout] = RolloutLoop(backend, env, config).run([task])
    return rollout, backend.requests


def test_forty_searches_stay_within_the_limit_and_keep_the_rule(scripted, lucene_retriever, free):
    keep, older = 3, "marker"
    assert free.finish_reason == "answer" and len(free.queries) == SEARCHES
    limit = len(free.token_ids) // 3  # the whole conversation is three times the limit
    cut, _ = _run(scripted, lucene_retriever, limit)
    assert cut.finish_reason == "context_full" and len(cut.queries) < SEARCHES
    rollout, requests = _run(scripted, lucene_retriever, limit, keep_results=keep, older=older)
    assert (
        rollout.finish_reason == "answer"
        and rollout.queries == free.queries
        and rollout.turns == SEARCHES + 1
    )
    assert rollout.dropped_results == SEARCHES - keep and rollout.token_ids == free.token_ids
    tok = scripted.tokenizer
    env = [s for s in rollout.segments if s.role == "env"]
    model = [s for s in rollout.segments if s.role == "model"]
    shorts = [encode_segment(short_result_block(r.hits, older=older), tok) for r in rollout.results]
    assert all(tok.decode(short).strip().splitlines()[1] == DROPPED for short in shorts)
    for turn, request in enumerate(requests):  # turn t reads t searches' results
        assert len(request.prompt_ids) + request.max_new_tokens < limit
        expected = list(rollout.prompt_ids)
        for j in range(turn):
            expected += model[j].token_ids + (env[j].token_ids if j >= turn - keep else shorts[j])
        assert request.prompt_ids == expected  # the question, every model turn, the last K results whole
        assert model[turn].window == max(0, turn - keep)
    # one training view per window; each turn's tokens sampled exactly once, after the context it read
    views = rollout.training_views()
    assert len(views) == SEARCHES - keep + 1
    assert sum(sum(v.sampled) for v in views) == sum(rollout.sampled_mask)
    for turn, request in enumerate(requests):
        view = views[model[turn].window]
        n = len(request.prompt_ids)
        assert view.token_ids[:n] == request.prompt_ids
        assert view.token_ids[n : n + len(model[turn].token_ids)] == model[turn].token_ids
        assert all(view.sampled[n : n + len(model[turn].token_ids)])
        assert view.logprobs[n : n + len(model[turn].token_ids)] == model[turn].logprobs
        earlier = [m for m in model[:turn] if m.window == model[turn].window]  # same context, same view
        assert sum(view.sampled[:n]) == sum(len(m.token_ids) for m in earlier)


def test_without_dropped_results_the_one_view_is_the_rollout(free):
    assert free.dropped_results == 0
    [view] = free.training_views()
    assert view.token_ids == free.token_ids
    assert view.sampled == free.sampled_mask and view.logprobs == free.logprobs


def test_short_forms_first_sentence_and_marker(lucene_retriever):
    env = SearchEnv(lucene_retriever, SearchConfig(top_k=2))
    [outcome] = env.search([(env.episode(), "Medicare Medicaid")])
    assert outcome.hits
    short = short_result_block(outcome.hits, older="first_sentence")
    for hit in outcome.hits:
        assert f"{hit.title}\n{first_sentence(hit.text)}\n" in short
        assert first_sentence(hit.text) == hit.text.split(". ")[0] + "." or ". " not in hit.text
    assert len(short) < len(format_result_block(outcome.hits))
    marker = short_result_block(outcome.hits, older="marker")
    assert marker.strip().splitlines() == ["<result>", DROPPED, "</result>"]
    assert short_result_block((), status="no_budget", older="marker") == format_result_block(
        (), status="no_budget"
    )
