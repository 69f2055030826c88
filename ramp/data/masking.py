"""Mask selection (MaskSearch's RAMP task) and Sample building.

Eligible spans are the cleaned candidates (:mod:`ramp.data.spans`) minus: spans overlapping another
candidate (both dropped), spans equal to the article title (case-insensitive, after the ``ramp`` text
profile; a trailing disambiguation like " (band)" is also tried), spans without a content word, and spans
with a content word visible elsewhere in the passage (``William Godwin`` while ``Godwin`` appears in the
next sentence: a copied surname would earn half the reward).

Two masks conflict when no content word separates them (``[mask], [mask]``) or, with
``masking.one_per_sentence``, when they share a sentence. A span at the very start of the passage is
drawn only when it is the only eligible one (then the record is rejected ``starts_with_mask``).

The most masks a passage allows, ``m``, is the largest conflict-free set (at most ``max_masks``). k is
drawn in ``[min_masks, m]``: uniformly (``k_mix: uniform``) or with :func:`k_probabilities`
(``balanced``). The k spans are then drawn without replacement with weight
``type_weight[type] * len(span) ** length_power``. All draws use ``record_rng(seed, passage_id, "mask")``,
so a passage gets the same masks on every run and runner.
"""

from __future__ import annotations

import bisect
import functools
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

from ramp.data.config import MaskConfig
from ramp.data.passages import Passage
from ramp.data.rejections import Rejection
from ramp.data.salience import Span
from ramp.data.samples import MASK_TOKEN, Mask, Sample, mask_text
from ramp.data.splitting import sentence_spans
from ramp.prompts import PromptTemplates, ramp_user_prompt
from ramp.seeding import record_rng
from ramp.text import content_words, normalize, normalize_cached

_DISAMBIGUATION = re.compile(r"\s*\([^()]*\)\s*$")
_DRAW_ATTEMPTS = 8

# Probabilities of each k (index k - 1) for a passage allowing at most m masks, by m.
KProbabilities = Mapping[int, Sequence[float]]


@functools.lru_cache(maxsize=1024)
def title_forms(title: str) -> frozenset[str]:
    """The ``ramp`` forms of a title, with and without its disambiguation (memoised: an article's
    passages share it)."""
    return frozenset({normalize(title, "ramp"), normalize(_DISAMBIGUATION.sub("", title), "ramp")} - {""})


def eligible_spans(text: str, title: str, candidates: Sequence[Span]) -> list[Span]:
    """The candidates that may be masked (see the module docstring), in passage order."""
    ordered = sorted(candidates, key=lambda s: (s.start, s.end))
    titles = title_forms(title)
    words = _content_words(text)
    everywhere = Counter(words.keys)
    eligible = []
    for i, span in enumerate(ordered):
        if any(j != i and o.start < span.end and span.start < o.end for j, o in enumerate(ordered)):
            continue
        # the words inside the span: words are ordered and disjoint, so they are a slice
        first, last = bisect.bisect_left(words.starts, span.start), bisect.bisect_right(words.ends, span.end)
        inside = Counter(words.keys[first:last])
        if not inside or normalize_cached(span.text, "ramp") in titles:
            continue
        if any(everywhere[key] > count for key, count in inside.items()):
            continue  # a content word of the span is visible elsewhere
        eligible.append(span)
    return eligible


class _Words(NamedTuple):
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    keys: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def _content_words(text: str) -> _Words:
    """The content words of ``text`` (:func:`ramp.text.content_words`) as starts, ends and keys; cached, as
    eligibility and the conflict test of every draw read the same passage."""
    found = content_words(text)
    return _Words(*(tuple(column) for column in zip(*found, strict=True))) if found else _Words((), (), ())


def conflict_test(text: str, config: MaskConfig) -> Callable[[Span, Span], bool]:
    """``conflicts(a, b)``: the two spans may not both be masked (see the module docstring)."""
    words = _content_words(text)
    starts, ends = words.starts, words.ends
    sentence_starts = [a for a, _ in sentence_spans(text)] if config.one_per_sentence else []

    def conflicts(a: Span, b: Span) -> bool:
        first, second = (a, b) if a.start <= b.start else (b, a)
        between = bisect.bisect_left(starts, first.end)  # the first content word after ``first``
        if first.end > second.start or between == len(starts) or ends[between] > second.start:
            return True
        return config.one_per_sentence and bisect.bisect_right(
            sentence_starts, a.start
        ) == bisect.bisect_right(sentence_starts, b.start)

    return conflicts


def most_masks(spans: Sequence[Span], conflicts: Callable[[Span, Span], bool], limit: int) -> int:
    """The size of the largest conflict-free set of ``spans`` (earliest end first), at most ``limit``."""
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: s.end):
        if not any(conflicts(span, c) for c in chosen):
            chosen.append(span)
    return min(limit, len(chosen))


def span_weight(span: Span, config: MaskConfig) -> float:
    return config.type_weights[span.type] * len(span.text) ** config.length_power


def k_probabilities(passages_by_m: Mapping[int, int], config: MaskConfig) -> dict[int, list[float]]:
    """P(k | m) for ``k_mix: balanced``: counts by k as even as the passages' m allow.

    From the largest k down, k takes an equal share of the passages still unassigned (at most all that
    allow k masks), each of them with the same probability; what a large k cannot use goes to the
    smaller ones. ``uniform`` gives every k in ``[min_masks, m]`` the same probability.
    """
    lo, hi = config.min_masks, config.max_masks
    table = {m: [0.0] * hi for m in range(lo, hi + 1)}
    if config.k_mix == "uniform":
        for m, row in table.items():
            for k in range(lo, m + 1):
                row[k - 1] = 1 / (m - lo + 1)
        return table
    unassigned = {m: float(passages_by_m.get(m, 0)) for m in table}
    remaining = {m: 1.0 for m in table}  # probability mass of each m not yet given to a larger k
    for k in range(hi, lo - 1, -1):
        pool = sum(n for m, n in unassigned.items() if m >= k)
        share = sum(unassigned.values()) / (k - lo + 1)
        take = 1.0 if k == lo or pool <= share else share / pool
        for m in table:
            if m >= k:
                table[m][k - 1] = remaining[m] * take
                remaining[m] *= 1 - take
                unassigned[m] *= 1 - take
    return table


def draw_k(rng: random.Random, m: int, config: MaskConfig, probabilities: KProbabilities | None) -> int:
    """k for a passage allowing ``m`` masks (``m >= min_masks``)."""
    row = (probabilities or k_probabilities({}, config.model_copy(update={"k_mix": "uniform"})))[m]
    pick, total = rng.random() * sum(row), 0.0
    for k, p in enumerate(row, start=1):
        total += p
        if p > 0 and pick < total:
            return k
    return max(k for k, p in enumerate(row, start=1) if p > 0)


def choose_masks(
    spans: Sequence[Span],
    rng: random.Random,
    config: MaskConfig,
    k: int,
    conflicts: Callable[[Span, Span], bool],
) -> list[Span]:
    """k conflict-free spans drawn by weight, in passage order (fewer only if no draw found k)."""
    best: list[Span] = []
    for _ in range(_DRAW_ATTEMPTS):
        pool, chosen = list(spans), list[Span]()
        while pool and len(chosen) < k:
            weights = [span_weight(s, config) for s in pool]
            pick, index = rng.random() * sum(weights), 0
            while index < len(pool) - 1 and pick >= weights[index]:
                pick -= weights[index]
                index += 1
            span = pool.pop(index)
            chosen.append(span)
            pool = [s for s in pool if not conflicts(s, span)]
        if len(chosen) > len(best):
            best = chosen
        if len(best) == k:
            break
    return sorted(best, key=lambda s: s.start)


def allowed_masks(text: str, spans: Sequence[Span], config: MaskConfig) -> int:
    """``m``: the most masks a passage with these eligible spans allows (start-of-text span set aside)."""
    pool = _drawable(text, spans)
    return most_masks(pool, conflict_test(text, config), config.max_masks)


def _drawable(text: str, spans: Sequence[Span]) -> list[Span]:
    """Spans that keep the text from starting with the mask (all of them when there is no other)."""
    lead = len(text) - len(text.lstrip())
    later = [s for s in spans if s.start > lead]
    return later if later else list(spans)


def sample_from_spans(
    passage: Passage,
    exclude_doc_ids: Sequence[str],
    spans: Sequence[Span],
    config: MaskConfig,
    seed: int,
    templates: PromptTemplates | None = None,
    probabilities: KProbabilities | None = None,
    eligible: Sequence[Mask] = (),
) -> Sample | Rejection:
    """Draw the masks of ``passage`` among ``spans`` (already eligible) and build its sample."""
    pool = _drawable(passage.text, spans)
    conflicts = conflict_test(passage.text, config)
    m = most_masks(pool, conflicts, config.max_masks)
    if m < config.min_masks:
        reason = "no_eligible_span" if not spans else "too_few_spans"
        detail = f"{len(spans)} eligible spans allow {m} masks, need {config.min_masks}"
        return Rejection(passage.passage_id, "mask", reason, detail, passage.text)
    rng = record_rng(seed, passage.passage_id, "mask")
    chosen = choose_masks(pool, rng, config, draw_k(rng, m, config, probabilities), conflicts)
    masked = mask_text(passage.text, [(s.start, s.end) for s in chosen])
    if masked.lstrip().startswith(MASK_TOKEN):
        detail = f"the only eligible span {chosen[0].text!r} is at the start of the passage"
        return Rejection(passage.passage_id, "mask", "starts_with_mask", detail, passage.text)
    by_offsets = {(m.char_start, m.char_end): m for m in eligible}
    masks = tuple(
        by_offsets.get((s.start, s.end)) or Mask(s.text, s.type, s.label, s.start, s.end) for s in chosen
    )
    others = sorted(set(exclude_doc_ids) - {passage.passage_id})
    return Sample(
        sample_id=passage.passage_id,
        passage_id=passage.passage_id,
        article_id=passage.article_id,
        title=passage.title,
        passage=passage.text,
        masked_passage=masked,
        masks=masks,
        exclude_doc_ids=(passage.passage_id, *others),
        prompt=ramp_user_prompt(masked, len(masks), templates),
        answers=tuple(m.text for m in masks),
        spans=tuple(eligible) or tuple(Mask(s.text, s.type, s.label, s.start, s.end) for s in spans),
    )


def build_sample(
    passage: Passage,
    exclude_doc_ids: Sequence[str],
    candidates: Sequence[Span],
    config: MaskConfig,
    seed: int,
    templates: PromptTemplates | None = None,
    probabilities: KProbabilities | None = None,
) -> Sample | Rejection:
    """The masked sample of a passage from its candidate spans, or the reason it cannot be one."""
    spans = eligible_spans(passage.text, passage.title, candidates)
    return sample_from_spans(passage, exclude_doc_ids, spans, config, seed, templates, probabilities)


def redraw_sample(
    sample: Sample,
    config: MaskConfig,
    seed: int,
    templates: PromptTemplates | None = None,
    probabilities: KProbabilities | None = None,
) -> Sample | Rejection:
    """Draw ``sample``'s masks again among its answerable eligible spans (answerability before k); a
    sample written before samples listed their spans draws among its own masks."""
    passage = Passage(sample.passage_id, sample.article_id, sample.title, sample.passage, 0)
    eligible = sample.spans or sample.masks
    spans = [Span(m.char_start, m.char_end, m.text, m.label, m.type) for m in eligible if m.answerable]
    result = sample_from_spans(
        passage, sample.exclude_doc_ids, spans, config, seed, templates, probabilities, eligible
    )
    if isinstance(result, Rejection):
        return result
    return replace(result, sample_id=sample.sample_id, exclude_doc_ids=sample.exclude_doc_ids)


def passage_allowance(sample: Sample, config: MaskConfig, answerable_only: bool) -> int:
    """``m`` of a sample's passage: from its answerable eligible spans, or all of them."""
    masks = [m for m in sample.spans or sample.masks if m.answerable or not answerable_only]
    spans = [Span(m.char_start, m.char_end, m.text, m.label, m.type) for m in masks]
    return allowed_masks(sample.passage, spans, config)
