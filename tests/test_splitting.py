from hypothesis import given, settings
from hypothesis import strategies as st

from ramp.data.splitting import sentence_spans, split_passages, split_sentences


def test_sentences_respect_abbreviations_initials_and_lines():
    text = 'Dr. Smith met J. R. R. Tolkien in the U.S. in 1950. He left! "Why?" It was e.g. late.\nNew line'
    assert split_sentences(text) == [
        "Dr. Smith met J. R. R. Tolkien in the U.S. in 1950.",
        "He left!",
        '"Why?"',
        "It was e.g. late.",
        "New line",
    ]


def test_no_split_before_lower_case():
    assert split_sentences("Pi is approx. 3.14 and so on. next word") == [
        "Pi is approx. 3.14 and so on. next word"
    ]


def _sentence(n: int, i: int) -> str:
    return " ".join(f"W{i}x{j}" for j in range(n - 1)) + f" end{i}."


def test_passages_pack_whole_sentences_up_to_target():
    sentences = [_sentence(n, i) for i, n in enumerate([30, 40, 50, 20, 10, 90, 5])]
    passages = split_passages(" ".join(sentences), target_words=100, hard_cap_words=300)
    assert passages == [
        " ".join(sentences[0:2]),
        " ".join(sentences[2:5]),
        " ".join(sentences[5:7]),
    ]


def test_long_sentence_alone_and_hard_cap_cut():
    long_one = _sentence(150, 1)
    huge = _sentence(650, 2)
    passages = split_passages(
        f"Short one. {long_one} {huge} Tail here.", target_words=100, hard_cap_words=300
    )
    assert passages[0] == "Short one."
    assert passages[1] == long_one
    assert [len(p.split()) for p in passages[2:]] == [300, 300, 52]  # the cut tail packs with what follows
    assert " ".join(passages[2:]) == f"{huge} Tail here."


# Two letters at least: a one-letter word before a period reads as an initial ("Evan L. Morris") by design.
words = st.text(alphabet="abcdefghij", min_size=2, max_size=8)
sentence = st.lists(words, min_size=1, max_size=60).map(
    lambda ws: ws[0].capitalize() + " " + " ".join(ws[1:]) + "."
)


@settings(max_examples=60, deadline=None)
@given(st.lists(sentence, min_size=1, max_size=30), st.integers(5, 120))
def test_property_no_sentence_cut_and_nothing_lost(sentences, target):
    text = " ".join(sentences)
    passages = split_passages(text, target_words=target, hard_cap_words=target * 3)
    assert " ".join(passages).split() == text.split()
    for passage in passages:
        pieces = split_sentences(passage)
        assert len(passage.split()) <= target or len(pieces) == 1
    boundaries = {len(" ".join(sentences[: i + 1]).split()) for i in range(len(sentences))}
    cut = 0
    for passage in passages[:-1]:
        cut += len(passage.split())
        long_sentence = any(len(s.split()) > target * 3 for s in sentences)
        assert cut in boundaries or long_sentence


def test_sentence_spans_are_offsets_and_a_mask_may_open_a_sentence():
    text = "Evan L. Morris was born in [mask]. [mask] was founded in 1990.\n  New line here! (Yes) he did."
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "Evan L. Morris was born in [mask].",
        "[mask] was founded in 1990.",
        "New line here!",
        "(Yes) he did.",
    ]
    assert [text[a:b] for a, b in spans] == split_sentences(text)
