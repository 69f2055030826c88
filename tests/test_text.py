import pytest

from ramp.metrics import exact_match, f1, normalize_answer, token_recall
from ramp.text import PROFILES, content_tokens, normalize


def test_squad_profile_is_the_official_rule():
    assert normalize("The  Eiffel-Tower, in Paris!", "squad") == "eiffeltower in paris"
    assert normalize("Zürich", "squad") == "zürich"  # no accent folding in the official rule
    assert normalize("1990–1995", "squad") == "1990–1995"  # the en dash is not ASCII punctuation
    assert normalize_answer is not None and normalize_answer("An apple") == normalize("An apple", "squad")


def test_ramp_profile_folds_unicode_then_squad():
    assert normalize("1990–1995", "ramp") == normalize("1990-1995", "ramp") == "19901995"
    assert normalize("Zürich, Switzerland", "ramp") == "zurich switzerland"
    assert normalize("“Quoted” — text", "ramp") == "quoted text"
    assert normalize("O’Brien", "ramp") == normalize("O'Brien", "ramp") == "obrien"
    assert normalize("ﬁnal Ｔｅｓｔ", "ramp") == "final test"  # NFKC
    assert normalize("The", "ramp") == ""
    assert normalize("«Le Monde»", "ramp") == "le monde"


def test_metrics_name_their_profile():
    assert token_recall("1990-1995", "1990–1995") == 0.0  # squad: evaluation rule unchanged
    assert token_recall("1990-1995", "1990–1995", profile="ramp") == 1.0
    assert exact_match("Zurich", "Zürich", profile="ramp") == 1.0 and exact_match("Zurich", "Zürich") == 0.0
    assert f1("no", "no way", profile="ramp") == 0.0  # the yes/no rule holds in every profile


def test_unknown_profile_is_an_error():
    assert PROFILES == ("squad", "ramp")
    with pytest.raises(ValueError, match="unknown normalisation profile"):
        normalize("x", "other")  # type: ignore[arg-type]


def test_content_tokens_skip_stop_words_and_possessives_and_split_hyphens():
    assert content_tokens("the City of Abbotsford") == ["city", "abbotsford"]
    assert content_tokens("Hobkirk's Hill") == ["hobkirk", "hill"]
    assert content_tokens("the Mid-Atlantic Ridge") == ["mid", "atlantic", "ridge"]
    assert content_tokens("1,000 people in 3.5 years") == ["1000", "people", "35", "years"]
