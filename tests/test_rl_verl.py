"""verl export: RL parquet layout, one file per k, unique ids, and compute_score on ramp's rewards."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from rl_task import PEOPLE, TWO_MASKS, build_corpus
from typer.testing import CliRunner

from ramp.cli import app
from ramp.rewards import combined_reward
from ramp.rl.verl import compute_score

GOOD = (
    "<search> Perrin Vale</search>\n<result>\n[1] Perrin Vale\nfrom Oslo\n</result>\n"
    "<answer>\n[1] Oslo\n[2] 1901\n</answer>"
)


def test_export_verl_by_k_and_qa(tmp_path):
    _, samples = build_corpus(tmp_path / "task")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        "".join(
            json.dumps({"id": i, "question": f"q{i}?", "golden_answers": ["Paris", "paris"]}) + "\n"
            for i in range(3)
        )
    )
    out = tmp_path / "verl"
    result = CliRunner().invoke(
        app, ["rl", "export-verl", "--samples", str(samples), "--qa", f"hotpotqa={qa}", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["hotpotqa.parquet", "ramp-k1.parquet", "ramp-k2.parquet"]
    k1 = pq.read_table(out / "ramp-k1.parquet").to_pylist()
    k2 = pq.read_table(out / "ramp-k2.parquet").to_pylist()
    assert len(k1) == len(PEOPLE) and len(k2) == len(TWO_MASKS)
    row = next(r for r in k2 if r["extra_info"]["index"] == f"ramp:person-{len(PEOPLE)}")
    assert row["data_source"] == "ramp" and row["ability"] == "search-mask-filling"
    assert [m["role"] for m in row["prompt"]] == ["system", "user"] and "[mask]" in row["prompt"][1][
        "content"
    ]
    assert row["reward_model"] == {
        "style": "rule",
        "ground_truth": {"target": [["Oslo"], ["1901"]], "num_masks": 2},
    }
    assert row["extra_info"]["exclude_doc_ids"] == [f"p{len(PEOPLE)}"]
    qa_rows = pq.read_table(out / "hotpotqa.parquet").to_pylist()
    assert [r["extra_info"]["index"] for r in qa_rows] == ["hotpotqa:0", "hotpotqa:1", "hotpotqa:2"]
    assert qa_rows[0]["reward_model"]["ground_truth"] == {"target": [["Paris", "paris"]], "num_masks": 0}

    # compute_score reads exactly what was exported (pandas gives numpy arrays: lists work the same)
    truth = row["reward_model"]["ground_truth"]
    scored = compute_score(row["data_source"], GOOD, truth, row["extra_info"])
    expected = combined_reward(GOOD, ["Oslo", "1901"], num_masks=2)
    assert scored == {
        "score": expected.total,
        "answer": 1.0,
        "format": 1.0,
    } and expected.total == pytest.approx(1.2)
    half = GOOD.replace("1901", "1902")
    assert compute_score("ramp", half, truth)["answer"] == 0.5
    qa_truth = qa_rows[0]["reward_model"]["ground_truth"]
    assert compute_score("hotpotqa", "<answer>The Paris</answer>", qa_truth)["answer"] == 1.0
    assert compute_score("hotpotqa", "Paris", qa_truth)["score"] == 0.0  # no answer block: format fails


def test_export_verl_needs_an_input(tmp_path):
    result = CliRunner().invoke(app, ["rl", "export-verl", "--output", str(tmp_path)])
    assert result.exit_code != 0
