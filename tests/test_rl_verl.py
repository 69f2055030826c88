"""verl export: RL parquet layout, one file per k, unique ids, compute_score on ramp's rewards, and the
run's files (their loading by verl itself: tests/test_verl_*.py, in verl's environment)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml
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
    args = ["rl", "export-verl", "--samples", str(samples), "--qa", f"hotpotqa={qa}", "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--set", "curriculum.stages=[1,2]"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "agent_loop.yaml",
        "hotpotqa.parquet",
        "launch.sh",
        "ramp-k1.parquet",
        "ramp-k1.yaml",
        "ramp-k2.parquet",
        "ramp-k2.yaml",
        "ramp_dapo.yaml",
        "tool_config.yaml",
    ]
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
    assert row["extra_info"]["tools_kwargs"] == {
        "search": {"create_kwargs": {"exclude_doc_ids": [f"p{len(PEOPLE)}"]}}
    }
    assert row["agent_name"] == "ramp_search"
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


def _export(tmp_path, *overrides: str):
    _, samples = build_corpus(tmp_path / "task")
    args = ["rl", "export-verl", "--samples", str(samples), "--output", str(tmp_path / "verl")]
    return CliRunner().invoke(app, args + [a for o in overrides for a in ("--set", o)])


def test_export_verl_writes_the_curriculum_stages_and_launch(tmp_path):
    result = _export(tmp_path, "curriculum.stages=[2,1]", "curriculum.steps_per_stage=7", "rollout.n=4")
    assert result.exit_code == 0, result.output
    out = (tmp_path / "verl").resolve()
    launch = (out / "launch.sh").read_text()
    assert "STAGES=(ramp-k2 ramp-k1)" in launch  # the recipe's order
    stage = yaml.safe_load((out / "ramp-k2.yaml").read_text())
    assert stage["defaults"] == ["ramp_dapo", "_self_"]
    assert stage["data"]["train_files"] == [str(out / "ramp-k2.parquet")]
    assert stage["trainer"]["total_training_steps"] == 7
    base = yaml.safe_load((out / "ramp_dapo.yaml").read_text())
    assert base["actor_rollout_ref"]["rollout"]["n"] == 4
    assert base["data"]["val_files"] == [str(out / "ramp-k2.parquet")]  # no QA set: the first stage
    assert base["reward"]["custom_reward_function"]["path"] == "pkg://ramp.rl.verl"
    tools = yaml.safe_load((out / "tool_config.yaml").read_text())["tools"]
    assert tools[0]["class_name"] == "ramp.finetune.verl_agent.RampSearchTool"
    assert tools[0]["config"]["retriever_url"] == "http://127.0.0.1:8000"


def test_export_verl_mixed_mode_is_one_stage(tmp_path):
    result = _export(tmp_path, "curriculum.mode=mixed", "trainer.total_steps=9")
    assert result.exit_code == 0, result.output
    out = tmp_path / "verl"
    assert (out / "ramp.parquet").exists() and not (out / "ramp-k1.parquet").exists()
    assert yaml.safe_load((out / "ramp.yaml").read_text())["trainer"]["total_training_steps"] == 9
    assert "STAGES=(ramp)" in (out / "launch.sh").read_text()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("curriculum.stages=[1,2,3]", "no exported samples with [3] masks"),
        ("curriculum.steps_per_stage=null", "set curriculum.steps_per_stage"),
    ],
)
def test_export_verl_refuses_a_curriculum_verl_cannot_run(tmp_path, override, message):
    result = _export(tmp_path, override)
    assert result.exit_code != 0 and message in str(result.exception)
