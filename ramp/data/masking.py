"""Mask selection (MaskSearch's RAMP task) and Sample building.

Eligible spans are the NER candidates minus: spans equal to the article title (case-insensitive, after
Unicode/whitespace/punctuation normalisation; a trailing disambiguation like " (band)" is also tried),
spans whose text occurs more than once in the passage (as a substring), and spans overlapping or touching
another candidate (both are dropped). The number of masks k is drawn uniformly from
``[min_masks, min(max_masks, eligible)]``; spans are then drawn without replacement with weight
``type_weight[type] * len(span) ** length_power`` (longer spans and numbers more likely). All draws use
``record_rng(seed, passage_id, "mask")``, so a passage gets the same masks on every run and runner. If the
masked text would start with the mask token, the record is rejected (``starts_with_mask``), not re-drawn.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence

from ramp.data.config import MaskConfig
from ramp.data.passages import Passage
from ramp.data.rejections import Rejection
from ramp.data.samples import MASK_TOKEN, Mask, Sample, mask_text
from ramp.data.spans import Span
from ramp.prompts import PromptTemplates, ramp_user_prompt
from ramp.seeding import record_rng

_DISAMBIGUATION = re.compile(r"\s*\([^()]*\)\s*$")


def normalise(text: str) -> str:
    """Case-, whitespace- and edge-punctuation-insensitive form for title comparison."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.strip(" \"'“”‘’.,;:!?()[]-–—")


def title_forms(title: str) -> set[str]:
    return {normalise(title), normalise(_DISAMBIGUATION.sub("", title))} - {""}


def eligible_spans(text: str, title: str, candidates: Sequence[Span]) -> list[Span]:
    """The candidates that may be masked (see the module docstring), in passage order."""
    ordered = sorted(candidates, key=lambda s: (s.start, s.end))
    titles = title_forms(title)
    eligible = []
    for i, span in enumerate(ordered):
        others = ordered[:i] + ordered[i + 1 :]
        if any(o.start <= span.end and span.start <= o.end for o in others):
            continue
        if not span.text.strip() or normalise(span.text) in titles or text.count(span.text) > 1:
            continue
        eligible.append(span)
    return eligible


def span_weight(span: Span, config: MaskConfig) -> float:
    return config.type_weights[span.type] * len(span.text) ** config.length_power


def choose_masks(spans: Sequence[Span], rng: random.Random, config: MaskConfig) -> list[Span]:
    """k spans (k uniform in [min_masks, min(max_masks, len(spans))]) drawn by weight, in passage order."""
    k = rng.randint(config.min_masks, min(config.max_masks, len(spans)))
    pool = list(spans)
    weights = [span_weight(s, config) for s in pool]
    chosen = []
    for _ in range(k):
        pick = rng.random() * sum(weights)
        index = 0
        while index < len(pool) - 1 and pick >= weights[index]:
            pick -= weights[index]
            index += 1
        chosen.append(pool.pop(index))
        weights.pop(index)
    return sorted(chosen, key=lambda s: s.start)


def build_sample(
    passage: Passage,
    exclude_doc_ids: Sequence[str],
    candidates: Sequence[Span],
    config: MaskConfig,
    seed: int,
    templates: PromptTemplates | None = None,
) -> Sample | Rejection:
    """The masked sample of a passage, or the reason it cannot be one."""
    spans = eligible_spans(passage.text, passage.title, candidates)
    if len(spans) < config.min_masks:
        reason = "no_eligible_span" if not spans else "too_few_spans"
        detail = f"{len(spans)} eligible of {len(candidates)} candidate spans, need {config.min_masks}"
        return Rejection(passage.passage_id, "mask", reason, detail, passage.text)
    chosen = choose_masks(spans, record_rng(seed, passage.passage_id, "mask"), config)
    masked = mask_text(passage.text, [(s.start, s.end) for s in chosen])
    if masked.startswith(MASK_TOKEN):
        detail = f"first mask {chosen[0].text!r} is at the start of the passage"
        return Rejection(passage.passage_id, "mask", "starts_with_mask", detail, passage.text)
    masks = tuple(Mask(s.text, s.type, s.label, s.start, s.end) for s in chosen)
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
    )
