"""Scoring equals the official HotpotQA answer metrics (values worked out by hand from
hotpot_evaluate_v1.py's rules), aggregates, comparison tables and the built-in policy's question parsing."""

from __future__ import annotations

import pytest

from ramp.data.samples import MASK_TOKEN
from ramp.qa.builtin import choice_options, is_yes_no, masked_question
from ramp.qa.loaders import QARecord
from ramp.qa.scoring import PolicyAnswer, comparison_table, markdown_table, result_row, score, summarize

# (prediction, gold, official EM, official F1). Official normalisation: lower, drop string.punctuation,
# drop a/an/the, collapse whitespace; F1 is 0 when either normalised side is yes/no/noanswer and differs.
OFFICIAL = [
    ("yes", "yes", 1.0, 1.0),
    ("Yes.", "yes", 1.0, 1.0),
    ("No", "no", 1.0, 1.0),
    ("no way", "no", 0.0, 0.0),  # gold is "no": no partial credit
    ("yes", "yes sir", 0.0, 0.0),  # prediction is "yes" and differs: 0 despite the overlap
    ("noanswer", "no answer", 0.0, 0.0),
    ("", "yes", 0.0, 0.0),
    ("the Chief of Protocol of the United States", "Chief of Protocol", 0.0, 2 / 3),  # P 3/6, R 3/3
    ("1462", "1,462", 1.0, 1.0),
    ("3,677", "3,677 seated", 0.0, 2 / 3),  # P 1/1, R 1/2
    ("Greenwich Village", "Greenwich Village, New York City", 0.0, 4 / 7),  # P 1, R 2/5
    ("An apple a day", "apple day", 1.0, 1.0),
    ("Terry Richardson", "Annie Morton", 0.0, 0.0),
]


@pytest.mark.parametrize(("prediction", "gold", "em", "f1"), OFFICIAL)
def test_em_and_f1_equal_the_official_script(prediction, gold, em, f1):
    scores = score(prediction, [gold])
    assert scores["exact_match"] == em
    assert scores["f1"] == pytest.approx(f1, abs=1e-12)


def test_token_recall_and_missing_prediction():
    assert score("3,677", ["3,677 seated"])["token_recall"] == 0.5
    assert score("Chief of Protocol of the United States", ["Chief of Protocol"])["token_recall"] == 1.0
    assert score(None, ["Paris"]) == {"exact_match": 0.0, "f1": 0.0, "token_recall": 0.0}
    assert score("Darwin", ["Charles Darwin", "Darwin"])["exact_match"] == 1.0  # best over the golds


def _row(dataset: str, position: int, prediction: str | None, gold: str, type_: str, searches: int) -> dict:
    record = QARecord(f"{dataset}-{position}", "q?", (gold,), {"type": type_})
    answer = PolicyAnswer(prediction, "answer", searches + 1, ["q"] * searches, [["d"]] * searches)
    return result_row(dataset, position, record, answer)


def test_summary_per_dataset_type_and_macro():
    rows = [
        _row("hotpotqa", 0, "yes", "yes", "comparison", 1),  # EM 1, F1 1
        _row("hotpotqa", 1, "3,677", "3,677 seated", "bridge", 2),  # EM 0, F1 2/3, recall 1/2
        _row("hotpotqa", 2, None, "Paris", "bridge", 0),  # unanswered: 0
        _row("musique", 0, "Dodoma", "Dodoma", "2hop", 3),
    ]
    assert rows[2]["answered"] is False and rows[2]["prediction"] == ""
    summary = summarize(rows, ["hotpotqa", "musique"])
    assert summary["exact_match/hotpotqa"] == pytest.approx(1 / 3)
    assert summary["f1/hotpotqa"] == pytest.approx((1 + 2 / 3) / 3)
    assert summary["token_recall/hotpotqa"] == pytest.approx(1.5 / 3)
    assert summary["f1/hotpotqa/bridge"] == pytest.approx(1 / 3)
    assert summary["exact_match/hotpotqa/comparison"] == 1.0
    assert summary["exact_match/musique"] == 1.0
    assert summary["exact_match/macro"] == pytest.approx((1 / 3 + 1) / 2)  # mean of dataset means
    assert summary["questions/hotpotqa"] == 3 and summary["searches/hotpotqa"] == 1.0
    assert "judge/macro" not in summary
    for row in rows:
        row["judge"] = 1.0
    assert summarize(rows)["judge/macro"] == 1.0


def test_comparison_table_and_markdown():
    runs = [
        ("base", {"token_recall/hotpotqa": 0.25, "token_recall/macro": 0.25}, ["hotpotqa"]),
        (
            "ramp",
            {"token_recall/hotpotqa": 0.5, "token_recall/musique": 0.125, "token_recall/macro": 0.3125},
            ["hotpotqa", "musique"],
        ),
    ]
    header, rows = comparison_table(runs, "token_recall")
    assert header == ["run", "hotpotqa", "musique", "macro"]
    assert rows == [["base", "25.0", "-", "25.0"], ["ramp", "50.0", "12.5", "31.2"]]
    assert markdown_table(header, rows).splitlines() == [
        "| run | hotpotqa | musique | macro |",
        "|---|---|---|---|",
        "| base | 25.0 | - | 25.0 |",
        "| ramp | 50.0 | 12.5 | 31.2 |",
    ]


def test_builtin_question_shapes():
    assert masked_question("What government position was held by the woman who portrayed X?") == (
        f"{MASK_TOKEN} government position was held by the woman who portrayed X"
    )
    assert masked_question("The war ended when ?") == f"The war ended {MASK_TOKEN}"
    assert masked_question("Name the capital of France") == f"Name the capital of France {MASK_TOKEN}"
    assert choice_options("Who is older, Annie Morton or Terry Richardson?") == [
        "Annie Morton",
        "Terry Richardson",
    ]
    assert choice_options("Which is bigger: the Manchester Terrier or the Scotch Collie?") == [
        "Manchester Terrier",
        "Scotch Collie",
    ]
    assert choice_options("Who is older than Annie Morton?") == []
    assert is_yes_no("Were Scott Derrickson and Ed Wood of the same nationality?")
    assert not is_yes_no("Which band, Letters to Cleo or Screaming Trees, had more members?")
