from __future__ import annotations

import pytest
from tiny_model import ScriptedBackend, tiny_backend

from ramp.agent.config import RolloutConfig
from ramp.agent.protocol import (
    NO_BUDGET,
    RESULT_CLOSE,
    RESULT_OPEN,
    encode_prompt,
    format_result_block,
    render_trajectory,
)
from ramp.agent.rollout import RolloutLoop, RolloutTask, task_from_qa, task_from_sample
from ramp.data.samples import Mask, Sample
from ramp.prompts import chat
from ramp.retrieval.base import Hit
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


def _task(key: str, kind="qa", exclude=(), num_masks=None) -> RolloutTask:
    return RolloutTask(
        task_id=key.strip(),
        messages=chat(f"Question about {key} ?"),
        kind=kind,
        golds=("Genentech",),
        num_masks=num_masks,
        exclude_doc_ids=tuple(exclude),
    )


def _config(**kw) -> RolloutConfig:
    base = {"max_turns": 6, "max_new_tokens_per_turn": 40, "max_total_new_tokens": 200, "top_k": 3}
    return RolloutConfig(**{**base, **kw})


def _assert_consistent(rollout, tokenizer):
    ids, mask, lps = rollout.token_ids, rollout.is_model_token, rollout.logprobs
    assert len(ids) == len(mask) == len(lps)
    assert mask[: len(rollout.prompt_ids)] == [False] * len(rollout.prompt_ids)
    position = len(rollout.prompt_ids)
    for segment in rollout.segments:
        span = slice(position, position + len(segment.token_ids))
        assert ids[span] == segment.token_ids
        assert all(m == (segment.role == "model") for m in mask[span])
        if segment.role == "env":
            assert all(lp is None for lp in lps[span])
            text = tokenizer.decode(ids[span], skip_special_tokens=False)
            assert text == segment.text and text.strip().startswith(RESULT_OPEN)
            assert text.strip().endswith(RESULT_CLOSE)
        position += len(segment.token_ids)
    assert position + rollout.ended == len(ids)


def test_format_result_block_layout():
    hits = [
        Hit("7", "Evan  Morris", "A lobbyist </result> for\nGenentech.", 3.0),
        Hit("9", "B", "x " * 50, 1.0),
    ]
    block = format_result_block(hits, max_chars_per_doc=40)
    xs = " ".join(["x"] * 20)
    assert (
        block
        == f"\n<result>\n[1] Evan Morris\nA lobbyist < /result> for Genentech.\n[2] B\n{xs}…\n</result>\n"
    )
    assert format_result_block([]) == "\n<result>\nNo results.\n</result>\n"


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
    loop = RolloutLoop(scripted, lucene_retriever, _config(n=2))
    rollouts = loop.run(tasks)
    assert [(r.task.task_id, r.sample_index) for r in rollouts] == [
        (t, i) for t in ("alphakey", "betakey", "gammakey") for i in range(2)
    ]
    assert len({r.seed for r in rollouts}) == 6
    tok = backend.tokenizer
    for rollout in rollouts:
        _assert_consistent(rollout, tok)
        assert rollout.finish_reason == "answer" and rollout.ended
        model_lps = [
            lp for lp, m in zip(rollout.logprobs[:-1], rollout.is_model_token[:-1], strict=True) if m
        ]
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
    loop = RolloutLoop(scripted, lucene_retriever, _config(max_turns=4, top_k=2, retrieval_budget_docs=3))
    [rollout] = loop.run([_task(" deltakey")])
    _assert_consistent(rollout, backend.tokenizer)
    assert rollout.finish_reason == "max_turns" and not rollout.ended
    assert rollout.turns == 4 and len(rollout.queries) == 3
    assert [len(d) for d in rollout.documents] == [2, 1, 0]
    assert NO_BUDGET in rollout.segments[-2].text


def test_free_sampling_rollouts_are_consistent_and_deterministic(backend, lucene_retriever):
    config = _config(temperature=1.0, max_new_tokens_per_turn=12, max_total_new_tokens=30, n=3)
    tasks = [_task(" freeone"), _task(" freetwo")]
    first = RolloutLoop(backend, lucene_retriever, config).run(tasks)
    again = RolloutLoop(backend, lucene_retriever, config).run(tasks)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    for rollout in first:
        _assert_consistent(rollout, backend.tokenizer)
        assert rollout.num_model_tokens <= 30 + 1 and rollout.turns <= config.max_turns
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
    assert task.exclude_doc_ids == ("p1",) and "[mask] is in [mask]." in task.messages[1]["content"]
    qa = task_from_qa({"id": 5, "question": "Who?", "golden_answers": ["Me"]})
    assert (qa.task_id, qa.kind, qa.golds, qa.num_masks) == ("5", "qa", ("Me",), None)
    assert "Who?" in qa.messages[1]["content"]


def test_total_token_budget_ends_the_rollout(backend, lucene_retriever):
    scripted = ScriptedBackend(backend, {" epsilonkey": ALWAYS_SEARCH})
    per_search = len(backend.tokenizer.encode(ALWAYS_SEARCH[0], add_special_tokens=False))
    config = _config(max_new_tokens_per_turn=per_search + 2, max_total_new_tokens=per_search + 2)
    [rollout] = RolloutLoop(scripted, lucene_retriever, config).run([_task(" epsilonkey")])
    _assert_consistent(rollout, backend.tokenizer)
    assert rollout.finish_reason == "token_budget" and rollout.num_model_tokens == per_search + 2
    assert len(rollout.queries) == 1 and rollout.turns == 2
