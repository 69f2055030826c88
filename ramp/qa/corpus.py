"""The distractor-setting corpus: the context paragraphs of a QA file as a passages corpus.

HotpotQA and 2WikiMultiHopQA give each question ``context = [[title, [sentence, ...]], ...]`` (its
supporting paragraphs among distractors); MuSiQue gives ``paragraphs = [{title, paragraph_text}]``.
Every paragraph becomes a passage (:data:`ramp.data.passages.PASSAGE_SCHEMA`), deduplicated by title
and text; the passages of one title are numbered in order of first appearance (``<title>#<n>``), so
retrieved ids name the article. ``ramp index build --corpus DIR`` indexes the result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ramp.data.passages import PASSAGE_SCHEMA, Passage, passage_id
from ramp.qa.loaders import QADataError, dataset_spec, iter_json_records

CORPUS_DATASETS = ("hotpotqa", "2wikimultihopqa", "musique")
STATS_NAME = "corpus-stats.json"


def iter_paragraphs(dataset: str, path: str | Path) -> Iterator[tuple[str, str, str]]:
    """``(where, title, text)`` for every context paragraph of every question, in file order."""
    dataset_spec(dataset)  # an unknown name lists the known ones
    if dataset not in CORPUS_DATASETS:
        raise QADataError(
            f"{dataset!r} has no context paragraphs; corpus datasets: {', '.join(CORPUS_DATASETS)}"
        )
    for where, obj in iter_json_records(Path(path)):
        if dataset == "musique":
            yield from _musique_paragraphs(obj, where)
        else:
            yield from _context_paragraphs(obj, where)


def _context_paragraphs(obj: Any, where: str) -> Iterator[tuple[str, str, str]]:
    context = obj.get("context") if isinstance(obj, dict) else None
    if not isinstance(context, list):
        raise QADataError(f"{where}: field 'context': expected a list of [title, sentences]")
    for entry in context:
        ok = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
        if not ok or not isinstance(entry[1], list) or not all(isinstance(s, str) for s in entry[1]):
            raise QADataError(f"{where}: field 'context': expected [title, [sentence, ...]] entries")
        yield where, entry[0], "".join(entry[1])


def _musique_paragraphs(obj: Any, where: str) -> Iterator[tuple[str, str, str]]:
    paragraphs = obj.get("paragraphs") if isinstance(obj, dict) else None
    if not isinstance(paragraphs, list):
        raise QADataError(f"{where}: field 'paragraphs': expected a list of objects")
    for p in paragraphs:
        if not isinstance(p, dict) or not isinstance(p.get("title"), str):
            raise QADataError(f"{where}: field 'paragraphs': every paragraph needs a string 'title'")
        if not isinstance(p.get("paragraph_text"), str):
            raise QADataError(f"{where}: field 'paragraphs': every paragraph needs 'paragraph_text'")
        yield where, p["title"], p["paragraph_text"]


def corpus_passages(dataset: str, path: str | Path) -> tuple[list[Passage], dict[str, int]]:
    """Deduplicated passages and the accounting ``paragraphs = passages + duplicates (+ empty)``."""
    passages: list[Passage] = []
    seen: set[tuple[str, str]] = set()
    per_title: dict[str, int] = {}
    paragraphs = duplicates = empty = 0
    for _, title, raw_text in iter_paragraphs(dataset, path):
        paragraphs += 1
        title, text = " ".join(title.split()), " ".join(raw_text.split())
        if not title or not text:
            empty += 1
            continue
        if (title, text) in seen:
            duplicates += 1
            continue
        seen.add((title, text))
        index = per_title.get(title, 0)
        per_title[title] = index + 1
        passages.append(Passage(passage_id(title, index), title, title, text, index))
    stats = {"paragraphs": paragraphs, "passages": len(passages), "duplicates": duplicates, "empty": empty}
    return passages, stats


def build_corpus(dataset: str, path: str | Path, output: str | Path) -> dict[str, int]:
    """Write ``output/passages-00000.parquet`` and ``output/corpus-stats.json``; returns the stats."""
    passages, stats = corpus_passages(dataset, path)
    if not passages:
        raise QADataError(f"{path}: no context paragraphs")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([p.to_row() for p in passages], schema=PASSAGE_SCHEMA)
    pq.write_table(table, out / "passages-00000.parquet", compression="zstd")
    (out / STATS_NAME).write_text(
        json.dumps({"dataset": dataset, **stats}, indent=2) + "\n", encoding="utf-8"
    )
    return stats
