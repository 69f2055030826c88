"""Answerability: can each masked span be found with the search tool, without the source passage?

The query for a span is its sentence (:func:`ramp.data.splitting.sentence_spans`, the one splitter)
with every mask removed (:func:`mask_query`, the one mask query; the built-in teacher uses it too),
searched with the sample's ``exclude_doc_ids``. A span is answerable when a top-k hit contains it *in
agreeing context*: a sentence of the hit holding the span (``ramp`` text profile, whole tokens), with the
hit's title, shares at least ``min_context_words`` content words (plural ``s`` cut) with the query beyond
the span itself (a hit whose title is the span may share them anywhere in its text). Bare containment
would mark "two" or "1990" answerable from unrelated hits. ``answer_rank`` (1-based) and
``answer_doc_id`` record the first agreeing hit.

With ``keep: redraw`` (the default) every *eligible* span of the sample is checked (one batched search),
then the k masks are drawn again among the answerable ones (:func:`ramp.data.masking.redraw_sample`),
so samples keep the k mix; the other policies check the sample's own masks and keep or reject it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

from ramp.data.samples import MASK_TOKEN, Mask, Sample, mask_text
from ramp.data.splitting import sentence_spans
from ramp.retrieval.base import Hit
from ramp.retrieval.env import SearchEnv
from ramp.stats_table import balance_note, count_rows, table_row
from ramp.text import Profile, contains, content_tokens, normalize_cached

KeepPolicy = Literal["redraw", "all_answerable", "any_answerable", "record_only"]
PROFILE: Profile = "ramp"  # the text profile of answerability (shared with the teacher and the reward)

_SPACES = re.compile(r"\s+")


def mask_query(masked_passage: str, index: int, max_words: int | None = None) -> str:
    """The sentence around mask ``index`` of ``masked_passage`` with every mask removed; with
    ``max_words``, cut to that many words around the mask (more on the side that has them)."""
    marker = "\x00"
    pieces = masked_passage.split(MASK_TOKEN)
    if not 0 <= index < len(pieces) - 1:
        raise IndexError(f"mask {index} of {len(pieces) - 1}")
    at = sum(len(p) + len(MASK_TOKEN) for p in pieces[: index + 1]) - len(MASK_TOKEN)
    first, last = next(
        ((a, b) for a, b in sentence_spans(masked_passage) if a <= at < b), (0, len(masked_passage))
    )
    sentence = masked_passage[first:at] + marker + masked_passage[at + len(MASK_TOKEN) : last]
    left, _, right = sentence.replace(MASK_TOKEN, " ").partition(marker)
    left_words, right_words = left.split(), right.split()
    if max_words is None:
        return " ".join(left_words + right_words)
    keep_right = min(len(right_words), max(max_words // 2, max_words - len(left_words)))
    keep_left = max_words - keep_right
    return " ".join(
        (left_words[len(left_words) - keep_left :] if keep_left else []) + right_words[:keep_right]
    )


def span_query(sample: Sample, mask: Mask) -> str:
    """The query for one span of ``sample`` (a mask or an eligible span): its sentence with ``mask`` and
    the sample's masks removed."""
    spans = {(m.char_start, m.char_end) for m in sample.masks if not _overlaps(m, mask)}
    spans.add((mask.char_start, mask.char_end))
    ordered = sorted(spans)
    return mask_query(mask_text(sample.passage, ordered), ordered.index((mask.char_start, mask.char_end)))


def _overlaps(a: Mask, b: Mask) -> bool:
    return a.char_start < b.char_end and b.char_start < a.char_end


def mask_offsets_error(sample: Sample) -> str | None:
    """Why the masks' offsets do not fit the passage, or None when they do."""
    for i, mask in enumerate(sample.masks):
        if not 0 <= mask.char_start < mask.char_end <= len(sample.passage):
            return f"mask {i} offsets [{mask.char_start}, {mask.char_end}) outside the passage"
        if sample.passage[mask.char_start : mask.char_end] != mask.text:
            return f"mask {i} text {mask.text!r} does not match the passage at its offsets"
    return None


def agreeing_hit(
    hits: Sequence[Hit], span: str, query: str, min_context_words: int
) -> tuple[int, str] | None:
    """``(rank, doc_id)`` of the first hit holding ``span`` in agreeing context with ``query``, or None."""
    target = normalize_cached(span, PROFILE)
    if not target:
        return None
    own = _stems(span)
    context = _stems(query) - own
    for rank, hit in enumerate(hits, start=1):
        if contains(normalize_cached(hit.title, PROFILE), target):
            regions = [hit.text]  # the document is about the span: its whole text is the context
        else:
            sentences = (hit.text[a:b] for a, b in sentence_spans(hit.text))
            regions = [r for r in sentences if contains(normalize_cached(r, PROFILE), target)]
        title = _stems(hit.title)
        if any(len(context & ((_stems(r) | title) - own)) >= min_context_words for r in regions):
            return rank, hit.doc_id
    return None


def _stems(text: str) -> set[str]:
    """Content words with a plural ``s`` cut (``founders`` meets ``founder``)."""
    return {
        t[:-1] if len(t) > 3 and t.endswith("s") and not t.endswith("ss") else t for t in content_tokens(text)
    }


def check_spans(
    sample: Sample, spans: Sequence[Mask], hits: Iterable[Sequence[Hit]], min_context_words: int
) -> list[Mask]:
    """``spans`` with ``answerable``/``answer_rank``/``answer_doc_id`` filled from their ``hits``."""
    checked = []
    for mask, found in zip(spans, hits, strict=True):
        agreeing = agreeing_hit(found, mask.text, span_query(sample, mask), min_context_words)
        rank, doc_id = agreeing if agreeing else (None, None)
        checked.append(replace(mask, answerable=agreeing is not None, answer_rank=rank, answer_doc_id=doc_id))
    return checked


def check_answerability(
    samples: Sequence[Sample],
    env: SearchEnv,
    min_context_words: int = 2,
    every_span: bool = False,
    hide_sentence_spans: bool = True,
) -> list[Sample]:
    """``samples`` with every mask checked (and, with ``every_span``, every eligible span), in one
    batched search of ``env`` (its ``top_k`` hits per span; each sample's ``exclude_doc_ids``).
    Samples must have valid mask offsets (see :func:`mask_offsets_error`).

    Checking every span before the draw, a span's query hides every eligible span of its sentence
    (``hide_sentence_spans``: the least context any draw can leave it, so it stays answerable whichever
    of its neighbours are masked too), or that span only (when masks never share a sentence).
    """
    targets = [list(s.spans) if every_span and s.spans else list(s.masks) for s in samples]
    contexts = [
        replace(s, masks=s.spans if hide_sentence_spans else ()) if every_span and s.spans else s
        for s in samples
    ]
    queries = [span_query(s, m) for s, spans in zip(contexts, targets, strict=True) for m in spans]
    episodes = [env.episode(s.exclude_doc_ids) for s in samples]  # one per sample: its exclusions
    episodes = [e for e, spans in zip(episodes, targets, strict=True) for _ in spans]
    results = [list(outcome.hits) for outcome in env.search(list(zip(episodes, queries, strict=True)))]
    checked, cursor = [], 0
    for sample, context, spans in zip(samples, contexts, targets, strict=True):
        found = check_spans(context, spans, results[cursor : cursor + len(spans)], min_context_words)
        cursor += len(spans)
        by_offsets = {(m.char_start, m.char_end): m for m in found}
        masks = tuple(by_offsets.get((m.char_start, m.char_end), m) for m in sample.masks)
        checked.append(
            replace(sample, masks=masks, spans=tuple(found) if every_span and sample.spans else sample.spans)
        )
    return checked


def keep_sample(sample: Sample, policy: KeepPolicy) -> bool:
    """Whether a checked sample passes ``policy`` (``record_only`` keeps everything)."""
    if policy in ("record_only", "redraw"):
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
