"""``ramp experiment recipes`` at CI size: every recipe of configs/recipes/ on one tiny world (its data,
index, cold start and synthesized questions made by the real jobs), a few steps each, each evaluated and in
the table; the forced search settings, the decompose-then-solve evaluation, MLflow, ``--only`` and reruns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from ramp.cli.recipe_comparison import COLD_START, run_comparison
from ramp.config import ConfigError, load_config
from ramp.cot.trajectories import read_trajectories
from ramp.experiment.config import RecipeComparisonConfig
from ramp.experiment.recipe_report import QUALITY, RECIPE_METRICS, recipe_dir
from ramp.experiment.world import read_jsonl
from ramp.qa.config import EvalConfig
from ramp.recipes import recipe_names


@pytest.fixture(scope="module")
def comparison(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[RecipeComparisonConfig, dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("recipes")
    cfg = load_config(
        RecipeComparisonConfig,
        "experiment/recipes_tiny",
        [f"output={root / 'run'}", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}"],
    )
    return cfg, run_comparison(cfg, echo=lambda line: None), root


def test_every_recipe_runs_and_writes_its_row(
    comparison: tuple[RecipeComparisonConfig, dict[str, Any], Path],
) -> None:
    cfg, results, _ = comparison
    out = Path(cfg.output)
    assert list(results["recipes"]) == [COLD_START, *recipe_names()] == [COLD_START, *cfg.recipes]
    assert results["recipes"][COLD_START]["stages"] == [] and not results["failed"]
    questions = len(read_jsonl(out / "seed-0" / "data" / "qa-test.jsonl"))
    for name, row in results["recipes"].items():
        assert set(RECIPE_METRICS) <= set(row) and (row["stages"] or name == COLD_START)
        assert (row["train_cpu_s"]["mean"] > 0) == (name != COLD_START) and row["tokens_per_question"][
            "mean"
        ] > 0
        predictions = pq.read_table(recipe_dir(out, 0, name) / "eval" / "eval" / "predictions.parquet")
        assert predictions.num_rows == questions
    assert results["recipes"]["masksearch"]["extra_data"].endswith("RAMP tasks")
    assert "synthesized questions" in results["recipes"]["webdancer"]["extra_data"]
    assert results["recipes"]["search-r1"]["extra_data"] == "none"
    assert set(results["differences"]) == {COLD_START, *cfg.recipes} - {"masksearch"}
    for diffs in results["differences"].values():
        assert set(diffs) == set(QUALITY)
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in cfg.recipes) and "recipe − masksearch" in table
    assert (out / "recipes.png").stat().st_size > 0


def test_every_recipe_searches_the_worlds_index_at_its_top_k(
    comparison: tuple[RecipeComparisonConfig, dict[str, Any], Path],
) -> None:
    """search-r1's file asks for top-3, asearcher's for top-5: the comparison runs them at the world's."""
    cfg, _, _ = comparison
    top_k = cfg.world().search.top_k
    for name, stage in (("search-r1", "0-ppo"), ("asearcher", "0-async_rl"), ("acesearcher", "1-dpo")):
        marker = recipe_dir(Path(cfg.output), 0, name) / ".stages" / f"{stage}.json"
        settings = json.loads(marker.read_text())["settings"]["config"]
        assert settings["search"]["top_k"] == top_k
        assert settings["retriever"]["index"] == str(Path(cfg.output) / "seed-0" / "data" / "index")


def test_acesearcher_answers_by_decompose_then_solve(
    comparison: tuple[RecipeComparisonConfig, dict[str, Any], Path],
) -> None:
    cfg, _, _ = comparison
    folder = recipe_dir(Path(cfg.output), 0, "acesearcher") / "eval" / "eval"
    rows = pq.read_table(folder / "predictions.parquet").to_pylist()
    budget = EvalConfig.model_fields["decompose"].default.max_subquestions  # one search per sub-question
    assert all(r["finish_reason"] == "answer" for r in rows)  # the solver always answers
    assert all(len(r["queries"]) <= budget and len(r["retrieved_ids"]) == len(r["queries"]) for r in rows)
    assert all(len(ids) <= cfg.world().search.top_k for r in rows for ids in r["retrieved_ids"])
    assert all(r["model_tokens"] > 0 for r in rows)


def test_synthesized_questions_are_verified_by_their_searches(
    comparison: tuple[RecipeComparisonConfig, dict[str, Any], Path],
) -> None:
    cfg, _, _ = comparison
    folder = Path(cfg.output) / "seed-0" / "synthesized"
    summary = json.loads((folder / "summary.json").read_text())
    kept = read_jsonl(folder / "questions.jsonl")
    assert (
        summary["kept"] == len(kept) > 0 and summary["kept"] + summary["rejected"] == summary["synthesized"]
    )
    trajectories = {t.sample_id: t for t in read_trajectories(folder / "trajectories")}
    for row in kept:
        made = trajectories[row["id"]]
        chain = row["metadata"]["chain"]
        assert made.verified and len(made.queries) == len(chain) + 1
        assert made.queries[-1] == row["metadata"]["seed_question"]


def test_a_rerun_skips_every_stage_and_only_runs_one_recipe(
    comparison: tuple[RecipeComparisonConfig, dict[str, Any], Path],
) -> None:
    cfg, first, root = comparison
    markers = sorted(Path(cfg.output).glob("seed-*/**/.stages/*.json"))
    logs = sorted(Path(cfg.output).glob("logs/seed-*.log"))  # the jobs' logs: a job run on a worker appends
    before = {p: p.stat().st_mtime_ns for p in [*markers, *logs]}
    again = run_comparison(cfg, only=["research"], echo=lambda line: None)
    assert {p: p.stat().st_mtime_ns for p in [*markers, *logs]} == before  # no job even started a worker
    assert again["recipes"] == first["recipes"] and again["differences"] == first["differences"]
    with pytest.raises(ValueError, match="not among the recipes"):
        run_comparison(cfg, only=["no-such-recipe"], echo=lambda line: None)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    parent = client.get_run(first["mlflow_run_id"])
    assert parent.data.metrics["webdancer/f1"] == first["recipes"]["webdancer"]["f1"]["mean"]
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == sorted(
        f"{n}-seed0" for n in [COLD_START, *cfg.recipes]
    )


def test_a_typo_in_a_recipes_sets_fails_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="totl_steps"):
        load_config(
            RecipeComparisonConfig,
            "experiment/recipes_tiny",
            [f"output={tmp_path}", "recipe_sets.research.grpo=[trainer.totl_steps=2]"],
        )
    with pytest.raises(ConfigError, match="no stage"):
        load_config(RecipeComparisonConfig, "experiment/recipes_tiny", ["recipe_sets.research.nope=[x=1]"])
    assert not any(tmp_path.iterdir())


def test_a_failing_recipe_is_a_row_of_failure_and_the_others_go_on(
    comparison: tuple[RecipeComparisonConfig, dict[str, Any], Path],
) -> None:
    """Dynamic sampling on from a tiny policy that never answers: webdancer's DAPO finds no group with
    reward spread and stops; the comparison records it (table, results.json, an MLflow child tagged
    failed) and keeps every other row. Run last: it replaces webdancer's results in the shared output."""
    cfg, first, root = comparison
    sets = {"webdancer": {"dapo": ["algorithm.filter_groups=true", "algorithm.max_num_gen_batches=1"]}}
    failing = cfg.model_copy(update={"recipe_sets": sets})
    results = run_comparison(failing, only=["webdancer"], echo=lambda line: None)
    assert results["failed"]["webdancer"][0]["error"].startswith("DynamicSamplingExhausted")
    assert "webdancer" not in results["recipes"] and "webdancer" not in results["differences"]
    assert results["recipes"]["zerosearch"] == first["recipes"]["zerosearch"]
    table = (Path(cfg.output) / "results.md").read_text()
    assert "| webdancer | failed on seed 0: DynamicSamplingExhausted" in table
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    parent = client.get_run(results["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    failed = [r for r in children if r.data.tags.get("status") == "failed"]
    assert [r.info.run_name for r in failed] == ["webdancer-seed0"]
