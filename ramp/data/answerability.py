"""Answerability: can each masked span be found with the search tool, without the source passage?

For every mask, the query is the sentence of the passage around it with *all* mask spans removed
(no ``[mask]`` token, no answer), searched with the sample's ``exclude_doc_ids``. The mask is
answerable when a top-k hit (title + text) contains the span after :func:`normalize_answer`;
``answer_rank`` is the 1-based rank of the first such hit. The keep policy then decides per sample.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

from ramp.data.samples import Sample
from ramp.retrieval.base import Hit, Retriever
from ramp.stats_table import balance_note, count_rows, table_row

KeepPolicy = Literal["all_answerable", "any_answerable", "record_only"]

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_SPACES = re.compile(r"\s+")
# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by whitespace and an upper-case
# letter, digit or opening quote -- unless the word before the stop is an initial or a common abbreviation.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[A-Z0-9\"'“‘(\[])")
_ABBREVIATION = re.compile(
    r"(?:\b[A-Z]|\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Mt|No|vs|etc|Inc|Ltd|Co|Gen|Col|Lt|Sgt))\.$"
)


def normalize_answer(text: str) -> str:
    """Lower-case, accents and punctuation folded to spaces, articles dropped, whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    chars = []
    for ch in decomposed:
        category = unicodedata.category(ch)
        if category == "Mn":
            continue
        chars.append(" " if category[0] in "PSZC" else ch)
    return _SPACES.sub(" ", _ARTICLES.sub(" ", "".join(chars))).strip()


def contains_answer(normalized_haystack: str, normalized_answer: str) -> bool:
    """Whole-token containment of two :func:`normalize_answer` outputs."""
    return bool(normalized_answer) and f" {normalized_answer} " in f" {normalized_haystack} "


def sentence_bounds(passage: str, start: int, end: int) -> tuple[int, int]:
    """``(first, last)`` character offsets of the sentence(s) of ``passage`` covering ``[start, end)``."""
    first, last = 0, len(passage)
    for match in _SENTENCE_END.finditer(passage):
        if _ABBREVIATION.search(passage[max(0, match.start() - 6) : match.start() + 1]):
            continue
        if match.end() <= start:
            first = match.end()
        elif match.start() >= end:
            last = match.start() + 1
            break
    return first, last


def mask_query(sample: Sample, index: int) -> str:
    """The search query for mask ``index``: its sentence with every mask span cut out."""
    mask = sample.masks[index]
    first, last = sentence_bounds(sample.passage, mask.char_start, mask.char_end)
    pieces, cursor = [], first
    for other in sorted(sample.masks, key=lambda m: m.char_start):
        if other.char_end <= first or other.char_start >= last:
            continue
        pieces.append(sample.passage[cursor : max(cursor, other.char_start)])
        cursor = max(cursor, other.char_end)
    pieces.append(sample.passage[cursor:last])
    return _SPACES.sub(" ", " ".join(pieces)).strip()


def mask_offsets_error(sample: Sample) -> str | None:
    """Why the masks' offsets do not fit the passage, or None when they do."""
    for i, mask in enumerate(sample.masks):
        if not 0 <= mask.char_start < mask.char_end <= len(sample.passage):
            return f"mask {i} offsets [{mask.char_start}, {mask.char_end}) outside the passage"
        if sample.passage[mask.char_start : mask.char_end] != mask.text:
            return f"mask {i} text {mask.text!r} does not match the passage at its offsets"
    return None


def answer_rank(hits: Sequence[Hit], answer: str) -> int | None:
    """1-based rank of the first hit containing ``answer`` (normalised), or None."""
    target = normalize_answer(answer)
    for rank, hit in enumerate(hits, start=1):
        if contains_answer(normalize_answer(f"{hit.title} {hit.text}"), target):
            return rank
    return None


def check_answerability(samples: Sequence[Sample], retriever: Retriever, k: int) -> list[Sample]:
    """``samples`` with ``answerable``/``answer_rank`` filled for every mask, in one batched search.

    Samples must have valid mask offsets (see :func:`mask_offsets_error`).
    """
    queries = [mask_query(s, i) for s in samples for i in range(len(s.masks))]
    excludes = [s.exclude_doc_ids for s in samples for _ in s.masks]
    results = iter(retriever.search(queries, k=k, exclude_doc_ids=excludes) if queries else [])
    checked = []
    for sample in samples:
        masks = []
        for mask in sample.masks:
            rank = answer_rank(next(results), mask.text)
            masks.append(replace(mask, answerable=rank is not None, answer_rank=rank))
        checked.append(replace(sample, masks=tuple(masks)))
    return checked


def keep_sample(sample: Sample, policy: KeepPolicy) -> bool:
    """Whether a checked sample passes ``policy`` (``record_only`` keeps everything)."""
    if policy == "record_only":
        return True
    flags = [bool(m.answerable) for m in sample.masks]
    return all(flags) if policy == "all_answerable" else any(flags)


def answerable_fraction_by_type(samples: Iterable[Sample]) -> dict[str, float]:
    """Fraction of checked masks that are answerable, per mask type (unchecked masks are skipped)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample in samples:
        for mask in sample.masks:
            if mask.answerable is not None:
                counts[mask.type][0] += int(mask.answerable)
                counts[mask.type][1] += 1
    return {kind: found / total for kind, (found, total) in sorted(counts.items())}


def unanswerable_detail(sample: Sample) -> str:
    found = sum(bool(m.answerable) for m in sample.masks)
    return f"{found}/{len(sample.masks)} masks answerable: " + ", ".join(
        f"{m.text!r}={'yes' if m.answerable else 'no'}" for m in sample.masks
    )


def format_answerability_stats(stats: dict[str, Any]) -> str:
    """A readable summary of the answerability job's ``stats.json``."""
    status = balance_note(stats["input_samples"], {"kept": stats["kept"], "rejected": stats["rejected"]})
    lines = [
        table_row("input samples", stats["input_samples"], status),
        table_row("kept", stats["kept"], f"(keep: {stats['keep']}, k={stats['k']})"),
        table_row("rejected", stats["rejected"]),
        *count_rows(stats["rejected_by_reason"]),
        "answerable masks by type (all checked samples)",
    ]
    for kind, fraction in stats["answerable_fraction_by_type"].items():
        checked = stats["masks_checked_by_type"][kind]
        lines.append(table_row(kind, fraction, f"of {checked}", spec=".1%", nested=True))
    return "\n".join(lines)
