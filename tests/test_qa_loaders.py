"""QA loaders on the real HotpotQA files, FanoutQA's packaged dev set and official-layout samples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ramp.config import ConfigError, load_config
from ramp.qa import DATASETS, QADataError, load_qa
from ramp.qa.config import EvalConfig
from ramp.qa.loaders import flatten_answer, write_qa_jsonl
from ramp.rl.config import RLConfig
from ramp.rl.episodes import load_tasks

DATA = Path(__file__).resolve().parent.parent / "data"
SAMPLES = Path(__file__).resolve().parent / "data" / "qa"


def test_hotpotqa_official_distractor_file():
    records = load_qa("hotpotqa", DATA / "hotpotqa-dev-distractor-53.json")
    assert len(records) == 53
    first = records[0]
    assert first.id == "5a8b57f25542995d1e6f1371"
    assert first.question == "Were Scott Derrickson and Ed Wood of the same nationality?"
    assert first.golden_answers == ("yes",)
    assert first.type == "comparison"
    assert first.metadata["level"] == "hard"
    assert first.metadata["supporting_titles"] == ["Scott Derrickson", "Ed Wood"]
    assert Counter(r.type for r in records) == {"bridge": 39, "comparison": 14}
    raw = json.loads((DATA / "hotpotqa-dev-distractor-53.json").read_text(encoding="utf-8"))
    assert [r.golden_answers[0] for r in records] == [q["answer"] for q in raw]


def test_hotpotqa_simplified_jsonl_and_limit():
    records = load_qa("hotpotqa", DATA / "hotpotqa-dev-500.jsonl")
    assert len(records) == 500
    assert records[0].id == "hotpot_dev_14"
    assert records[0].golden_answers == ("from 1986 to 2013",)
    assert records[0].type == "bridge"
    assert [r.id for r in load_qa("hotpotqa", DATA / "hotpotqa-dev-500.jsonl", limit=3)] == [
        r.id for r in records[:3]
    ]


def test_fanoutqa_dev_set_from_its_package():
    records = load_qa("fanoutqa")
    assert len(records) == 310
    by_id = {r.id: r for r in records}
    first = by_id["7dcbbbdc7f1120cd"]
    assert first.golden_answers == (
        "Pat Burrell: Right, Mark Mulder: Left, Corey Patterson: Left, Jeff Austin: Right, JD Drew: Left",
    )
    assert first.metadata["answer_parts"][0] == "Pat Burrell: Right"
    assert all(len(r.golden_answers) == 1 and r.golden_answers[0] for r in records)


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("Spain", ["Spain"]),
        (4, ["4"]),
        (1.5, ["1.5"]),
        (True, ["yes"]),
        (False, ["no"]),
        (["a", 2], ["a", "2"]),
        ({"Amazon": 1541000, "Apple": {"CEO": "Tim Cook"}}, ["Amazon: 1541000", "Apple: CEO: Tim Cook"]),
    ],
)
def test_fanoutqa_answers_flatten_to_strings(value, parts):
    assert flatten_answer(value) == parts


def test_two_wiki_official_layout():
    records = load_qa("2wikimultihopqa", SAMPLES / "2wikimultihopqa-dev-sample.json")
    assert [r.type for r in records] == ["comparison", "compositional", "bridge_comparison"]
    assert records[1].golden_answers == ("Michael Curtiz", "Mihály Kertész")
    assert records[0].metadata["supporting_titles"] == ["Casablanca (film)", "Citizen Kane"]


def test_musique_official_layout():
    records = load_qa("musique", SAMPLES / "musique-ans-dev-sample.jsonl")
    assert [r.id for r in records] == ["2hop__100_200", "3hop1__300_400_500"]
    assert [r.type for r in records] == ["2hop", "3hop1"]
    assert records[0].golden_answers == ("Dodoma", "Dodoma, Tanzania")
    assert records[0].metadata["supporting_titles"] == ["Mount Kilimanjaro", "Tanzania"]


def test_bamboogle_csv():
    records = load_qa("bamboogle", SAMPLES / "bamboogle-sample.csv")
    assert [r.id for r in records] == ["bamboogle_0", "bamboogle_1", "bamboogle_2"]
    assert records[1].question.startswith("What is the capital of the country where the Eiffel Tower")
    assert records[2].golden_answers == ("1851",)


def test_freshqa_csv_skips_note_rows_and_collects_answers():
    records = load_qa("freshqa", SAMPLES / "freshqa-sample.csv")
    assert [r.id for r in records] == ["0", "1", "2"]
    assert records[0].golden_answers == ("2", "two")
    assert records[1].golden_answers == ("George Orwell", "Eric Arthur Blair")
    assert records[0].type == "never-changing"
    assert records[2].metadata["false_premise"] == "TRUE"


def test_flashrag_jsonl():
    records = load_qa("flashrag", SAMPLES / "flashrag-sample.jsonl")
    assert records[0].golden_answers == ("Charles Darwin", "Darwin")
    assert records[0].type == "single-hop"
    assert records[1].type == ""


def test_hub_name_loads_through_datasets(tmp_path):
    # datasets.load_dataset resolves a local directory the same way as a hub repository (no network here)
    (tmp_path / "test.jsonl").write_text((SAMPLES / "flashrag-sample.jsonl").read_text(), encoding="utf-8")
    records = load_qa("flashrag", f"hub:{tmp_path}")
    assert [r.id for r in records] == ["test_0", "test_1"]


def test_bad_records_name_file_line_and_field(tmp_path):
    array = tmp_path / "hotpot.json"
    array.write_text(
        '[\n  {"_id": "a", "question": "Q?", "answer": "x"},\n  {"_id": "b",\n   "question": "Q2?"}\n]\n',
        encoding="utf-8",
    )
    with pytest.raises(QADataError, match=rf"{array}:3: field 'answer' is missing"):
        load_qa("hotpotqa", array)
    lines = tmp_path / "flash.jsonl"
    lines.write_text('{"id": "1", "question": "q", "golden_answers": ["a"]}\n{"id": "2", "question": "q"}\n')
    with pytest.raises(QADataError, match=rf"{lines}:2: field 'golden_answers' is missing"):
        load_qa("flashrag", lines)
    lines.write_text('{"id": "1", "question": "q", "golden_answers": [7, {"x": 1}]}\n')
    with pytest.raises(QADataError, match=r":1: field 'golden_answers': every answer must be a non-empty"):
        load_qa("flashrag", lines)
    lines.write_text('{"id": "1", "question": "q", "golden_answers": ["a"]}\nnot json\n')
    with pytest.raises(QADataError, match=rf"{lines}:2: not JSON"):
        load_qa("flashrag", lines)
    lines.write_text('{"id": "1", "question": "q", "golden_answers": ["a"]}\n' * 2)
    with pytest.raises(QADataError, match="duplicate id '1'"):
        load_qa("flashrag", lines)
    csv_file = tmp_path / "bamboogle.csv"
    csv_file.write_text("Question,Answer\nWho?,Someone\nWhat?,\n", encoding="utf-8")
    with pytest.raises(QADataError, match=rf"{csv_file}:3: field 'Answer' is empty"):
        load_qa("bamboogle", csv_file)
    csv_file.write_text("Q,A\nWho?,Someone\n", encoding="utf-8")
    with pytest.raises(QADataError, match="no header row with the columns Question, Answer"):
        load_qa("bamboogle", csv_file)


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(QADataError) as err:
        load_qa("triviaqa", tmp_path / "x.json")
    assert "unknown dataset 'triviaqa'" in str(err.value)
    assert all(name in str(err.value) for name in DATASETS)
    with pytest.raises(QADataError, match="needs a path"):
        load_qa("musique")
    with pytest.raises(QADataError, match="no such file"):
        load_qa("musique", tmp_path / "missing.jsonl")


def test_qa_sets_feed_the_rl_trainer(tmp_path):
    """`ramp finetune rl` writes a loaded QA set as the JSONL the DAPO trainer's QA task reads."""
    records = load_qa("musique", SAMPLES / "musique-ans-dev-sample.jsonl")
    assert write_qa_jsonl(records, tmp_path / "qa.jsonl") == 2
    values = {
        "retriever": {"kind": "lucene", "index": "unused"},
        "data": {"task": "qa", "qa": str(tmp_path / "qa.jsonl")},
    }
    tasks = load_tasks(load_config(RLConfig, values=values))
    assert [(t.task_id, t.kind, t.golds, t.source) for t in tasks] == [
        (r.id, "qa", r.golden_answers, r.question) for r in records
    ]


def test_eval_config_names_bad_datasets():
    base = {"retriever": {"kind": "lucene", "index": "idx"}}
    with pytest.raises(
        ConfigError, match="unknown dataset 'trivia'; known datasets: hotpotqa, 2wikimultihopqa"
    ):
        load_config(EvalConfig, values={**base, "datasets": [{"name": "trivia"}]})
    twice = [{"name": "hotpotqa"}, {"name": "hotpotqa"}]
    with pytest.raises(ConfigError, match="dataset names must be unique"):
        load_config(EvalConfig, values={**base, "datasets": twice})
    with pytest.raises(ConfigError, match=r"rollout.n must be 1"):
        load_config(EvalConfig, values={**base, "datasets": twice[:1], "agent": {"rollout": {"n": 2}}})
