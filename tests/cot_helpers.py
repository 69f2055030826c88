"""Real RAMP samples from the bundled wiki-18 passages, for the CoT builder tests.

Spans are years and capitalised names; a span is kept only when it is answerable the way the data
pipeline's answerability stage defines it: a top-5 hit for the masked passage (the passage itself
excluded) contains it. Each sample excludes its own passage from search.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ramp.data.samples import SAMPLE_SCHEMA, Mask, Sample, mask_text
from ramp.prompts import ramp_user_prompt
from ramp.retrieval.base import Retriever

DATA = Path(__file__).resolve().parent.parent / "data" / "wiki18-sample-1000.jsonl"
_SPAN = re.compile(r"\b(?:1[5-9]\d\d|20[0-2]\d)\b|\b[A-Z][a-z]+(?: [A-Z][a-z]+)+\b")


def wiki18_rows(limit: int) -> list[dict[str, str]]:
    with open(DATA, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(limit), f, strict=False)]


def make_sample(row: dict[str, str], spans: list[tuple[int, int]]) -> Sample:
    title, _, text = row["contents"].partition("\n")
    masked = mask_text(text, spans)
    answers = tuple(text[a:b] for a, b in spans)
    return Sample(
        sample_id=f"wiki18-{row['id']}",
        passage_id=row["id"],
        article_id=title.strip('"'),
        title=title.strip('"'),
        passage=text,
        masked_passage=masked,
        masks=tuple(
            Mask(text=t, type="entity", label="X", char_start=a, char_end=b)
            for t, (a, b) in zip(answers, spans, strict=True)
        ),
        exclude_doc_ids=(row["id"],),
        prompt=ramp_user_prompt(masked, len(spans)),
        answers=answers,
    )


def answerable_samples(retriever: Retriever, limit: int, max_masks: int = 1) -> list[Sample]:
    """Samples from the first ``limit`` passages with up to ``max_masks`` answerable spans each."""
    samples = []
    for row in wiki18_rows(limit):
        text = row["contents"].partition("\n")[2]
        candidates = [m.span() for m in _SPAN.finditer(text)][:4]
        queries = [mask_text(text, [span]) for span in candidates]
        if not queries:
            continue
        hits = retriever.search(queries, k=5, exclude_doc_ids=[{row["id"]}] * len(queries))
        spans = [
            s
            for s, found in zip(candidates, hits, strict=True)
            if any(text[s[0] : s[1]] in h.text for h in found)
        ]
        if spans:
            samples.append(make_sample(row, spans[:max_masks]))
    return samples


def write_samples(samples: list[Sample], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([s.to_row() for s in samples], schema=SAMPLE_SCHEMA)
    pq.write_table(table, directory / "samples-00000-of-00001.parquet")
    return directory
