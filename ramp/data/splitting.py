"""Sentence-safe passage splitting.

Sentences come from a rule-based splitter: every line break is a boundary, and inside a line a boundary
is ``.``/``!``/``?`` (plus closing quotes/brackets) followed by whitespace and an upper-case letter, digit
or opening quote -- unless the word before the period is a common abbreviation (``Dr.``, ``e.g.``,
``U.S.``) or a single initial (``J. R. R. Tolkien``).

Passages are packed greedily from whole sentences: a sentence joins the current passage while the
passage stays within ``target_words`` words; otherwise it starts a new one. A single sentence longer than
``target_words`` is its own passage; one longer than ``hard_cap_words`` is the only thing ever cut, into
consecutive pieces of ``hard_cap_words`` words.
"""

from __future__ import annotations

import re

from ramp.data.samples import MASK_TOKEN

ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "ft",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "cmdr",
        "adm",
        "gov",
        "sen",
        "rep",
        "pres",
        "rev",
        "hon",
        "fr",
        "vs",
        "etc",
        "al",
        "cf",
        "ca",
        "approx",
        "no",
        "nos",
        "vol",
        "vols",
        "p",
        "pp",
        "ed",
        "eds",
        "fig",
        "figs",
        "ch",
        "sec",
        "art",
        "op",
        "est",
        "inc",
        "ltd",
        "co",
        "corp",
        "bros",
        "dept",
        "univ",
        "assn",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
        "e.g",
        "i.e",
        "u.s",
        "u.k",
        "u.n",
        "a.m",
        "p.m",
        "b.c",
        "a.d",
        "b.c.e",
        "c.e",
        "ph.d",
        "m.d",
        "b.a",
        "m.a",
        "d.c",
    ]
)
_BOUNDARY = re.compile(r"[.!?][\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_WORD_BEFORE = re.compile(r"(\S+)$")
_MASK_STANDIN = MASK_TOKEN.upper()  # same length, so offsets are unchanged; starts like a capitalised word


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of the sentences of ``text`` (whitespace trimmed), in order.

    The one sentence splitter of RAMP: passages, mask queries, answerability contexts and the audit all
    use it. A ``[mask]`` token counts as a capitalised word, so a sentence may start with one.
    """
    text = text.replace(MASK_TOKEN, _MASK_STANDIN)
    spans: list[tuple[int, int]] = []
    offset = 0
    for line in text.split("\n"):
        start = 0
        for match in _BOUNDARY.finditer(line):
            if _is_abbreviation(line[start : match.start() + 1]):
                continue
            spans.append(_trimmed(line, start, match.end(), offset))
            start = match.end()
        spans.append(_trimmed(line, start, len(line), offset))
        offset += len(line) + 1
    return [(a, b) for a, b in spans if b > a]


def _trimmed(line: str, start: int, end: int, offset: int) -> tuple[int, int]:
    piece = line[start:end]
    left = len(piece) - len(piece.lstrip())
    return offset + start + left, offset + start + len(piece.rstrip())


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``, in order; joining them with single spaces loses only whitespace."""
    return [text[a:b] for a, b in sentence_spans(text)]


def _is_abbreviation(sentence_so_far: str) -> bool:
    if not sentence_so_far.endswith("."):
        return False
    found = _WORD_BEFORE.search(sentence_so_far)
    word = found.group(1).lstrip("(\"'“‘[").rstrip(".").lower() if found else ""
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_passages(text: str, target_words: int = 100, hard_cap_words: int = 300) -> list[str]:
    """Whole-sentence passages of about ``target_words`` words (see the module docstring)."""
    passages: list[str] = []
    current: list[str] = []
    current_words = 0
    for sentence in split_sentences(text):
        words = sentence.split()
        if len(words) > hard_cap_words:
            pieces = [words[i : i + hard_cap_words] for i in range(0, len(words), hard_cap_words)]
        else:
            pieces = [words]
        for piece in pieces:
            if current and current_words + len(piece) > target_words:
                passages.append(" ".join(current))
                current, current_words = [], 0
            current.append(" ".join(piece))
            current_words += len(piece)
    if current:
        passages.append(" ".join(current))
    return passages
