"""What the RAMP-effect experiment measures: per-question outcomes of an evaluated arm, the copy rate of
RAMP first queries, and the no-search baselines.

Per held-out question (a row of ``ramp eval run``'s predictions and the question's world facts):

- ``first_query``: the first search's results hold the first-hop supporting passage (the question's
  entity was put into the query: the skill RAMP pretraining is meant to teach);
- ``both_hops``: the episode's searches retrieved both supporting passages;
- ``exact_match``, ``f1``, ``token_recall`` (the official answer metrics), ``bridge_em`` (EM, bridge
  questions only) and ``well_formed`` (the episode ended with an answer);
- each split by whether the first hop's entity is *held out* (never named by a RAMP training search).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ramp.metrics import exact_match, f1
from ramp.text import normalize

QUESTION_METRICS = (
    "first_query_accuracy",
    "both_hops_retrieved",
    "bridge_em",
    "exact_match",
    "f1",
    "token_recall",
    "well_formed",
)
SPLIT_METRICS = ("first_query_accuracy", "bridge_em")  # also reported for held-out / seen first hops


def question_outcomes(
    rows: Sequence[Mapping[str, Any]], facts: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One outcome per prediction row, in the rows' order. ``facts[id]``: ``supporting_ids`` (passage ids,
    first hop first), ``type`` and ``held_out`` (the first hop's entity is never a RAMP search target)."""
    out = []
    for row in rows:
        fact = facts[row["id"]]
        first_hop, second_hop = fact["supporting_ids"][:2]
        retrieved = [set(ids) for ids in row["retrieved_ids"]]
        bridge = fact["type"] == "bridge"
        out.append(
            {
                "id": row["id"],
                "type": fact["type"],
                "held_out": bool(fact["held_out"]),
                "first_query_accuracy": float(bool(retrieved) and first_hop in retrieved[0]),
                "both_hops_retrieved": float(
                    any(first_hop in r for r in retrieved) and any(second_hop in r for r in retrieved)
                ),
                "bridge_em": float(row["exact_match"]) if bridge else None,
                "exact_match": float(row["exact_match"]),
                "f1": float(row["f1"]),
                "token_recall": float(row["token_recall"]),
                "well_formed": float(row["finish_reason"] == "answer"),
                "searches": float(row["num_searches"]),
                "tokens": float(row["model_tokens"]),
            }
        )
    return out


def summarize_outcomes(outcomes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Means of every question metric (bridge EM over bridge questions), and the split ones by held-out."""
    summary = {metric: _mean(o[metric] for o in outcomes) for metric in QUESTION_METRICS}
    summary["searches_per_question"] = _mean(o["searches"] for o in outcomes)
    summary["tokens_per_question"] = _mean(o["tokens"] for o in outcomes)
    for metric in SPLIT_METRICS:
        summary[f"{metric}_held_out"] = _mean(o[metric] for o in outcomes if o["held_out"])
        summary[f"{metric}_seen"] = _mean(o[metric] for o in outcomes if not o["held_out"])
    summary["questions"] = float(len(outcomes))
    return summary


def metric_values(outcomes: Sequence[Mapping[str, Any]], metric: str) -> list[float]:
    """Per-question values of ``metric`` (questions where it is undefined, e.g. bridge EM of a comparison,
    left out), for paired differences."""
    return [float(o[metric]) for o in outcomes if o[metric] is not None]


def names_subject(query: str, subject: str) -> bool:
    """Does ``query`` name ``subject`` (the entity the oracle's query names), as whole words?"""
    return f" {normalize(subject, 'ramp')} " in f" {normalize(query, 'ramp')} "


def no_search_baselines(
    train: Sequence[Mapping[str, Any]], test: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, float]]:
    """Answers a policy can give without searching, fitted on the training questions and scored on the
    test questions: the most common training answer of each question kind (``majority``), and for
    comparisons the first-named company (``first_option``) with the majority answer elsewhere."""
    common = {
        kind: Counter(q["golden_answers"][0] for q in train if _kind(q) == kind).most_common(1)
        for kind in {_kind(q) for q in train}
    }

    def majority(question: Mapping[str, Any]) -> str:
        found = common.get(_kind(question))
        return found[0][0] if found else ""

    def first_option(question: Mapping[str, Any]) -> str:
        return question["entities"][0] if question["type"] == "comparison" else majority(question)

    return {
        name: _score(guess, test) for name, guess in (("majority", majority), ("first_option", first_option))
    }


def _score(guess: Any, questions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    em = [exact_match(guess(q), q["golden_answers"]) for q in questions]
    bridge = [e for e, q in zip(em, questions, strict=True) if q["type"] == "bridge"]
    return {
        "exact_match": _mean(em),
        "f1": _mean(f1(guess(q), q["golden_answers"]) for q in questions),
        "bridge_em": _mean(bridge),
    }


def _kind(question: Mapping[str, Any]) -> str:
    """A question's kind: its id without the entity number (``q-bridge-born``, ``q-compare-founded``)."""
    return str(question["id"]).rsplit("-", 1)[0]


def _mean(values: Iterable[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else float("nan")
