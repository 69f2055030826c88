from __future__ import annotations

import pytest
from openai_server import Reply, ScriptedOpenAIServer

from ramp.agent.backends.openai import OpenAIBackend
from ramp.agent.config import OpenAIBackendConfig
from ramp.metrics import exact_match
from ramp.prompts import load_templates
from ramp.rewards import (
    JudgeItem,
    LLMJudge,
    RewardConfig,
    combined_reward,
    format_reward,
    guard_factor,
    parse_verdict,
    qa_reward,
    ramp_answer_score,
)

GOOD = (
    "<think>find it</think><search>eiffel tower city</search>"
    "\n<result>\n[1] Eiffel Tower\nin Paris\n</result>\n"
    "<answer>\n[1] Paris\n[2] France\n</answer>"
)
NO_GUARD = RewardConfig(guard="none")


def test_ramp_answer_score_averages_masks():
    assert ramp_answer_score(["Paris", "France"], ["Paris", "France"]) == 1.0
    assert ramp_answer_score(["Paris", "Spain"], ["Paris", "France"]) == 0.5
    # recall per mask: 1/2 and 1 -> mean 0.75; accepted alternatives per mask
    assert ramp_answer_score(["New", "UK"], ["New York", ["United Kingdom", "UK"]]) == pytest.approx(0.75)
    assert ramp_answer_score(["Paris"], ["Paris", "France"]) == 0.5  # a missing fill scores 0
    assert ramp_answer_score(["Paris", "x"], ["Paris", "France"], metric="exact_match") == 0.5
    assert ramp_answer_score([], []) == 0.0


def test_reward_hacking_guard():
    gold = ["Paris"]
    spam = "Paris London Rome Berlin Madrid Vienna Oslo"
    assert ramp_answer_score([spam], gold, config=NO_GUARD) == 1.0  # raw recall is fooled
    # length penalty: allowed = 2 * 1 + 2 = 4 tokens, 7 given -> 4/7
    length = RewardConfig(guard="length_penalty")
    assert ramp_answer_score([spam], gold, config=length) == pytest.approx(4 / 7)
    assert ramp_answer_score(["the city of Paris"], gold, config=length) == 1.0  # short answers pass
    floor = RewardConfig(guard="precision_floor", precision_floor=0.3)
    assert ramp_answer_score([spam], gold, config=floor) == 0.0  # precision 1/7 < 0.3
    assert ramp_answer_score(["Paris France"], gold, config=floor) == 1.0  # precision 0.5
    assert guard_factor("", gold, length) == 1.0
    assert qa_reward(spam, gold, metric="token_recall", config=length) == pytest.approx(4 / 7)


@pytest.mark.parametrize(
    ("fill", "gold"),
    [
        ("1990-1995", "1990–1995"),  # ASCII hyphen vs en dash
        ("1990—1995", "1990-1995"),  # em dash vs hyphen
        ("Zurich", "Zürich"),
        ("José Martí", "Jose Marti"),
        ("O’Brien", "O'Brien"),  # curly vs straight apostrophe
        ("“Hey Jude”", '"Hey Jude"'),  # curly vs straight quotes
        ("«Le Monde»", "Le Monde"),
    ],
)
def test_ramp_reward_folds_unicode_while_squad_metrics_stay_official(fill, gold):
    for config in (None, RewardConfig(), NO_GUARD):  # the guard normalises like the metric
        for metric in ("token_recall", "exact_match", "f1"):
            assert ramp_answer_score([fill], [gold], metric, config) == 1.0
    response = f"<search>q</search>\n<result>\nx\n</result>\n<answer>\n[1] {fill}\n</answer>"
    assert combined_reward(response, [gold], num_masks=1).answer == 1.0
    # evaluation and the QA reward keep the official SQuAD/HotpotQA rule (no Unicode folding)
    assert exact_match(fill, gold) == 0.0
    assert exact_match(fill, gold, profile="squad") == 0.0
    assert qa_reward(fill, [gold]) == 0.0
    assert combined_reward(f"<answer>{fill}</answer>", [gold]).answer == 0.0


def test_ramp_reward_still_separates_different_answers():
    assert ramp_answer_score(["1990-1996"], ["1990–1995"]) == 0.0
    assert ramp_answer_score(["Zurich Basel"], ["Zürich"], config=RewardConfig()) == pytest.approx(0.5)
    assert exact_match("The Eiffel-Tower!", "eiffeltower") == 1.0  # squad punctuation rule unchanged


def test_qa_reward():
    assert qa_reward("The Beatles", ["Beatles"]) == 1.0
    assert qa_reward(None, ["Beatles"]) == 0.0
    assert qa_reward("no", ["yes"], metric="f1") == 0.0


@pytest.mark.parametrize(
    ("text", "num_masks", "expected"),
    [
        (GOOD, 2, 1.0),
        (GOOD, 3, 0.0),  # wrong number of lines
        (GOOD, None, 1.0),
        ("<answer>Paris</answer>", None, 1.0),  # no search is fine
        ("<answer>\n[2] France\n[1] Paris\n</answer>", 2, 0.0),  # out of order
        ("<answer>Paris</answer><answer>Lyon</answer>", None, 0.0),  # two answers
        ("<think>x</think>", None, 0.0),  # no answer
        ("<answer>Paris</answer> and more", None, 0.0),  # trailing text
        ("intro <answer>Paris</answer>", None, 0.0),  # untagged text
        ("<think>x<answer>Paris</answer>", None, 0.0),  # unclosed think
        ("<search>q</search><answer>Paris</answer>", None, 0.0),  # search without its results
        ("<result>x</result><answer>Paris</answer>", None, 0.0),  # results without a search
        ("<search> </search>\n<result>\nx\n</result>\n<answer>P</answer>", None, 0.0),  # empty query
        ("<answer> </answer>", None, 0.0),  # empty answer
    ],
)
def test_format_reward(text, num_masks, expected):
    assert format_reward(text, num_masks) == expected


def test_format_reward_model_only_text():
    assert format_reward("<search>q</search><answer>P</answer>", with_results=False) == 1.0
    assert format_reward(GOOD, 2, with_results=False) == 0.0  # the model must not write results


def test_combined_reward_weights_and_format_gate():
    cfg = RewardConfig(answer_weight=1.0, format_weight=0.5)
    good = combined_reward(GOOD, ["Paris", "France"], num_masks=2, config=cfg)
    assert (good.answer, good.format, good.total) == (1.0, 1.0, 1.5)
    half = combined_reward(GOOD, ["Paris", "Spain"], num_masks=2, config=cfg)
    assert half.total == pytest.approx(0.5 + 0.5)
    broken = GOOD + " trailing"
    assert combined_reward(broken, ["Paris", "France"], num_masks=2, config=cfg).total == 0.0
    lenient = RewardConfig(require_format=False, format_weight=0.5)
    assert combined_reward(broken, ["Paris", "France"], num_masks=2, config=lenient).total == 1.0
    qa = combined_reward("<answer>the Beatles</answer>", [["Beatles", "The Beatles"]], config=cfg)
    assert qa.answer == 1.0


def test_parse_verdict():
    assert parse_verdict("The answer names the same city.\nVerdict: correct") is True
    assert parse_verdict("Verdict: correct?\nOn reflection...\nVerdict: **incorrect**") is False
    assert parse_verdict("Incorrect.") is False
    assert parse_verdict("I cannot decide") is None
    assert parse_verdict("") is None


def test_llm_judge_over_http():
    def responder(path, body):
        prompt = body["messages"][0]["content"]
        if "Predicted answer: Paris" in prompt:
            return "Same city.\nVerdict: correct"
        if "Predicted answer: ???" in prompt:
            return Reply("hmm")
        return "Different.\nVerdict: incorrect"

    with ScriptedOpenAIServer(responder) as server:
        backend = OpenAIBackend(OpenAIBackendConfig(base_url=server.base_url, model="judge", backoff_s=0))
        judge = LLMJudge(backend, load_templates().judge)
        verdicts = judge.judge(
            [
                JudgeItem("Capital of France?", ["Paris"], "Paris"),
                JudgeItem("Capital of France?", ["Paris"], "Lyon"),
                JudgeItem("Capital of France?", ["Paris"], "???"),
            ]
        )
        assert [v.score for v in verdicts] == [1.0, 0.0, 0.0]
        assert [v.parsed for v in verdicts] == [True, True, False]
        assert "Reference answer(s): Paris" in server.requests[0]["body"]["messages"][0]["content"]
        assert judge.ramp_score("passage", ["Paris", "Lyon"], ["Paris", "Lyon"]) == 0.5
        backend.close()
