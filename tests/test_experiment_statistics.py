"""The experiment's statistics and measures: intervals, verdicts, per-question outcomes, baselines."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from ramp.experiment.measures import (
    names_subject,
    no_search_baselines,
    question_outcomes,
    summarize_outcomes,
)
from ramp.experiment.statistics import (
    Difference,
    bootstrap_interval,
    overall,
    paired_difference,
    t_interval,
    verdict,
)


def test_t_interval_matches_the_textbook() -> None:
    values = [0.3, 0.5, 0.4]
    low, high = t_interval(values)
    half = 4.302652729911275 * scipy_stats.tstd(values) / math.sqrt(3)  # t(0.975, 2)
    assert (low, high) == pytest.approx((0.4 - half, 0.4 + half))
    assert t_interval([0.2]) == (0.2, 0.2)


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    per_seed = [[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    first = bootstrap_interval(per_seed, seed=3)
    assert first == bootstrap_interval(per_seed, seed=3)
    assert first[0] < 7 / 12 < first[1]
    assert bootstrap_interval([[0.5, 0.5], [0.5]]) == (0.5, 0.5)  # no spread, no width


def test_paired_difference_is_per_seed_then_mean() -> None:
    diff = paired_difference({0: [1.0, 1.0], 1: [1.0, 0.0]}, {0: [0.0, 1.0], 1: [0.0, 0.0]})
    assert diff.per_seed == (0.5, 0.5) and diff.mean == 0.5
    assert diff.ci95 == (0.5, 0.5)  # identical seeds: a zero-width t interval
    with pytest.raises(ValueError):
        paired_difference({0: [1.0]}, {0: [1.0, 0.0]})  # not the same questions


def _diff(mean: float, low: float, high: float) -> Difference:
    return Difference(mean, (low, high), (low, high), (mean,))


def test_verdicts() -> None:
    big, bridge = _diff(0.4, 0.1, 0.7), _diff(0.1, 0.02, 0.2)
    assert verdict(big, bridge, gate_passed=True) == "shown"
    assert verdict(big, _diff(0.1, -0.1, 0.3), gate_passed=True) == "inconclusive"  # bridge EM not clear
    assert verdict(_diff(0.15, 0.1, 0.2), bridge, gate_passed=True) == "inconclusive"  # gain under +0.2
    flat = _diff(0.0, -0.05, 0.04)
    assert verdict(flat, flat, gate_passed=True) == "refuted"
    assert verdict(flat, flat, gate_passed=False) == "inconclusive"  # a failed gate is never "no effect"
    assert overall({"A-B": "shown", "A-C": "shown"}) == "shown"
    assert overall({"A-B": "shown", "A-C": "refuted"}) == "refuted"
    assert overall({"A-B": "shown", "A-C": "inconclusive"}) == "inconclusive"


def test_question_outcomes_and_their_summary() -> None:
    facts = {
        "q1": {"supporting_ids": ["company-1#0", "person-2#0"], "type": "bridge", "held_out": True},
        "q2": {"supporting_ids": ["company-3#0", "company-4#0"], "type": "comparison", "held_out": False},
    }
    rows = [
        {"id": "q1", "retrieved_ids": [["company-1#0"], ["person-2#0"]], "exact_match": 1.0, "f1": 1.0,
         "token_recall": 1.0, "finish_reason": "answer", "num_searches": 2, "model_tokens": 30},
        {"id": "q2", "retrieved_ids": [["company-4#0"]], "exact_match": 0.0, "f1": 0.0, "token_recall": 0.0,
         "finish_reason": "max_turns", "num_searches": 1, "model_tokens": 50},
    ]  # fmt: skip
    outcomes = question_outcomes(rows, facts)
    assert [o["first_query_accuracy"] for o in outcomes] == [1.0, 0.0]
    assert [o["both_hops_retrieved"] for o in outcomes] == [1.0, 0.0]
    assert outcomes[1]["bridge_em"] is None
    summary = summarize_outcomes(outcomes)
    assert summary["bridge_em"] == 1.0 and summary["exact_match"] == 0.5 and summary["well_formed"] == 0.5
    assert summary["first_query_accuracy_held_out"] == 1.0 and summary["first_query_accuracy_seen"] == 0.0
    assert summary["searches_per_question"] == 1.5 and summary["tokens_per_question"] == 40.0


def test_names_subject_needs_the_whole_name() -> None:
    assert names_subject(" Kraeth Boun born city", "Kraeth Boun")
    assert not names_subject(" Kraeth born city", "Kraeth Boun")
    assert not names_subject(" Kraethos headquarters", "Kraeth")


def test_no_search_baselines_are_fitted_on_training_questions() -> None:
    def q(kind: str, n: int, answer: str, entities: tuple[str, ...] = ("K",)) -> dict[str, object]:
        qtype = "comparison" if kind == "q-compare-founded" else "bridge"
        return {"id": f"{kind}-{n}", "golden_answers": [answer], "type": qtype, "entities": list(entities)}

    train = [
        q("q-bridge-country", 1, "Mirvand"),
        q("q-bridge-country", 2, "Mirvand"),
        q("q-bridge-country", 3, "Zol"),
    ]
    test = [
        q("q-bridge-country", 4, "Mirvand"),
        q("q-bridge-country", 5, "Zol"),
        q("q-compare-founded", 6, "Krel", ("Krel", "Zorb")),
    ]
    found = no_search_baselines(train, test)
    assert found["majority"]["exact_match"] == pytest.approx(1 / 3)
    assert found["first_option"]["exact_match"] == pytest.approx(2 / 3)
    assert found["majority"]["bridge_em"] == 0.5
