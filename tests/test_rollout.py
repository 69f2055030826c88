from __future__ import annotations

import pytest
from tiny_model import ScriptedBackend, tiny_backend

from ramp.agent.backends.base import GenerationResult
from ramp.agent.config import RolloutConfig
from ramp.agent.protocol import (
    NO_BUDGET,
    RESULT_CLOSE,
    RESULT_OPEN,
    encode_prompt,
    format_result_block,
    render_trajectory,
)
from ramp.agent.rollout import RolloutLoop
from ramp.agent.task import Task, task_from_qa, task_from_row, task_from_sample
from ramp.data.samples import Mask, Sample
from ramp.prompts import chat
from ramp.retrieval.base import Hit
from ramp.retrieval.env import SearchConfig, SearchEnv, shown_hit
from ramp.rewards import combined_reward

SEARCH_THEN_ANSWER = [
    "<think>who is it</think><search> Evan Morris lobbyist Genentech</search>",
    "<think>found</think><answer>\n[1] Genentech\n</answer>",
]
TWO_SEARCHES = [
    "<search> lobbyist Genentech Roche</search>",
    "<search> Clinton White House intern</search>",
    "<answer>Washington</answer>",
]
ALWAYS_SEARCH = ["<search> Medicare Medicaid</search>"]


@pytest.fixture(scope="module")
def backend():
    return tiny_backend()


def _task(key: str, kind="qa", exclude=(), num_masks=0) -> Task:
    return Task(
        task_id=key.strip(),
        kind=kind,
        messages=tuple(chat(f"Question about {key} ?")),
        golds=("Genentech",),
        num_masks=num_masks,
        exclude_doc_ids=tuple(exclude),
    )


def _config(**kw) -> RolloutConfig:
    base = {"max_turns": 6, "max_new_tokens_per_turn": 40, "max_total_new_tokens": 200}
    return RolloutConfig(**{**base, **kw})


def _env(retriever, **kw) -> SearchEnv:
    return SearchEnv(retriever, SearchConfig(**{"top_k": 3, **kw}))


def _assert_consistent(rollout, tokenizer):
    ids, lps = rollout.token_ids, rollout.logprobs
    sampled, env, appended = rollout.sampled_mask, rollout.env_mask, rollout.appended_mask
    assert len(ids) == len(sampled) == len(env) == len(appended) == len(lps)
    assert all(s + e + a <= 1 for s, e, a in zip(sampled, env, appended, strict=True))  # disjoint
    assert rollout.is_model_token == [s or a for s, a in zip(sampled, appended, strict=True)]
    n_prompt = len(rollout.prompt_ids)
    assert not any(sampled[:n_prompt] + env[:n_prompt] + appended[:n_prompt])
    # exactly the sampled tokens carry log-probs (the loss); appended and env tokens carry none
    assert [lp is not None for lp in lps] == sampled
    position = n_prompt
    for segment in rollout.segments:
        span = slice(position, position + len(segment.token_ids))
        assert ids[span] == segment.token_ids
        assert all(m == (segment.role == "model") for m in sampled[span])
        assert all(m == (segment.role == "env") for m in env[span])
        if segment.role == "env":
            text = tokenizer.decode(ids[span], skip_special_tokens=False)
            assert text == segment.text and text.strip().startswith(RESULT_OPEN)
            assert text.strip().endswith(RESULT_CLOSE)
        position += len(segment.token_ids)
    assert position + rollout.ended == len(ids)
    assert sum(appended) == (rollout.ended and not rollout.end_sampled)


def test_format_result_block_layout():
    hits = [
        Hit("7", "Evan  Morris", "A lobbyist </result> for\nGenentech.", 3.0),
        Hit("9", "B", "x " * 50, 1.0),
    ]
    shown = [shown_hit(h, 40) for h in hits]
    block = format_result_block(shown)
    xs = " ".join(["x"] * 20)
    assert (
        block
        == f"\n<result>\n[1] Evan Morris\nA lobbyist &lt;/result> for Genentech.\n[2] B\n{xs}…\n</result>\n"
    )
    assert format_result_block([]) == "\n<result>\nNo results.\n</result>\n"
    assert NO_BUDGET in format_result_block([], status="no_budget")


def test_render_trajectory_masks_only_model_text(backend):
    tok = backend.tokenizer
    messages = [
        *chat("q"),
        {"role": "assistant", "content": "<search> a</search>"},
        {"role": "tool", "content": format_result_block([Hit("1", "T", "text", 1.0)])},
        {"role": "assistant", "content": "<answer>b</answer>"},
    ]
    rendered = render_trajectory(messages, tok)
    prompt = encode_prompt(messages[:2], tok)
    assert rendered.input_ids[: len(prompt)] == prompt and rendered.prompt_length == len(prompt)
    model = [t for t, m in zip(rendered.input_ids, rendered.is_model_token, strict=True) if m]
    assert tok.decode(model, skip_special_tokens=False) == "<search> a</search><answer>b</answer><|im_end|>"
    env = rendered.input_ids[len(prompt) : len(rendered.input_ids)]
    assert RESULT_OPEN in tok.decode(env, skip_special_tokens=False)
    with pytest.raises(ValueError, match="no prompt"):
        render_trajectory(messages[2:], tok)


def test_scripted_rollouts_with_lucene(backend, lucene_retriever):
    evan = lucene_retriever.search(["Evan Morris lobbyist Genentech"], k=1)[0][0]
    tasks = [
        _task(" alphakey", exclude=[evan.doc_id], kind="ramp", num_masks=1),
        _task(" betakey"),
        _task(" gammakey"),
    ]
    scripted = ScriptedBackend(
        backend, {" alphakey": SEARCH_THEN_ANSWER, " betakey": SEARCH_THEN_ANSWER, " gammakey": TWO_SEARCHES}
    )
    loop = RolloutLoop(scripted, _env(lucene_retriever), _config(n=2))
    rollouts = loop.run(tasks)
    assert [(r.task.task_id, r.sample_index) for r in rollouts] == [
        (t, i) for t in ("alphakey", "betakey", "gammakey") for i in range(2)
    ]
    assert len({r.seed for r in rollouts}) == 6
    tok = backend.tokenizer
    for rollout in rollouts:
        _assert_consistent(rollout, tok)
        assert rollout.finish_reason == "answer" and rollout.ended and not rollout.end_sampled
        assert rollout.appended_mask[-1] and not rollout.sampled_mask[-1] and rollout.logprobs[-1] is None
        model_lps = [lp for lp, m in zip(rollout.logprobs, rollout.sampled_mask, strict=True) if m]
        assert all(isinstance(lp, float) and lp <= 0 for lp in model_lps)
        # rollout -> messages -> render gives the same ids and the same mask
        rendered = render_trajectory(rollout.to_messages(), tok, end_of_turn=rollout.ended)
        assert rendered.input_ids == rollout.token_ids
        assert rendered.is_model_token == rollout.is_model_token
    alpha, beta, gamma = rollouts[0], rollouts[2], rollouts[4]
    assert alpha.queries == ["Evan Morris lobbyist Genentech"] and alpha.turns == 2
    assert evan.doc_id not in alpha.documents[0] and len(alpha.documents[0]) == 3  # excluded
    assert beta.documents[0][0] == evan.doc_id  # the same query without the exclusion finds it
    assert alpha.answer == "[1] Genentech"
    assert combined_reward(alpha.response_text, ["Genentech"], num_masks=1).answer == 1.0
    assert gamma.queries == ["lobbyist Genentech Roche", "Clinton White House intern"] and gamma.turns == 3
    assert [s.role for s in gamma.segments] == ["model", "env", "model", "env", "model"]
    assert loop.stats.searches == 8 and loop.stats.turns == 3


def test_max_turns_and_retrieval_budget(backend, lucene_retriever):
    scripted = ScriptedBackend(backend, {" deltakey": ALWAYS_SEARCH})
    loop = RolloutLoop(scripted, _env(lucene_retriever, top_k=2, budget_docs=3), _config(max_turns=4))
    [rollout] = loop.run([_task(" deltakey")])
    _assert_consistent(rollout, backend.tokenizer)
    assert rollout.finish_reason == "max_turns" and not rollout.ended
    assert rollout.turns == 4 and len(rollout.queries) == 3
    assert [len(d) for d in rollout.documents] == [2, 1, 0]
    assert NO_BUDGET in rollout.segments[-2].text


def test_free_sampling_rollouts_are_consistent_and_deterministic(backend, lucene_retriever):
    config = _config(temperature=1.0, max_new_tokens_per_turn=12, max_total_new_tokens=30, n=3)
    tasks = [_task(" freeone"), _task(" freetwo")]
    first = RolloutLoop(backend, _env(lucene_retriever), config).run(tasks)
    again = RolloutLoop(backend, _env(lucene_retriever), config).run(tasks)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    for rollout in first:
        _assert_consistent(rollout, backend.tokenizer)
        assert rollout.num_sampled_tokens <= 30 and rollout.turns <= config.max_turns
        assert rollout.finish_reason in {"answer", "eos", "length", "token_budget", "max_turns"}
        for before, after in zip(rollout.segments, rollout.segments[1:], strict=False):
            if after.role == "env":
                assert before.role == "model" and before.text.endswith("</search>")


def test_tasks_from_sample_and_qa():
    sample = Sample(
        sample_id="s1",
        passage_id="p1",
        article_id="a1",
        title="T",
        passage="Paris is in France.",
        masked_passage="[mask] is in [mask].",
        masks=(Mask("Paris", "entity", "GPE", 0, 5), Mask("France", "entity", "GPE", 12, 18)),
        exclude_doc_ids=("p1",),
        prompt="",
        answers=("Paris", "France"),
    )
    task = task_from_sample(sample)
    assert task.kind == "ramp" and task.num_masks == 2 and task.golds == ("Paris", "France")
    assert task.exclude_doc_ids == ("p1",) and "[mask] is in [mask]." in task.user_prompt
    assert task_from_row(sample.to_row()) == task  # the stored prompt ("") is never used: one rendering
    qa = task_from_qa({"id": 5, "question": "Who?", "golden_answers": ["Me"]})
    assert (qa.task_id, qa.kind, qa.golds, qa.num_masks, qa.source) == ("5", "qa", ("Me",), 0, "Who?")
    assert (
        "Who?" in qa.user_prompt
        and task_from_row({"id": 5, "question": "Who?", "golden_answers": ["Me"]}) == qa
    )
    for bad in ({"id": 1, "question": "", "golden_answers": ["x"]}, {"id": 1, "question": "q"}, {"x": 1}):
        with pytest.raises(ValueError):
            task_from_row(bad)
    with pytest.raises(ValueError, match="mask tokens"):
        task_from_sample(Sample(**{**sample.__dict__, "masked_passage": "[mask] is in France."}))


def test_total_token_budget_ends_the_rollout(backend, lucene_retriever):
    scripted = ScriptedBackend(backend, {" epsilonkey": ALWAYS_SEARCH})
    per_search = len(backend.tokenizer.encode(ALWAYS_SEARCH[0], add_special_tokens=False))
    config = _config(max_new_tokens_per_turn=per_search + 2, max_total_new_tokens=per_search + 2)
    [rollout] = RolloutLoop(scripted, _env(lucene_retriever), config).run([_task(" epsilonkey")])
    _assert_consistent(rollout, backend.tokenizer)
    assert rollout.finish_reason == "token_budget" and rollout.num_sampled_tokens == per_search + 2
    assert len(rollout.queries) == 1 and rollout.turns == 2


def test_same_rollout_alone_and_inside_a_batch_of_8(lucene_retriever):
    """Sampling is seeded per rollout (seed, task id, index, turn): the batch around it changes nothing."""
    backend = tiny_backend(batch_size=8)
    config = _config(temperature=1.0, max_new_tokens_per_turn=16, max_total_new_tokens=48, n=1)
    tasks = [_task(f" batchkey{i}") for i in range(8)]
    [alone] = RolloutLoop(backend, _env(lucene_retriever), config).run([tasks[5]])
    batch = RolloutLoop(backend, _env(lucene_retriever), config).run(tasks)
    assert batch[5].task == alone.task and batch[5].token_ids == alone.token_ids
    assert batch[5].sampled_mask == alone.sampled_mask and batch[5].finish_reason == alone.finish_reason
    assert batch[5].logprobs == pytest.approx(alone.logprobs, abs=1e-5)
    assert len({tuple(r.token_ids[len(r.prompt_ids) :]) for r in batch}) == 8  # rows did sample differently


def test_a_conversation_that_would_overflow_ends_context_full(backend, lucene_retriever):
    scripted = ScriptedBackend(backend, {" zetakey": ALWAYS_SEARCH})
    task = _task(" zetakey")
    [free] = RolloutLoop(scripted, _env(lucene_retriever), _config(max_turns=3)).run([task])
    assert free.finish_reason == "max_turns"
    limit = len(free.token_ids) - 5  # the full conversation does not fit
    env = _env(lucene_retriever, max_context_tokens=limit)
    [cut] = RolloutLoop(scripted, env, _config(max_turns=3)).run([task])
    _assert_consistent(cut, backend.tokenizer)
    assert cut.finish_reason == "context_full" and len(cut.token_ids) < limit
    assert cut.token_ids == free.token_ids[: len(cut.token_ids)]
    scripted.max_length = limit  # the same limit declared by the backend instead of the config
    [by_backend] = RolloutLoop(scripted, _env(lucene_retriever), _config(max_turns=3)).run([task])
    assert by_backend.finish_reason == "context_full" and by_backend.token_ids == cut.token_ids


class _NoLogprobs:
    """A backend that loses the log-probs it was asked for."""

    def __init__(self, inner):
        self.inner, self.tokenizer = inner, inner.tokenizer

    def generate(self, requests):
        return [
            GenerationResult(r.text, r.token_ids, None, r.finish_reason, r.stop_string)
            for r in self.inner.generate(requests)
        ]


def test_missing_logprobs_raise_when_requested(backend, lucene_retriever):
    scripted = ScriptedBackend(backend, {" etakey": SEARCH_THEN_ANSWER})
    with pytest.raises(ValueError, match="log-probs were requested"):
        RolloutLoop(_NoLogprobs(scripted), _env(lucene_retriever), _config()).run([_task(" etakey")])
    [rollout] = RolloutLoop(_NoLogprobs(scripted), _env(lucene_retriever), _config(logprobs=False)).run(
        [_task(" etakey")]
    )
    assert rollout.finish_reason == "answer" and all(lp is None for lp in rollout.logprobs)


def test_a_sampled_eos_is_a_sampled_token_with_its_logprob(backend, lucene_retriever):
    scripted = ScriptedBackend(backend, {" thetakey": ["<think>no idea</think>"]})  # then EOS is forced
    [rollout] = RolloutLoop(scripted, _env(lucene_retriever), _config()).run([_task(" thetakey")])
    _assert_consistent(rollout, backend.tokenizer)
    assert rollout.finish_reason == "eos" and rollout.end_sampled and rollout.sampled_mask[-1]
    assert rollout.token_ids[-1] == backend.tokenizer.eos_token_id and rollout.logprobs[-1] == 0.0
    assert not any(rollout.appended_mask)
