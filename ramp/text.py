"""The one answer-normalisation module, with named profiles.

- ``squad``: the official SQuAD/HotpotQA rule, unchanged: lowercase, drop ASCII punctuation, drop the
  articles a/an/the, collapse whitespace. Evaluation metrics (EM/F1 on HotpotQA, ...) use it.
- ``ramp``: NFKC; Unicode dashes, quotes and apostrophes folded to their ASCII forms; accents folded
  (``Zürich`` -> ``Zurich``); every other Unicode punctuation mark treated like ASCII punctuation; then
  the ``squad`` steps. Answerability, the built-in teacher, verification and the RAMP reward use it, so
  "answerable", "verified" and "rewarded" agree on the same fill (``1990–1995`` == ``1990-1995``).

Every stage names the profile it uses.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from itertools import compress
from typing import Literal

Profile = Literal["squad", "ramp"]
PROFILES: tuple[Profile, ...] = ("squad", "ramp")

_ASCII_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# Dashes, minus signs, quotes and apostrophes that people type interchangeably with the ASCII ones.
_FOLD = str.maketrans(
    {
        **dict.fromkeys("‐‑‒–—―−﹘﹣－", "-"),
        **dict.fromkeys("‘’‚‛′ʼ＇`´", "'"),
        **dict.fromkeys("“”„‟″«»＂", '"'),
    }
)


def squad_normalize(text: str) -> str:
    """Lowercase, remove ASCII punctuation and articles, collapse whitespace (official SQuAD/HotpotQA)."""
    no_punct = "".join(ch for ch in text.lower() if ch not in _ASCII_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", no_punct).split())


def fold_unicode(text: str) -> str:
    """NFKC, then dashes/quotes/apostrophes to ASCII, accents removed, other punctuation to ``-``."""
    folded = unicodedata.normalize("NFKC", text).translate(_FOLD)
    chars = []
    for ch in unicodedata.normalize("NFKD", folded):
        category = unicodedata.category(ch)
        if category == "Mn":
            continue
        chars.append("-" if category[0] == "P" and ch not in _ASCII_PUNCTUATION else ch)
    return unicodedata.normalize("NFC", "".join(chars))


def ramp_normalize(text: str) -> str:
    """The ``ramp`` profile: :func:`fold_unicode`, then :func:`squad_normalize`."""
    return squad_normalize(fold_unicode(text))


_NORMALIZERS = {"squad": squad_normalize, "ramp": ramp_normalize}


def normalize(text: str, profile: Profile) -> str:
    """``text`` normalised with ``profile`` (``squad`` or ``ramp``)."""
    try:
        return _NORMALIZERS[profile](text)
    except KeyError:
        raise ValueError(f"unknown normalisation profile {profile!r}; expected one of {PROFILES}") from None


@functools.lru_cache(maxsize=1 << 16)
def normalize_cached(text: str, profile: Profile) -> str:
    """:func:`normalize`, memoised (fills and hit texts repeat across turns and masks)."""
    return normalize(text, profile)


def contains(haystack: str, needle: str) -> bool:
    """Whole-token containment of two already-normalised strings (an empty needle is never contained)."""
    return bool(needle) and f" {needle} " in f" {haystack} "


# Function words that carry no fact: a span's *content* tokens are its other tokens.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "as",
        "is",
        "was",
        "were",
        "be",
        "been",
        "being",
        "are",
        "am",
        "his",
        "her",
        "its",
        "their",
        "he",
        "she",
        "it",
        "they",
        "them",
        "this",
        "that",
        "these",
        "those",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "how",
        "when",
        "where",
        "while",
        "after",
        "before",
        "during",
        "since",
        "until",
        "into",
        "onto",
        "over",
        "under",
        "than",
        "then",
        "there",
        "here",
        "also",
        "not",
        "no",
        "had",
        "has",
        "have",
        "i",
        "we",
        "you",
        "our",
        "your",
        "my",
        "would",
        "could",
        "can",
        "may",
        "might",
        "will",
        "shall",
        "should",
        "do",
        "does",
        "did",
        "about",
        "more",
        "most",
        "such",
        "other",
        "some",
        "any",
        "all",
        "each",
        "both",
        "many",
        "much",
        "only",
        "very",
        "so",
        "if",
        "because",
        "however",
        "although",
        "though",
        "whereas",
        "thus",
        "therefore",
        "hence",
        "moreover",
        "furthermore",
        "meanwhile",
        "yet",
        "still",
        "even",
        "just",
        "now",
        "s",
    ]
)
_WORD = re.compile(r"\w+(?:[.,'’]\w+)*")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each word of ``text`` (``1,000``, ``3.5`` and ``U.S`` are one word; hyphens split:
    ``Mid-Atlantic`` shows ``Atlantic``)."""
    return [m.span() for m in _WORD.finditer(text)]


@functools.lru_cache(maxsize=1 << 17)
def content_key(word: str) -> str:
    """The ``ramp`` form of one word without a possessive ``'s``; empty for a stop word (memoised)."""
    key = ramp_normalize(_POSSESSIVE.sub("", word))
    return "" if key in STOP_WORDS or (len(key) < 2 and not key.isdigit()) else key


def content_words(text: str) -> tuple[tuple[int, int, str], ...]:
    """``(start, end, key)`` of each content word of ``text`` (see :func:`content_key`), in order."""
    matches = list(_WORD.finditer(text))
    keys = list(map(content_key, map(re.Match.group, matches)))
    found = zip(map(re.Match.start, matches), map(re.Match.end, matches), keys, strict=True)
    return tuple(compress(found, keys))


def content_tokens(text: str) -> list[str]:
    """The content words of ``text`` (see :func:`content_key`), in order."""
    return [key for key in map(content_key, _WORD.findall(text)) if key]
