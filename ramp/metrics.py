"""Answer metrics: SQuAD/HotpotQA exact match and F1, and MaskSearch's token recall.

Every function takes one prediction and a list of gold answers and returns the best score over the golds,
in [0, 1]. Normalisation is a named :mod:`ramp.text` profile: ``squad`` by default (the official HotpotQA
script: lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace); the RAMP
reward passes ``profile="ramp"`` (Unicode dashes, quotes and accents folded first). F1 follows its
yes/no rule: if either normalised side is one of ``yes``, ``no``, ``noanswer`` and the two differ, F1 is
0 (no partial credit for "no way" vs "no").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ramp.text import Profile, normalize, squad_normalize

_SPECIAL_ANSWERS = frozenset({"yes", "no", "noanswer"})

normalize_answer = squad_normalize  # the official HotpotQA/SQuAD normaliser (``ramp.text`` profile squad)


def _golds(golds: Sequence[str] | str) -> Sequence[str]:
    # A bare string is one gold answer, not a list of characters.
    return [golds] if isinstance(golds, str) else golds


def exact_match(prediction: str, golds: Sequence[str] | str, profile: Profile = "squad") -> float:
    """1.0 if the normalised prediction equals any normalised gold, else 0.0."""
    pred = normalize(prediction, profile)
    return float(any(pred == normalize(g, profile) for g in _golds(golds)))


def _f1_single(prediction: str, gold: str, profile: Profile) -> float:
    pred, ref = normalize(prediction, profile), normalize(gold, profile)
    if (pred in _SPECIAL_ANSWERS or ref in _SPECIAL_ANSWERS) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    num_same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, golds: Sequence[str] | str, profile: Profile = "squad") -> float:
    """Token-level F1 (HotpotQA official definition), max over golds."""
    return max((_f1_single(prediction, g, profile) for g in _golds(golds)), default=0.0)


def _recall_single(prediction: str, gold: str, profile: Profile) -> float:
    ref_tokens = normalize(gold, profile).split()
    if not ref_tokens:
        return float(not normalize(prediction, profile))
    num_same = sum((Counter(normalize(prediction, profile).split()) & Counter(ref_tokens)).values())
    return num_same / len(ref_tokens)


def token_recall(prediction: str, golds: Sequence[str] | str, profile: Profile = "squad") -> float:
    """MaskSearch's metric: share of the gold's normalised tokens found in the prediction, max over golds.

    Tokens are counted with multiplicity (a gold ``"new york new"`` needs ``new`` twice). A gold that
    normalises to nothing scores 1 only against an empty prediction.
    """
    return max((_recall_single(prediction, g, profile) for g in _golds(golds)), default=0.0)


METRICS = {"exact_match": exact_match, "f1": f1, "token_recall": token_recall}
