"""Per-question result rows and their aggregates: per dataset, per question type, macro average.

EM and F1 are the official HotpotQA answer metrics (``hotpot_evaluate_v1.py``: SQuAD normalisation,
no partial F1 credit when either side is ``yes``/``no``/``noanswer`` and they differ), token recall is
MaskSearch's headline metric; all come from :mod:`ramp.metrics` (max over the gold answers). A missing
prediction scores as the empty string. Metric keys: ``{metric}/{dataset}``, ``{metric}/macro`` (the
mean of the dataset means), ``{metric}/{dataset}/{type}``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

import pyarrow as pa

from ramp.metrics import exact_match, f1, token_recall
from ramp.qa.loaders import QARecord

METRIC_NAMES = ("exact_match", "f1", "token_recall")
JUDGE = "judge"
MACRO = "macro"


@dataclass(frozen=True)
class PolicyAnswer:
    """What a policy did for one question (the agent loop's rollout or the built-in reader)."""

    prediction: str | None
    finish_reason: str
    turns: int
    queries: list[str] = field(default_factory=list)
    retrieved_ids: list[list[str]] = field(default_factory=list)  # doc ids per search
    model_tokens: int = 0


ROW_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),  # the question's index in its dataset
        pa.field("id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("golden_answers", pa.list_(pa.string()), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("prediction", pa.string(), nullable=False),
        pa.field("answered", pa.bool_(), nullable=False),  # the policy gave an answer at all
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("turns", pa.int32(), nullable=False),
        pa.field("num_searches", pa.int32(), nullable=False),
        pa.field("queries", pa.list_(pa.string()), nullable=False),
        pa.field("retrieved_ids", pa.list_(pa.list_(pa.string())), nullable=False),
        pa.field("model_tokens", pa.int32(), nullable=False),
        *(pa.field(name, pa.float64(), nullable=False) for name in METRIC_NAMES),
        pa.field(JUDGE, pa.float64(), nullable=True),  # the LLM judge's verdict (1/0), null when not judged
    ]
)


def score(prediction: str | None, golds: Sequence[str]) -> dict[str, float]:
    """EM, F1 and token recall of one prediction against its gold answers."""
    text = prediction or ""
    return {
        "exact_match": exact_match(text, golds),
        "f1": f1(text, golds),
        "token_recall": token_recall(text, golds),
    }


def result_row(dataset: str, position: int, record: QARecord, answer: PolicyAnswer) -> dict[str, Any]:
    """One Parquet row (:data:`ROW_SCHEMA`): the question, what the policy did, and every metric."""
    return {
        "dataset": dataset,
        "position": position,
        "id": record.id,
        "question": record.question,
        "golden_answers": list(record.golden_answers),
        "type": record.type,
        "prediction": answer.prediction or "",
        "answered": answer.prediction is not None,
        "finish_reason": answer.finish_reason,
        "turns": answer.turns,
        "num_searches": len(answer.queries),
        "queries": list(answer.queries),
        "retrieved_ids": [list(ids) for ids in answer.retrieved_ids],
        "model_tokens": answer.model_tokens,
        **score(answer.prediction, record.golden_answers),
        JUDGE: None,
    }


def summarize(rows: Iterable[Mapping[str, Any]], datasets: Sequence[str] | None = None) -> dict[str, float]:
    """Mean metrics per dataset, per (dataset, type) and macro over datasets (the judge's too when every
    row was judged); also question counts and mean searches (``questions/{dataset}``, ``searches/...``)."""
    by_dataset: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_dataset[row["dataset"]].append(row)
    names = [d for d in (datasets or sorted(by_dataset)) if by_dataset.get(d)]
    judged = all(r.get(JUDGE) is not None for group in by_dataset.values() for r in group)
    metrics = (*METRIC_NAMES, JUDGE) if judged and by_dataset else METRIC_NAMES
    out: dict[str, float] = {}
    for name in names:
        group = by_dataset[name]
        out[f"questions/{name}"] = float(len(group))
        out[f"searches/{name}"] = fmean(r["num_searches"] for r in group)
        for metric in metrics:
            out[f"{metric}/{name}"] = fmean(r[metric] for r in group)
        by_type: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for r in group:
            if r["type"]:
                by_type[r["type"]].append(r)
        for type_name, typed in sorted(by_type.items()):
            for metric in metrics:
                out[f"{metric}/{name}/{type_name}"] = fmean(r[metric] for r in typed)
    if names:
        for metric in metrics:
            out[f"{metric}/{MACRO}"] = fmean(out[f"{metric}/{n}"] for n in names)
    return out


def searches_curve(
    rows: Iterable[Mapping[str, Any]], metric: str = "token_recall"
) -> dict[int, tuple[float, int]]:
    """Number of searches -> (mean ``metric``, questions), over all rows."""
    groups: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        groups[int(row["num_searches"])].append(float(row[metric]))
    return {n: (fmean(values), len(values)) for n, values in sorted(groups.items())}


def comparison_table(
    runs: Sequence[tuple[str, Mapping[str, float], Sequence[str]]], metric: str
) -> tuple[list[str], list[list[str]]]:
    """Runs as rows, datasets as columns (in first-seen order), macro average last; values ×100 with
    one decimal, ``-`` where a run lacks a dataset. ``runs``: (name, metrics, its datasets)."""
    columns: list[str] = []
    for _, _, datasets in runs:
        columns += [d for d in datasets if d not in columns]
    header = ["run", *columns, MACRO]
    body = []
    for name, metrics, _ in runs:
        cells = [name]
        for column in [*columns, MACRO]:
            value = metrics.get(f"{metric}/{column}")
            cells.append("-" if value is None else f"{100 * value:.1f}")
        body.append(cells)
    return header, body


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
