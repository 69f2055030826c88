"""Salient spans: one detected span (any extractor: spaCy or an LLM), cleaned to the fact MaskSearch
masks, or dropped.

:func:`salient_span`:

- leading determiners (``the City of Abbotsford`` -> ``City of Abbotsford``), a trailing possessive
  ``'s`` and edge punctuation are trimmed;
- a ``number`` needs a digit (``first``, ``two`` are not facts) unless ``spans.number_words``; a ``date``
  needs a year or day number (``today``, ``annually`` are not; a month alone, ``late February``, only
  with ``spans.month_dates``) unless ``spans.vague_dates``;
- a span glued to a neighbouring letter or digit, followed by ``'s`` + a capitalised word (cut out of
  ``Hobkirk's Hill``), with unbalanced brackets or quotes, or crossing a line, a sentence end or a
  spaced dash (``kelps)—the red algae``) is not a candidate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ramp.data.config import SpanConfig


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str
    label: str
    type: str


_DETERMINERS = ("the ", "a ", "an ", "this ", "that ", "these ", "those ")
_MONTHS = re.compile(
    r"\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t|tember)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b\.?",
    re.IGNORECASE,
)
_EDGE_PUNCTUATION = " \t,;:.!?\"'“”‘’-–—"
_POSSESSIVE_TAIL = re.compile(r"(?:['’]s|(?<=s)['’])$")
_NAME_POSSESSIVE = re.compile(r"^['’]s\s+[A-Z]")
_SPACED_DASH = re.compile(r"\s[-–—―]|[-–—―]\s|[—―]")
_SENTENCE_INSIDE = re.compile(r"[.!?][\"'”’)\]]*\s+[\"'“‘(\[]?[A-Z]")
_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("“", "”"))


def salient_span(text: str, start: int, end: int, label: str, kind: str, allow: SpanConfig) -> Span | None:
    """The cleaned span ``text[start:end]`` (see the module docstring), or None when it is not a fact."""
    while True:  # trim edges until stable
        before = (start, end)
        while start < end and text[start] in _EDGE_PUNCTUATION and text[start] not in "\"“'‘":
            start += 1
        while start < end and text[end - 1] in _EDGE_PUNCTUATION and text[end - 1] not in "\"”'’":
            end -= 1
        lowered = text[start:end].lower()
        for determiner in _DETERMINERS:
            if lowered.startswith(determiner):
                start += len(determiner)
                break
        tail = _POSSESSIVE_TAIL.search(text[start:end])
        if tail and kind == "entity":
            end -= len(tail.group())
        if (start, end) == before:
            break
    span = text[start:end]
    if not span or not any(ch.isalnum() for ch in span):
        return None
    if (start > 0 and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum()):
        return None
    if _NAME_POSSESSIVE.match(text[end : end + 4]):
        return None
    if "\n" in span or _SPACED_DASH.search(span) or _SENTENCE_INSIDE.search(span):
        return None
    if any(span.count(a) != span.count(b) for a, b in _PAIRS) or span.count('"') % 2:
        return None
    has_digit = any(ch.isdigit() for ch in span)
    if kind == "number" and not has_digit and not allow.number_words:
        return None
    vague = kind == "date" and not has_digit and not allow.vague_dates
    if vague and not (allow.month_dates and _MONTHS.search(span) is not None):
        return None
    return Span(start, end, span, label, kind)
