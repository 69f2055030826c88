"""The default reward cannot be gamed by padding a fill: hypothesis properties over random golds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ramp.rewards import RewardConfig, combined_reward, ramp_answer_score

DEFAULT = RewardConfig()
WORD = st.text(alphabet="bcdfghjklmnpqrstvwxz", min_size=2, max_size=7)  # no vowels: never a/an/the/yes/no


@st.composite
def gold_and_wrong(draw, max_gold=4):
    gold = draw(st.lists(WORD, min_size=1, max_size=max_gold, unique=True))
    wrong = draw(st.lists(WORD.filter(lambda w: w not in gold), min_size=1, max_size=12, unique=True))
    return gold, wrong


@settings(max_examples=200, deadline=None)
@given(gold_and_wrong(), st.data())
def test_padding_with_wrong_tokens_scores_strictly_less(case, data):
    gold, wrong = case
    exact = ramp_answer_score([" ".join(gold)], [[" ".join(gold)]], config=DEFAULT)
    assert exact == 1.0
    padded = list(gold)
    for word in data.draw(st.lists(st.sampled_from(wrong), min_size=1, max_size=8)):
        padded.insert(data.draw(st.integers(0, len(padded))), word)
    assert ramp_answer_score([" ".join(padded)], [[" ".join(gold)]], config=DEFAULT) < exact


@settings(max_examples=200, deadline=None)
@given(gold_and_wrong(max_gold=3), st.integers(2, 6), st.data())
def test_a_list_of_n_candidates_scores_about_one_over_n(case, n, data):
    gold, wrong = case
    candidates = [
        data.draw(st.lists(st.sampled_from(wrong), min_size=len(gold), max_size=len(gold)))
        for _ in range(n - 1)
    ]
    candidates.insert(data.draw(st.integers(0, n - 1)), gold)
    listed = ", ".join(" ".join(c) for c in candidates)
    assert ramp_answer_score([listed], [[" ".join(gold)]], config=DEFAULT) <= 1 / n + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    st.lists(WORD, min_size=1, max_size=4, unique=True),
    st.sampled_from(["the ", "a ", "An ", "THE "]),
    st.data(),
)
def test_honest_variants_keep_full_credit(gold, article, data):
    text = " ".join(gold)
    variant = data.draw(
        st.sampled_from([text.upper(), text.title(), f"{article}{text}", f"{text}.", f'"{text}",'])
    )
    assert ramp_answer_score([variant], [[text]], config=DEFAULT) == 1.0


def test_the_issue_examples_no_longer_pay():
    godwin = ramp_answer_score(
        ["Godwin William Mary Percy Shelley Byron"], [["William Godwin"]], config=DEFAULT
    )
    assert godwin == pytest.approx(1 / 3)  # three candidates of the gold's length
    spray = "the Chief of Protocol office, State Department protocol chief, ceremonies head"
    assert ramp_answer_score([spray], [["Chief of Protocol"]], config=DEFAULT) < 0.5
    assert ramp_answer_score(["The Chief of Protocol."], [["Chief of Protocol"]], config=DEFAULT) == 1.0
    # the same holds through the combined reward of a whole response, and for QA answers
    response = "<search>q</search>\n<result>\nx\n</result>\n<answer>\n[1] William Godwin Byron\n</answer>"
    assert combined_reward(response, ["William Godwin"], num_masks=1).answer == pytest.approx(2 / 3)
    assert combined_reward("<answer>Paris London</answer>", ["Paris"]).answer == pytest.approx(0.5)
    # the old guard stays available by name
    legacy = RewardConfig(guard="length_penalty")
    assert (
        ramp_answer_score(["Godwin William Mary Percy Shelley Byron"], [["William Godwin"]], config=legacy)
        == 1.0
    )
