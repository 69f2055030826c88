"""`make demo` at the CI size (configs/demo/ci.yaml): every stage end to end, its outputs, the MLflow run read
back through the client, a rerun that skips everything without touching a file, `--force` of a stage that
writes the same bytes again (nothing downstream reruns), and a changed setting that reruns exactly the stages
it decides (the stage rule itself: tests/test_stages.py)."""

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

from ramp.cli.demo import (
    EXPERIMENT,
    NEAR_ZERO_NOTE,
    Demo,
    load_demo_config,
    write_training_questions,
)
from ramp.errors import UserError

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
    "world": "world/world.png",
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


def _mtimes(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``out``: its modification time (ns) and inode (a file replaced has a new one)."""
    return {
        str(p.relative_to(out)): (p.stat().st_mtime_ns, p.stat().st_ino)
        for p in out.rglob("*")
        if p.is_file()
    }


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


def test_the_world_stage_measures_arm_a_before_and_after_each_stage(demo: DemoRun) -> None:
    """The world stage: arm A before QA on one small world, the held-out RAMP copy rate and answer reward
    after each of its stages and DAPO's reward at every step, in world.json, the plot and the table."""
    world = json.loads((demo.out / "world/world.json").read_text())
    assert (
        list(world["copy_rate"]) == list(world["answer_reward"]) == ["init", "ramp-sft", "dapo"]
    )  # in order
    assert all(0.0 <= v <= 1.0 for v in [*world["copy_rate"].values(), *world["dapo_reward"]])
    dapo = json.loads((demo.out / "world/seed-0/.stages/A/dapo.json").read_text())["settings"]
    assert len(world["dapo_reward"]) == len(world["dapo_stage"]) == dapo["trainer"]["total_steps"]
    assert re.search(r"^world\s+ran\s.*held-out RAMP copy rate", demo.first, re.M)


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


def test_force_of_a_stage_that_writes_the_same_bytes_reruns_nothing_downstream(demo: DemoRun) -> None:
    corpus = next((demo.out / "eval/corpus").glob("passages-*.parquet"))
    before, content = corpus.stat().st_mtime_ns, corpus.read_bytes()
    forced = _status(demo.run("--force", "--only", "eval-corpus"))
    assert forced == {"eval-corpus": ["start", "done"]}
    assert corpus.stat().st_mtime_ns != before and corpus.read_bytes() == content  # rewritten, same bytes
    statuses = _status(demo.run())
    assert all(s == ["skip"] for s in statuses.values()), statuses  # content decides, not time


def test_a_changed_setting_reruns_the_stages_it_decides(demo: DemoRun) -> None:
    before = _mtimes(demo.out)
    output = demo.run("--set", "eval_questions=4")
    statuses = _status(output)
    reran = {name for name, s in statuses.items() if s == ["start", "done"]}
    assert reran == {"eval-builtin", "eval", "report"}, statuses  # the setting's stages, then the report
    assert all(statuses[name] == ["skip"] for name in STAGE_OUTPUTS if name not in reran)
    # no file of a skipped stage (its outputs, its marker) was written again
    stages = Demo(load_demo_config(CI_CONFIG, output=str(demo.out))).stages()
    skipped = [s for s in stages if s.name not in reran]
    assert len(skipped) == len(STAGE_OUTPUTS) - len(reran)
    after = _mtimes(demo.out)
    for stage in skipped:
        files = [f".stages/{stage.name}.json"]
        for path in stage.outputs:
            found = path.rglob("*") if path.is_dir() else [path]
            files += [str(f.relative_to(demo.out)) for f in found if f.is_file()]
        assert {f: after.get(f) for f in files} == {f: before.get(f) for f in files}, stage.name
    assert re.search(r"eval-builtin\s+start .*\(settings changed\)", output)
    for stage in ("builtin", "policy"):  # the outputs follow the new value
        assert pq.read_table(demo.out / f"eval/{stage}/predictions.parquet").num_rows == 4


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


def test_demo_config_errors_name_the_key() -> None:
    from ramp.config import ConfigError

    config = load_demo_config("configs/demo/ci.yaml", ["overrides.pretrain=[train.not_a_key=1]"])
    with pytest.raises(ConfigError, match="not_a_key"):
        Demo(config).stages()  # every stage's config is resolved before any stage runs
    with pytest.raises(ConfigError, match="not_a_key"):
        load_demo_config("configs/demo/ci.yaml", ["not_a_key=1"])
    stages = [s.name for s in Demo(load_demo_config("configs/demo/demo.yaml")).stages()]
    assert stages == [s for s in STAGE_OUTPUTS if s != "input"]  # the full demo reads the whole dump
