"""`make demo` at the CI size (configs/demo/ci.yaml): every stage end to end, its outputs, the MLflow run read
back through the client, a rerun that skips everything, and `--force`; plus the stage runner's rules on toy
stages."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ramp.errors import UserError
from ramp.experiment.demo import (
    EXPERIMENT,
    NEAR_ZERO_NOTE,
    Demo,
    load_demo_config,
    write_training_questions,
)
from ramp.experiment.stages import Stage, StageRunner

ROOT = Path(__file__).resolve().parent.parent
RAMP = str(Path(sys.executable).parent / "ramp")
CI_CONFIG = "configs/demo/ci.yaml"

# What each stage must leave behind (globs under the demo's output directory).
STAGE_OUTPUTS = {
    "input": "input/*-12-pages.xml.bz2",
    "samples": "samples/samples-*.parquet",
    "index": "index/ramp-manifest.json",
    "answerable": "answerable/samples-*.parquet",
    "trajectories": "trajectories/trajectories-*.parquet",
    "policy": "init/model.safetensors",
    "shards": "pretrain/shards/packed-*.bin",
    "pretrain": "pretrain/checkpoints/latest_checkpointed_iteration.txt",
    "convert": "sft/policy/model.safetensors",
    "rl": "rl/policy/model.safetensors",
    "qa-train": "qa/hotpotqa-train.jsonl",
    "finetune": "finetune/policy/model.safetensors",
    "eval-corpus": "eval/corpus/passages-*.parquet",
    "eval-index": "eval/index/ramp-manifest.json",
    "eval-builtin": "eval/builtin/predictions.parquet",
    "eval": "eval/policy/predictions.parquet",
    "report": "plots/stage_times.png",
}


@dataclass
class DemoRun:
    out: Path
    first: str  # the console output of the first run

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [
                RAMP,
                "experiment",
                "demo",
                "--config",
                "configs/demo/ci.yaml",
                "--output",
                str(self.out),
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr


def _status(output: str) -> dict[str, list[str]]:
    """Stage name -> the statuses its progress lines show (start, done, skip)."""
    lines: dict[str, list[str]] = {}
    for name, status in re.findall(r"^\[\s*\d+/\d+\] (\S+)\s+(start|done|skip)\b", output, re.M):
        lines.setdefault(name, []).append(status)
    return lines


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    out = tmp_path_factory.mktemp("demo") / "demo-ci"
    run = DemoRun(out, "")
    run.first = run.run()
    yield run


def test_every_stage_ran_and_wrote_its_outputs(demo: DemoRun) -> None:
    statuses = _status(demo.first)
    assert list(statuses) == list(STAGE_OUTPUTS)
    assert all(s == ["start", "done"] for s in statuses.values()), statuses
    for stage, pattern in STAGE_OUTPUTS.items():
        assert list(demo.out.glob(pattern)), f"{stage}: nothing matches {pattern}"
        assert (demo.out / ".stages" / f"{stage}.json").exists()
    # the stages' own accounting: samples, kept answerable samples and verified trajectories all exist
    trajectories = json.loads((demo.out / "trajectories/stats.json").read_text())
    assert trajectories["kept"] > 0 and trajectories["accounted"]
    predictions = pq.read_table(demo.out / "eval/policy/predictions.parquet").to_pylist()
    assert len(predictions) == load_demo_config("configs/demo/ci.yaml").eval_questions


def test_the_table_ends_the_run(demo: DemoRun) -> None:
    tail = demo.first[demo.first.index("\nstage ") :]
    for stage in STAGE_OUTPUTS:
        if stage != "report":
            assert re.search(rf"^{re.escape(stage)}\s+ran\s+\d+\.\d", tail, re.M), stage
    assert "built-in search-and-read floor" in tail and "demo policy" in tail
    assert NEAR_ZERO_NOTE in tail
    assert str(demo.out / "plots/stage_times.png") in tail
    assert f"mlflow ui --backend-store-uri sqlite:///{demo.out.resolve()}/mlflow.db" in tail


def test_mlflow_run_read_back_through_the_client(demo: DemoRun) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{demo.out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    samples = json.loads((demo.out / "samples/stats.json").read_text())
    cot = json.loads((demo.out / "trajectories/stats.json").read_text())
    assert metrics["data/samples"] == samples["samples"]
    assert metrics["cot/trajectories"] == cot["kept"]
    assert metrics["cot/verified_yield"] == pytest.approx(cot["verified_yield"])
    assert math.isfinite(metrics["pretrain/final_loss"]) and metrics["pretrain/final_loss"] > 0
    for key in ("rl/reward_answer", "finetune/reward_answer", "eval/policy/exact_match", "eval/builtin/f1"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert {f"time/{s}_s" for s in STAGE_OUTPUTS if s != "report"} <= set(metrics)
    assert metrics["time/pretrain_s"] > 0 and metrics["cpu/pretrain_s"] > 0
    assert "plots/stage_times.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    # every training and evaluation stage logged its own run in the same store
    names = {
        r.info.run_name for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
    }
    assert {"demo-pretrain", "demo-rl", "demo-finetune", "demo-builtin", "demo-policy", "demo"} <= names


def test_rerun_skips_every_stage(demo: DemoRun) -> None:
    before = _mtimes(demo.out)
    output = demo.run()
    statuses = _status(output)
    assert list(statuses) == list(STAGE_OUTPUTS)
    assert all(s == ["skip"] for s in statuses.values()), statuses
    assert _mtimes(demo.out) == before  # nothing was rewritten: no stage did any work
    assert NEAR_ZERO_NOTE in output  # the table is printed again from the summary


def test_force_reruns_and_changed_inputs_rerun_downstream(demo: DemoRun) -> None:
    corpus = next((demo.out / "eval/corpus").glob("passages-*.parquet"))
    before = corpus.stat().st_mtime_ns
    forced = _status(demo.run("--force", "--only", "eval-corpus", "--only", "eval-index"))
    assert forced == {"eval-corpus": ["start", "done"], "eval-index": ["start", "done"]}
    assert corpus.stat().st_mtime_ns != before
    # the stages that read the rebuilt index run again; the ones upstream of it stay done
    statuses = _status(demo.run())
    reran = {name for name, s in statuses.items() if s == ["start", "done"]}
    assert reran == {"eval-builtin", "eval", "report"}, statuses
    assert all(statuses[name] == ["skip"] for name in STAGE_OUTPUTS if name not in reran)


def test_training_questions_exclude_the_evaluated_ones(demo: DemoRun) -> None:
    from ramp.qa.loaders import load_qa

    evaluated = {r.question for r in load_qa("hotpotqa", ROOT / "data/hotpotqa-dev-distractor-53.json")}
    train = [json.loads(line) for line in (demo.out / "qa/hotpotqa-train.jsonl").read_text().splitlines()]
    everything = load_qa("hotpotqa", ROOT / "data/hotpotqa-dev-500.jsonl")
    overlap = [r for r in everything if r.question in evaluated]
    assert overlap  # the bundled files do share questions ...
    assert not {row["question"] for row in train} & evaluated  # ... and none of them is trained on
    assert len(train) == len(everything) - len(overlap)


def test_training_questions_refuse_an_empty_split(tmp_path: Path) -> None:
    questions = ROOT / "data/hotpotqa-dev-distractor-53.json"
    with pytest.raises(UserError, match="every question"):
        write_training_questions(questions, questions, tmp_path / "train.jsonl")


# --- the stage runner on toy stages (no demo needed) ------------------------------------------------------


def _toy(tmp_path: Path, log: list[str]) -> list[Stage]:
    source, middle, final = tmp_path / "source.txt", tmp_path / "middle", tmp_path / "final.txt"

    def make_middle() -> None:
        log.append("middle")
        middle.mkdir()
        (middle / "part.txt").write_text(source.read_text().upper())

    def make_final() -> None:
        log.append("final")
        final.write_text((middle / "part.txt").read_text() + "!")

    return [
        Stage("middle", "upper source", make_middle, (source,), (middle,)),
        Stage("final", "exclaim middle", make_final, (middle,), (final,)),
    ]


def test_runner_skips_done_stages_and_reruns_what_changed(tmp_path: Path) -> None:
    (tmp_path / "source.txt").write_text("a")
    log: list[str] = []
    lines: list[str] = []
    runner = StageRunner(tmp_path / ".stages", lines.append)
    assert [o.status for o in runner.run(_toy(tmp_path, log))] == ["ran", "ran"]
    assert [o.status for o in runner.run(_toy(tmp_path, log))] == ["skipped", "skipped"]
    assert log == ["middle", "final"]
    assert any("skip" in line and "took" in line for line in lines)

    (tmp_path / "source.txt").write_text("bb")  # an input changed: the stage and everything after it rerun
    assert [o.status for o in runner.run(_toy(tmp_path, log))] == ["ran", "ran"]
    assert (tmp_path / "final.txt").read_text() == "BB!"

    (tmp_path / ".stages/final.json").unlink()  # a missing marker: that stage reruns, alone
    assert [o.status for o in runner.run(_toy(tmp_path, log))] == ["skipped", "ran"]

    (tmp_path / "final.txt").unlink()  # a missing output: reruns
    assert [o.status for o in runner.run(_toy(tmp_path, log))] == ["skipped", "ran"]

    assert [o.status for o in runner.run(_toy(tmp_path, log), force=True)] == ["ran", "ran"]
    assert [o.status for o in runner.run(_toy(tmp_path, log), only=["final"], force=True)] == ["ran"]


def test_runner_changed_command_reruns_and_failure_leaves_no_marker(tmp_path: Path) -> None:
    (tmp_path / "source.txt").write_text("a")
    log: list[str] = []
    runner = StageRunner(tmp_path / ".stages", lambda line: None)
    runner.run(_toy(tmp_path, log))
    changed = _toy(tmp_path, log)
    changed[1] = Stage(
        "final", "exclaim middle twice", changed[1].action, changed[1].inputs, changed[1].outputs
    )
    assert [o.status for o in runner.run(changed)] == ["skipped", "ran"]

    def broken() -> None:
        raise RuntimeError("boom")

    stages = _toy(tmp_path, log)
    stages[1] = Stage("final", "exclaim middle", broken, stages[1].inputs, stages[1].outputs)
    with pytest.raises(RuntimeError, match="boom"):
        runner.run(stages, force=True)
    assert not (tmp_path / ".stages/final.json").exists()
    assert not (tmp_path / "final.txt").exists()  # outputs are cleared before a stage runs

    silent = _toy(tmp_path, log)
    silent[1] = Stage("final", "write nothing", lambda: None, silent[1].inputs, silent[1].outputs)
    with pytest.raises(UserError, match="without writing"):
        runner.run(silent)
    with pytest.raises(UserError, match="unknown stage"):
        runner.run(_toy(tmp_path, log), only=["nope"])


def test_demo_config_errors_name_the_key() -> None:
    from ramp.config import ConfigError
    from ramp.experiment.demo import check_overrides

    config = load_demo_config("configs/demo/ci.yaml", ["overrides.pretrain=[train.not_a_key=1]"])
    with pytest.raises(ConfigError, match="not_a_key"):
        check_overrides(config)
    with pytest.raises(ConfigError, match="not_a_key"):
        load_demo_config("configs/demo/ci.yaml", ["not_a_key=1"])
    stages = [s.name for s in Demo(load_demo_config("configs/demo/demo.yaml")).stages()]
    assert stages == [s for s in STAGE_OUTPUTS if s != "input"]  # the full demo reads the whole dump
