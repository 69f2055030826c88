"""Search-and-read without an LLM: queries from a mask's sentence, fills scored by the context around them.

The reader sees only the masked passage (never the answers) and the search hits. For each mask it
collects candidate fills from the hits -- runs of capitalised words (and their shorter parts),
numbers and dates (number words and months only as part of one: RAMP never masks a digit-less number
or date) -- and scores each occurrence by the mask's context words found around it in the hit:

- every content word within ``window`` tokens of the mask in the passage that also occurs within
  ``window`` tokens of the candidate adds ``weight(word) * near(passage distance) * near(hit distance)``
  (half as much, times ``cross_side``, when it is on the other side); ``weight`` is an inverse document
  frequency over the hits, ``near(d) = 1 / (1 + decay * (d - 1))``;
- the words right next to the mask that the hit repeats right next to the candidate (exact anchors,
  stop words included, up to ``context_words`` per side) add ``anchor_weight`` each.

A candidate's support is its best occurrence plus ``agreement`` times the others (at most
``agreement_cap`` times the best): a fact repeated by several hits wins. Candidates already visible in
the masked passage are skipped (a masked span rarely repeats in its own passage), and a mask next to a
month takes numbers only. Any span whose hit neighbours repeat the mask's own exactly (at least
``min_anchor_tokens`` on both sides together) is a candidate too, even if the passage shows it.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ramp.agent.protocol import shown_text
from ramp.cot.config import BuiltinTeacherConfig
from ramp.data.answerability import mask_query as mask_query  # the one mask query; teachers import it here
from ramp.data.samples import MASK_TOKEN
from ramp.data.splitting import sentence_spans
from ramp.retrieval.base import Hit
from ramp.text import STOP_WORDS, Profile, normalize_cached

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th|s)?|\w+(?:[.’']\w+)*|[^\w\s]")
_POSSESSIVE = ("'s", "’s")
_SENTENCE_STOPS = frozenset(".!?")
PROFILE: Profile = "ramp"  # the reader's normalisation profile, as answerability, verification and the reward


def _normalized(text: str) -> str:
    """The ``ramp`` profile, so the teacher's fills agree with answerability, verification and the reward."""
    return normalize_cached(text, PROFILE)


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_MONTHS = _word_set("january february march april may june july august september october november december")
_NUMBER_WORDS = _word_set(
    """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
    sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred
    thousand million billion dozen first second third fourth fifth sixth seventh eighth ninth tenth
    eleventh twelfth"""
)
_NUMBER_TAILS = frozenset({"century", "centuries", "millennium", "%", "percent", "bc", "ad", "bce", "ce"})
_NAME_LINKS = frozenset({"of", "de", "the", "for", "von", "van", "du", "la", "del", "da", "di", "y"})


@dataclass(frozen=True)
class Reading:
    fill: str
    score: float  # the candidate's support
    evidence: str  # the hit text around the fill
    doc_id: str


@dataclass(frozen=True)
class _Candidate:
    start: int
    end: int
    part: bool  # a shorter part of a longer name run


def tokenize(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) triples; a possessive ``'s`` is its own token."""
    tokens = []
    for match in _TOKEN.finditer(text):
        token, start, end = match.group(), match.start(), match.end()
        if len(token) > 2 and token[-2:] in _POSSESSIVE:
            tokens += [(token[:-2], start, end - 2), (token[-2:], end - 2, end)]
        else:
            tokens.append((token, start, end))
    return tokens


@functools.lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[tuple[str, int, int], ...]:
    """:func:`tokenize`, cached: every turn re-reads the same hits for every mask."""
    return tuple(tokenize(text))


def _lower_tokens(text: str) -> list[str]:
    return [token.lower() for token, _, _ in tokenize(text)]


def mask_contexts(masked_passage: str, context_words: int) -> list[tuple[list[str], list[str]]]:
    """(left, right) context tokens of each mask, lowercase, stopping at neighbouring masks."""
    pieces = masked_passage.split(MASK_TOKEN)
    contexts = []
    for j in range(len(pieces) - 1):
        left = _lower_tokens(pieces[j])[-context_words:] if context_words else []
        right = _lower_tokens(pieces[j + 1])[:context_words]
        contexts.append((left, right))
    return contexts


def mask_windows(masked_passage: str, window: int) -> list[tuple[list[str], list[str]]]:
    """(left, right) lowercase tokens within ``window`` of each mask; other masks stay as ``[mask]``."""
    pieces = masked_passage.split(MASK_TOKEN)
    tokens: list[str] = []
    positions = []
    for j, piece in enumerate(pieces):
        tokens += _lower_tokens(piece)
        if j < len(pieces) - 1:
            positions.append(len(tokens))
            tokens.append(MASK_TOKEN)
    return [(tokens[max(0, p - window) : p], tokens[p + 1 : p + 1 + window]) for p in positions]


def substitute_fills(masked_passage: str, fills: dict[int, str], keep: int) -> tuple[str, int]:
    """``masked_passage`` with mask ``j`` replaced by ``fills[j]`` (every ``j`` but ``keep``), and the
    index of mask ``keep`` among the masks left: the chained text a later mask's query is built from."""
    pieces = masked_passage.split(MASK_TOKEN)
    out, left = [pieces[0]], 0
    for j, piece in enumerate(pieces[1:]):
        fill = fills.get(j) if j != keep else None
        if fill is None:
            left += j < keep
        out += [fill if fill is not None else MASK_TOKEN, piece]
    return "".join(out), left


def neighbour_sentence(masked_passage: str, index: int) -> str:
    """The sentence before mask ``index``'s sentence (after it, for the first) with masks removed."""
    spans = sentence_spans(masked_passage)
    pieces = masked_passage.split(MASK_TOKEN)
    at = sum(len(p) + len(MASK_TOKEN) for p in pieces[: index + 1]) - len(MASK_TOKEN)
    own = next((i for i, (a, b) in enumerate(spans) if a <= at < b), None)
    if own is None or len(spans) < 2:
        return ""
    a, b = spans[own - 1] if own > 0 else spans[own + 1]
    return " ".join(masked_passage[a:b].replace(MASK_TOKEN, " ").split())


def content_word_count(text: str) -> int:
    return sum(_is_content(t) for t in _lower_tokens(text))


def context_query(masked_passage: str, index: int, context_words: int) -> str:
    """The words right before and after mask ``index``."""
    left, right = mask_contexts(masked_passage, context_words)[index]
    words = [t for t in left + right if t[0].isalnum()]
    return " ".join(words)


def expects_number(left: Sequence[str], right: Sequence[str]) -> bool:
    """Date-like slot: a month name right around the mask ("July 9, [mask]", "[mask] March")."""
    return any(t in _MONTHS for t in [*left[-3:], *right[:2]])


def _is_content(token: str) -> bool:
    return token[0].isalnum() and token not in STOP_WORDS and (len(token) > 1 or token.isdigit())


def _is_numeric(token: str) -> bool:
    return token[:1].isdigit() or token.lower() in _NUMBER_WORDS


def _digitless_number(words: Sequence[str]) -> bool:
    """Only number words and months ("two", "first", "July"): RAMP never masks a number or date without a
    digit (``ramp.data.spans``), so such a fill is never the answer."""
    return all(w in _NUMBER_WORDS or w in _MONTHS for w in words)


def _name_runs(originals: Sequence[str], lowers: Sequence[str], common: set[str]) -> list[_Candidate]:
    """Capitalised runs (linked by "of", "de", ...) and their parts of up to four words.

    A capitalised sentence-first word that is a stop word, or occurs lower-case in the hits, is skipped.
    """
    n, found, i = len(originals), [], 0
    while i < n:
        if not originals[i][:1].isupper():
            i += 1
            continue
        sentence_first = i == 0 or lowers[i - 1] in _SENTENCE_STOPS or lowers[i - 1] in {":", '"', "“"}
        if sentence_first and (lowers[i] in STOP_WORDS or lowers[i] in common):
            i += 1
            continue
        end = i + 1
        while end < n:
            if originals[end][:1].isupper():
                end += 1
            elif lowers[end] in _NAME_LINKS and end + 1 < n and originals[end + 1][:1].isupper():
                end += 2
            else:
                break
        found.append(_Candidate(i, end, part=False))
        for a in range(i, end):
            for b in range(a + 1, min(end, a + 4) + 1):
                if (a, b) != (i, end) and originals[a][:1].isupper() and originals[b - 1][:1].isupper():
                    found.append(_Candidate(a, b, part=True))
        i = end
    return found


def _number_runs(originals: Sequence[str], lowers: Sequence[str]) -> list[_Candidate]:
    """Numbers, number words and dates ("July 9, 1969", "the 20th century", "40%"); a year alone too."""
    n, found, i = len(originals), [], 0
    while i < n:
        if not _is_numeric(originals[i]):
            i += 1
            continue
        start, end = i, i + 1
        while end < n and (
            _is_numeric(originals[end])
            or lowers[end] in _MONTHS
            or lowers[end] in _NUMBER_TAILS
            or (lowers[end] == "," and end + 1 < n and originals[end + 1][:1].isdigit())
        ):
            end += 1
        if start > 0 and lowers[start - 1] in _MONTHS:
            start -= 1
        found.append(_Candidate(start, end, part=False))
        if end - start > 1:
            found += [
                _Candidate(k, k + 1, part=True)
                for k in range(start, end)
                if len(originals[k]) == 4 and originals[k].isdigit()
            ]
        i = end
    return found


def _aligned_spans(
    lowers: Sequence[str], left: Sequence[str], right: Sequence[str], max_words: int, min_anchor: int
) -> list[_Candidate]:
    """Spans whose hit neighbours repeat the mask's own (both sides, ``min_anchor`` tokens in all).

    ``left``/``right``: the mask's neighbours, nearest first, stopping at other masks.
    """
    n = len(lowers)
    if not left or not right:
        return []
    lefts = {
        i: _anchor_length(lowers[max(0, i - len(left)) : i][::-1], left, len(left))
        for i in range(1, n)
        if lowers[i - 1] == left[0]
    }
    rights = {
        i: _anchor_length(lowers[i : i + len(right)], right, len(right))
        for i in range(1, n)
        if lowers[i] == right[0]
    }
    return [
        _Candidate(start, end, part=False)
        for start in lefts
        if lowers[start][0].isalnum()
        for end in range(start + 1, min(start + max_words, n) + 1)
        if end in rights and lefts[start] + rights[end] >= min_anchor and lowers[end - 1][0].isalnum()
    ]


def _near(distance: int, decay: float) -> float:
    return 1.0 / (1.0 + decay * (distance - 1))


def _first_positions(tokens: Sequence[str]) -> dict[str, int]:
    """Token -> its 1-based distance from the mask (nearest occurrence); ``tokens`` nearest first."""
    positions: dict[str, int] = {}
    for distance, token in enumerate(tokens, start=1):
        positions.setdefault(token, distance)
    return positions


def _anchor_length(hit_side: Sequence[str], mask_side: Sequence[str], limit: int) -> int:
    """Equal tokens from the mask (candidate) outwards, at most ``limit``; both sequences nearest first."""
    count = 0
    for hit_token, mask_token in zip(hit_side[:limit], mask_side[:limit], strict=False):
        if hit_token != mask_token:
            break
        count += 1
    return count


def read_mask(
    hits: Sequence[Hit], left: Sequence[str], right: Sequence[str], visible: str, config: BuiltinTeacherConfig
) -> Reading | None:
    """The best-supported fill for one mask (see the module docstring), or None without candidates.

    ``left``/``right``: the mask's lowercase context tokens (:func:`mask_windows`); ``visible``: the
    masked passage, whose spans are not candidates (unless exactly aligned).
    """
    readings = candidate_readings(hits, left, right, visible, config)
    return readings[0] if readings else None


def candidate_readings(
    hits: Sequence[Hit], left: Sequence[str], right: Sequence[str], visible: str, config: BuiltinTeacherConfig
) -> list[Reading]:
    """Every candidate fill for one mask, best supported first (ties: the shorter, then the first seen)."""
    w = config.window
    near_left = list(reversed(left[-w:]))
    near_right = list(right[:w])
    own_left = near_left[: near_left.index(MASK_TOKEN)] if MASK_TOKEN in near_left else near_left
    own_right = near_right[: near_right.index(MASK_TOKEN)] if MASK_TOKEN in near_right else near_right
    left_words = {t: d for t, d in _first_positions(near_left).items() if _is_content(t)}
    right_words = {t: d for t, d in _first_positions(near_right).items() if _is_content(t)}
    shown = f" {_normalized(visible.replace(MASK_TOKEN, ' | '))} "
    numeric_slot = expects_number(left, right)
    texts = [shown_text(hit.text, config.read_chars) for hit in hits]
    tokenized = [_tokens(text) for text in texts]
    document_frequency = Counter(t.lower() for tokens in tokenized for t in {tok for tok, _, _ in tokens})
    common = {tok for tokens in tokenized for tok, _, _ in tokens if tok[:1].islower()}
    idf = {t: math.log(1 + len(hits) / df) for t, df in document_frequency.items()}
    top_score = max((hit.score for hit in hits), default=0.0)

    support: dict[str, list[float]] = {}
    first_seen: dict[str, Reading] = {}
    for hit, text, tokens in zip(hits, texts, tokenized, strict=True):
        originals = [t for t, _, _ in tokens]
        lowers = [t.lower() for t in originals]
        aligned = _aligned_spans(
            lowers,
            own_left[: config.context_words],
            own_right[: config.context_words],
            config.max_fill_words,
            config.min_anchor_tokens,
        )
        exact = set(aligned)
        for cand in aligned + _name_runs(originals, lowers, common) + _number_runs(originals, lowers):
            s, e = cand.start, cand.end
            if e - s > config.max_fill_words or (numeric_slot and not originals[s][:1].isdigit()):
                continue
            if _digitless_number(lowers[s:e]):
                continue
            fill = text[tokens[s][1] : tokens[e - 1][2]]
            key = _normalized(fill)
            if not key or (f" {key} " in shown and cand not in exact):
                continue
            hit_left = lowers[max(0, s - w) : s][::-1]
            hit_right = lowers[e : e + w]
            same_left, same_right = _first_positions(hit_left), _first_positions(hit_right)
            score = 0.0
            for words, same, other in (
                (left_words, same_left, same_right),
                (right_words, same_right, same_left),
            ):
                for word, distance in words.items():
                    if word in same:
                        score += idf[word] * _near(distance, config.decay) * _near(same[word], config.decay)
                    elif word in other:
                        score += (
                            config.cross_side
                            * idf[word]
                            * _near(distance, config.decay)
                            * _near(other[word], config.decay)
                        )
            limit = config.context_words
            anchors = _anchor_length(hit_left, near_left, limit) + _anchor_length(
                hit_right, near_right, limit
            )
            score += config.anchor_weight * anchors
            if cand.part:
                score *= config.part_weight
            if config.hit_score_power and top_score > 0:
                score *= (max(hit.score, 0.0) / top_score) ** config.hit_score_power
            support.setdefault(key, []).append(score)
            if key not in first_seen:
                lo, hi = max(0, s - w), min(len(tokens), e + w) - 1
                first_seen[key] = Reading(
                    fill=fill,
                    score=0.0,
                    evidence=" ".join(text[tokens[lo][1] : tokens[hi][2]].split()),
                    doc_id=hit.doc_id,
                )

    def total(key: str) -> float:
        best, *others = sorted(support[key], reverse=True)
        return best + config.agreement * min(sum(others), config.agreement_cap * best)

    totals = {key: total(key) for key in support}
    ranked = sorted(support, key=lambda k: (-totals[k], len(k)))  # stable: first seen wins ties
    return [replace(first_seen[key], score=totals[key]) for key in ranked]
