"""The recipes' rewards (RewardConfig.kind) on hand-written responses: Search-R1's exact match, ReSearch's
F1 with its format reward, R1-Searcher's two stages and R1-Searcher++'s group reward for fewer searches."""

from __future__ import annotations

import pytest

from ramp.agent.rollout import Rollout, Segment
from ramp.agent.task import task_from_qa
from ramp.config import load_config
from ramp.retrieval.env import SearchEpisode, SearchOutcome
from ramp.rewards import (
    FewestSearchesConfig,
    RewardConfig,
    combined_reward,
    fewest_searches_bonus,
    research_format,
)
from ramp.rl.config import RLConfig
from ramp.rl.episodes import score_rollouts

RESULT = "\n<result>\n[1] Paris\nParis is the capital of France.\n</result>\n"
SEARCHED = f"<think>Look it up.</think><search>capital of France</search>{RESULT}<think>Found it.</think>"


def reward(kind: str, text: str, golds: list[str], num_masks: int | None = None):
    return combined_reward(text, golds, num_masks=num_masks, config=RewardConfig(kind=kind))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>The Beatles</answer>", 1.0),  # normalised (article dropped)
        ("<answer>Beatles band</answer>", 0.0),  # exact match, no partial credit
        ("I know this. <answer>Beatles</answer>", 1.0),  # no format term: untagged text costs nothing
        ("<answer>Stones</answer><answer>Beatles</answer>", 1.0),  # the last answer counts
        ("<think>no answer</think>", 0.0),
    ],
)
def test_exact_match_reward(text, expected):
    result = reward("exact_match", text, ["Beatles"])
    assert result.total == result.answer == expected


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        (f"{SEARCHED}<answer>Paris</answer>", 1.0),
        ("<think>sure</think><answer>Paris</answer>", 1.0),  # no search is fine
        ("Let me see. <think>sure</think> so <answer>Paris</answer>", 1.0),  # text outside blocks is fine
        ("<answer>Paris</answer>", 0.0),  # no think block
        ("<think>a</think><search>q</search><answer>Paris</answer>", 0.0),  # a search without its result
        (f"<think>a</think><search>q</search><search>r</search>{RESULT}<answer>Paris</answer>", 0.0),
        ("<think>a</think><answer>Paris</answer><answer>Lyon</answer>", 0.0),  # two answers
        ("<think>a<answer>Paris</answer>", 0.0),  # unclosed think
        ("<think>a</think><answer>Paris", 0.0),  # cut off before </answer> (over length)
    ],
)
def test_research_format_rule(text, fmt):
    assert research_format(text) == fmt


def test_research_reward_f1_or_point_one_when_well_formed():
    assert reward("research", f"{SEARCHED}<answer>Paris</answer>", ["Paris"]).total == 1.0
    partial = reward("research", f"{SEARCHED}<answer>Paris France</answer>", ["Paris"])
    assert partial.total == pytest.approx(2 / 3) and partial.format == 1.0  # F1: precision 1/2, recall 1
    wrong = reward("research", f"{SEARCHED}<answer>Lyon</answer>", ["Paris"])
    assert (wrong.answer, wrong.total) == (0.0, 0.1)  # F1 0, format right: 0.1
    broken = reward("research", "<answer>Paris</answer>", ["Paris"])
    assert (broken.answer, broken.format, broken.total) == (1.0, 0.0, 0.0)  # right answer, wrong format: 0
    # F1's yes/no rule: "no" against "yes" earns the format's 0.1, not partial credit
    assert reward("research", "<think>t</think><answer>no</answer>", ["yes"]).total == 0.1
    # a RAMP response: the mean F1 over its masks
    ramp = reward("research", f"{SEARCHED}<answer>\n[1] Paris\n[2] Spain\n</answer>", ["Paris", "France"], 2)
    assert ramp.total == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{SEARCHED}<answer>Paris</answer>", 1.0),  # searched (0.5) and well formed (0.5)
        (f"{SEARCHED}<answer>Rome</answer>", 1.0),  # the answer earns nothing in stage 1
        ("<think>sure</think><answer>Paris</answer>", 0.5),  # well formed, no search
        (f"{SEARCHED}<answer>Paris</answer> trailing", 0.5),  # searched, ill formed
        ("Paris", 0.0),
    ],
)
def test_r1_searcher_stage1_rewards_searching_and_format(text, expected):
    assert reward("r1_searcher_stage1", text, ["Paris"]).total == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{SEARCHED}<answer>Paris</answer>", 1.0),
        (f"{SEARCHED}<answer>Paris France</answer>", 2 / 3),
        (f"{SEARCHED}<answer>Rome</answer>", 0.0),
        (f"{SEARCHED}<answer>Paris</answer> trailing", 1.0 - 2.0),  # right answer, broken format: -2
        ("no tags at all", -2.0),
    ],
)
def test_r1_searcher_stage2_f1_minus_two_for_a_broken_format(text, expected):
    assert reward("r1_searcher_stage2", text, ["Paris"]).total == pytest.approx(expected)


def test_weighted_reward_is_unchanged_by_default():
    cfg = RewardConfig()
    assert cfg.kind == "weighted"
    good = combined_reward(f"{SEARCHED}<answer>Paris</answer>", ["Paris"], config=cfg)
    assert (good.answer, good.format, good.total) == (1.0, 1.0, 1.2)


def test_fewest_searches_bonus_hand_computed():
    """Group a: correct responses searched 1, 3 and 1 times (mean 5/3, variance 8/9: 2σ² = 16/9); the two
    with one search get min(16/9, cap). A wrong one that never searched gets nothing. Group b: every correct
    response searched twice (σ = 0): nothing. Group c: no correct response: nothing."""
    answers = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.4]
    searches = [1, 3, 1, 0, 2, 2, 1]
    groups = ["a", "a", "a", "a", "b", "b", "c"]
    uncapped = fewest_searches_bonus(answers, searches, groups, FewestSearchesConfig(enable=True))
    assert uncapped == pytest.approx([16 / 9, 0.0, 16 / 9, 0.0, 0.0, 0.0, 0.0])
    capped = fewest_searches_bonus(answers, searches, groups, FewestSearchesConfig(enable=True, cap=0.5))
    assert capped == pytest.approx([0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    # "correct" is a threshold on the answer score: at 0.4 response 6 joins group c alone (σ = 0)
    lenient = FewestSearchesConfig(enable=True, correct_at=0.4)
    assert fewest_searches_bonus(answers, searches, groups, lenient)[6] == 0.0
    with pytest.raises(ValueError, match="one entry per response"):
        fewest_searches_bonus(answers, searches[:2], groups, lenient)


def rollout(i: int, parts: list[tuple[str, str]], queries: list[str]) -> Rollout:
    task = task_from_qa({"id": "q", "question": "Capital of France?", "golden_answers": ["Paris"]})
    segments = [
        Segment(role, text, [5] * 3, [-1.0] * 3 if role == "model" else [None] * 3) for role, text in parts
    ]  # type: ignore[arg-type]
    results = [SearchOutcome(q, (), "ok") for q in queries]
    return Rollout(
        task, i, 0, [1, 2], SearchEpisode(frozenset(), None), segments, results, finish_reason="answer"
    )


def test_episode_scoring_adds_the_group_reward_per_prompt():
    """Four rollouts of one prompt: right after 1 search, right after 2, right after 1, wrong after 0. With
    R1-Searcher++'s group reward the two one-search right answers gain min(2σ², cap) = 4/9 (σ² = 2/9)."""
    searched = [("model", "<search>capital</search>"), ("env", RESULT)]
    rollouts = [
        rollout(0, [*searched, ("model", "<answer>Paris</answer>")], ["capital"]),
        rollout(1, [*searched, *searched, ("model", "<answer>Paris</answer>")], ["capital", "capital"]),
        rollout(2, [*searched, ("model", "<answer>Paris</answer>")], ["capital"]),
        rollout(3, [("model", "<answer>Rome</answer>")], []),
    ]
    sets = ["retriever.index=unused", "reward.kind=r1_searcher_stage2", "algorithm.overlong.enable=false"]
    plain = score_rollouts(rollouts, "0.0", load_config(RLConfig, "configs/rl.yaml", sets))
    assert [e.total for e in plain] == [1.0, 1.0, 1.0, 0.0]
    bonus = [*sets, "reward.fewest_searches.enable=true", "reward.fewest_searches.cap=1.0"]
    shaped = score_rollouts(rollouts, "0.0", load_config(RLConfig, "configs/rl.yaml", bonus))
    assert [e.total for e in shaped] == pytest.approx([1 + 4 / 9, 1.0, 1 + 4 / 9, 0.0])
    assert [e.score for e in shaped] == [e.total for e in shaped] and len({e.group_id for e in shaped}) == 1
