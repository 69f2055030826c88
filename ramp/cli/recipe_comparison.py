"""``ramp experiment recipes``: which recipe teaches a policy to search best, on one world, one retriever,
one cold start and one evaluation?

Per seed (each its own world, :class:`ramp.cli.ramp_effect.SeedRun`): the world's data and initial policy,
its one-search fact questions, WebDancer's synthesized questions (``ramp data synthesize`` on the fact
questions, with the world oracle's trajectories) and the cold start every recipe starts from (the initial
policy after SFT on the oracle's fact-question trajectories; evaluated too, the table's first row). Then
every recipe
(:func:`ramp.cli.recipes.recipe_stages`: its stages, each fingerprinted) with the world's search settings
(top-k, document length) forced on every stage that searches, and its evaluation on the seed's held-out
questions (the agent loop, or decompose-then-solve for AceSearcher's). Jobs run on a pool of ``workers``
spawned processes (one torch thread each), logging to ``OUTPUT/logs/``; a job whose stages are all done
runs no worker. A rerun recomputes exactly what a changed
setting decides; ``--only NAME`` runs one recipe (the table then holds the recipes whose results exist).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ramp.agent.task import Task, task_from_qa
from ramp.cli.ramp_effect import Echo, SeedRun, log_rows, run_jobs
from ramp.cli.ramp_effect_data import world_seed, write_trajectories
from ramp.cli.recipes import STATE_DIR, RecipeData, recipe_stages, stage_output
from ramp.config import ConfigError
from ramp.cot.trajectories import Trajectory
from ramp.data.synthesis import SynthesisSettings
from ramp.experiment.config import RecipeComparisonConfig, flatten
from ramp.experiment.oracle import fact_trajectory, synthesized_trajectory
from ramp.experiment.recipe_report import (
    EVAL_STAGE,
    collect_recipes,
    format_recipe_table,
    plot_recipes,
    recipe_dir,
)
from ramp.experiment.world import fact_questions, generate_world, read_jsonl, write_jsonl
from ramp.logs import quiet_logs
from ramp.pipelines.synthesize import run_synthesize
from ramp.prompts import load_templates
from ramp.recipes import RL_KINDS, Recipe, load_recipe
from ramp.retrieval.env import SearchConfig, SearchEnv
from ramp.retrieval.lucene import LuceneRetriever
from ramp.seeding import record_rng
from ramp.stages import Stage, StageRunner, run_stage
from ramp.tracking import mlflow_run
from ramp.workers import WorkerPool

WORKER = f"{__name__}:run_recipe_job"
COLD_START = "cold-start"
FAILED = "failed.json"  # in a recipe's directory: the stage that failed and the error
SEARCHING_KINDS = RL_KINDS | {"dpo"}  # stages whose settings hold a search section


def synthesized_dir(run: SeedRun) -> Path:
    return run.path("synthesized")


def facts_dir(run: SeedRun) -> Path:
    return run.path("facts")


def build_facts(config: RecipeComparisonConfig, run: SeedRun) -> dict[str, Any]:
    """The world's one-search fact questions (``questions.jsonl``: synthesis's seeds) and the oracle's
    trajectories of a seeded ``cold_start.questions`` of them (the cold start's SFT data); a question whose
    search does not show its answer goes to ``rejected.jsonl`` with the reason."""
    world_cfg = run.config
    world = generate_world(
        seed=world_seed(world_cfg, run.seed), **world_cfg.world.model_dump(exclude={"seed"})
    )
    out = facts_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    rows = fact_questions(world)
    write_jsonl(out / "questions.jsonl", rows)
    drawn = sorted(rows, key=lambda r: record_rng(world.seed, r["id"], "cold start").random())
    made = _oracle(run, drawn[: config.cold_start.questions], fact_trajectory)
    write_trajectories(out / "trajectories", made["trajectories"])
    write_jsonl(out / "rejected.jsonl", made["rejected"])
    return {
        "questions": len(rows),
        "trajectories": len(made["trajectories"]),
        "rejected": len(made["rejected"]),
    }


def build_synthesized(config: RecipeComparisonConfig, run: SeedRun) -> dict[str, Any]:
    """WebDancer's questions for one seed: the world's fact questions made harder by ``ramp data
    synthesize`` against the seed's index, each with the world oracle's trajectory; a question whose
    trajectory fails verification goes to ``rejected.jsonl`` with its reason."""
    out = synthesized_dir(run)
    settings = SynthesisSettings(
        retriever={"kind": "lucene", "index": str(run.data / "index")},  # type: ignore[arg-type]
        synth=config.synthesis,
    )
    stats = run_synthesize(facts_dir(run) / "questions.jsonl", out / "job", settings, chunk_mb=0)
    rows = [r for f in sorted((out / "job").glob("questions-*.jsonl")) for r in read_jsonl(f)]
    made = _oracle(run, rows, synthesized_trajectory)
    kept = {t.sample_id for t in made["trajectories"]}
    write_jsonl(out / "questions.jsonl", [r for r in rows if r["id"] in kept])
    write_jsonl(out / "rejected.jsonl", made["rejected"])
    write_trajectories(out / "trajectories", made["trajectories"])
    summary = {
        "seeds": stats["seeds_in"],
        "synthesized": len(rows),
        "kept": len(kept),
        "rejected": len(made["rejected"]),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


def _oracle(
    run: SeedRun,
    rows: Sequence[dict[str, Any]],
    make: Callable[[Task, dict[str, Any], SearchEnv], Trajectory | str],
) -> dict[str, list[Any]]:
    """The world oracle's trajectory of each question row, or its rejection with the reason."""
    templates = load_templates(run.config.prompts)
    trajectories, rejected = [], []
    retriever = LuceneRetriever(run.data / "index", threads=1)
    try:
        env = SearchEnv(retriever, run.config.search)
        for row in rows:
            made = make(task_from_qa(row, templates), row, env)
            if isinstance(made, str):
                rejected.append({"id": row["id"], "reason": made})
            else:
                trajectories.append(made)
    finally:
        retriever.close()
    return {"trajectories": trajectories, "rejected": rejected}


def setup_stages(config: RecipeComparisonConfig, run: SeedRun) -> list[Stage]:
    """One seed's world data and initial policy, its fact questions, synthesized questions and cold start."""
    oracle = {"prompts": run.config.prompts, "search": run.config.search}
    facts, synthesized = facts_dir(run), synthesized_dir(run)
    stages = [
        *run.setup(),
        Stage(
            "facts",
            lambda: build_facts(config, run),
            settings={**oracle, "questions": config.cold_start.questions},
            inputs=(run.data / "index", run.data / "data.json"),
            outputs=(facts,),
            command="(the world's fact questions, oracle trajectories)",
        ),
        Stage(
            "synthesized",
            lambda: build_synthesized(config, run),
            settings={**oracle, "synthesis": config.synthesis},
            inputs=(run.data / "index", facts / "questions.jsonl"),
            outputs=(synthesized,),
            command=f"ramp data synthesize --seeds {facts}/questions.jsonl --output {synthesized}/job",
        ),
    ]
    if config.cold_start.steps:
        overrides = {**flatten(config.cold_start.sft), "train.steps": config.cold_start.steps}
        stages.append(run.sft(COLD_START, "qa_sft", facts / "trajectories", run.path("init"), overrides))
    return stages


def cold_start(config: RecipeComparisonConfig, run: SeedRun) -> Path:
    """The policy every recipe of the seed starts from."""
    return run.path(COLD_START, "policy") if config.cold_start.steps else run.path("init")


def recipe_data(run: SeedRun) -> RecipeData:
    """The seed's sets as a recipe reads them (DAPO's RAMP tasks: those RAMP SFT never trained on)."""
    synthesized = synthesized_dir(run)
    return RecipeData(
        index=str(run.data / "index"),
        ramp_samples=str(run.data / "rl-heldout"),
        ramp_trajectories=str(run.data / "ramp-trajectories"),
        qa=str(run.data / "qa-train.jsonl"),
        qa_trajectories=str(run.data / "qa-trajectories"),
        synthesized=str(synthesized / "questions.jsonl"),
        synthesized_trajectories=str(synthesized / "trajectories"),
        prompts=run.config.prompts,
    )


def recipe_sets(config: RecipeComparisonConfig, recipe: Recipe, search: SearchConfig) -> dict[str, list[str]]:
    """Each stage's sets: the comparison's sizes, then the world's search settings on every stage that
    searches (one retriever and top-k for every recipe)."""
    forced = [f"search.top_k={search.top_k}", f"search.max_chars_per_doc={search.max_chars_per_doc}"]
    return {
        stage.name: [
            *config.stage_sets_of(recipe.name, stage.name, stage.kind),
            *(forced if stage.kind in SEARCHING_KINDS else []),
        ]
        for stage in recipe.stages
    }


def evaluation_stage(run: SeedRun, inference: str, policy: Path, workdir: Path) -> Stage:
    """A policy on the seed's held-out questions (``workdir/eval/summary.json``), answering by
    ``inference`` (``agent`` or ``decompose``)."""
    out = workdir / "eval"

    def evaluate() -> None:
        summary = run.evaluate_questions(
            policy, out / "eval", "qa-test.jsonl", inference, tracking_uri(workdir)
        )
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")

    return Stage(
        EVAL_STAGE,
        evaluate,
        settings={
            "eval": run.config.eval,
            "search": run.config.search,
            "prompts": run.config.prompts,
            "inference": inference,
        },
        inputs=(policy, run.data / "qa-test.jsonl", run.data / "index"),
        outputs=(out,),
        command=f"ramp eval run --set policy={inference} --set agent.backend.hf.model={policy}",
    )


def job_steps(config: RecipeComparisonConfig, phase: str, seed: int, recipe: str) -> list[tuple[Stage, Path]]:
    """A job's stages and the state directory of each: one seed's setup stages and the cold start's
    evaluation, or one recipe's stages and its evaluation."""
    run = SeedRun(config.world(), seed)
    if phase == "setup":
        workdir = recipe_dir(Path(config.output), seed, COLD_START)
        setup = [(stage, run.root / ".stages") for stage in setup_stages(config, run)]
        evaluation = evaluation_stage(run, "agent", cold_start(config, run), workdir)
        return [*setup, (evaluation, workdir / ".stages")]
    chosen = load_recipe(recipe)
    workdir = recipe_dir(Path(config.output), seed, recipe)
    stages = recipe_stages(
        chosen,
        cold_start(config, run),
        workdir,
        recipe_data(run),
        recipe_sets(config, chosen, run.config.search),
        seed=seed,
        tracking_uri=tracking_uri(workdir),
    )
    state = workdir / STATE_DIR
    evaluation = evaluation_stage(run, chosen.inference, _final_policy(chosen, workdir), workdir)
    return [*((step, state) for _, step, _ in stages), (evaluation, workdir / ".stages")]


def step_names(phase: str, recipe: str, steps: Sequence[tuple[Stage, Path]]) -> list[str]:
    """A job's steps as its worker reports them: each setup stage, or the recipe's stages as one step;
    then the evaluation."""
    if phase == "setup":
        return [*(stage.name for stage, _ in steps[:-1]), f"{COLD_START}/eval"]
    return [recipe, f"{recipe}/eval"]


def recipe_job_done(config: RecipeComparisonConfig, job: tuple[str, int, str, Any]) -> list[str] | None:
    """The job's step names when every stage of it is done, else None (also when a stage's settings do
    not resolve: its worker then reports that as the recipe's failure)."""
    phase, seed, recipe, _ = job
    try:
        steps = job_steps(config, phase, seed, recipe)
    except ConfigError:
        return None
    done = all(StageRunner(state).done(stage) for stage, state in steps)
    return step_names(phase, recipe, steps) if done else None


def run_recipe_job(config_json: str, phase: str, seed: int, recipe: str, _: Any, events: Any) -> None:
    """A worker's job: one seed's setup stages, or one recipe of one seed and its evaluation."""
    torch.set_num_threads(1)
    config = RecipeComparisonConfig.model_validate_json(config_json)
    steps = job_steps(config, phase, seed, recipe)
    actions = [partial(_run, [step]) for step in steps]
    if phase == "recipe":
        actions = [partial(_run, steps[:-1]), actions[-1]]
    failure = recipe_dir(Path(config.output), seed, recipe) / FAILED
    failure.unlink(missing_ok=True)
    for name, action in zip(step_names(phase, recipe, steps), actions, strict=True):
        events.put(("start", seed, name))
        started = time.monotonic()
        try:
            status = action()
        except Exception as err:
            traceback.print_exc()  # into the worker's log
            error = " ".join(f"{type(err).__name__}: {err}".split())
            if phase == "recipe":  # the comparison goes on; the table names the failure
                failure.write_text(json.dumps({"step": name, "error": error}) + "\n", encoding="utf-8")
            events.put(("FAILED", seed, name, time.monotonic() - started, error))
            raise SystemExit(1) from None
        events.put((status, seed, name, time.monotonic() - started))


def _run(steps: Sequence[tuple[Stage, Path]]) -> str:
    """Run stages in order; "ran" if any ran, else "skipped"."""
    ran = [run_stage(stage, state, echo=print).status == "ran" for stage, state in steps]
    return "ran" if any(ran) else "skipped"


def tracking_uri(workdir: Path) -> str:
    """A recipe's own MLflow store (its stages' runs): jobs running side by side never share a file."""
    return f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def _final_policy(recipe: Recipe, workdir: Path) -> Path:
    """The policy after the recipe's last stage that trains it (a simulator stage does not)."""
    n = max(n for n, s in enumerate(recipe.stages) if s.kind != "simulator")
    return stage_output(workdir, n, recipe.stages[n]) / "policy"


def run_comparison(
    config: RecipeComparisonConfig, only: Sequence[str] = (), echo: Echo = print
) -> dict[str, Any]:
    """Every seed's setup, then every (seed, recipe) job; then the table, plot, results and MLflow runs
    over the recipes whose evaluations exist (all of them unless ``only`` names some)."""
    unknown = sorted(set(only) - set(config.recipes))
    if unknown:
        raise ValueError(f"--only {', '.join(unknown)}: not among the recipes {config.recipes}")
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # inherited by the workers
    chosen = list(only) or config.recipes
    seeds = range(config.seeds)
    echo(f"recipes -> {out}: {config.seeds} seeds, {len(chosen)} recipes; logs in {out / 'logs'}")
    finished = partial(recipe_job_done, config)
    with WorkerPool(config.workers, WORKER, out / "logs") as pool:
        setup = [("setup", s, "", None) for s in seeds]
        run_jobs(pool, setup, config, echo, 6 * len(setup), finished)
        jobs = [("recipe", s, name, None) for name in chosen for s in seeds]
        run_jobs(pool, jobs, config, echo, 2 * len(jobs), finished, keep_going=True)
    failed = {
        n: {s: json.loads(f.read_text()) for s in seeds if (f := recipe_dir(out, s, n) / FAILED).exists()}
        for n in config.recipes
    }
    done = [
        n
        for n in config.recipes
        if not failed[n] and all((recipe_dir(out, s, n) / "eval" / "summary.json").exists() for s in seeds)
    ]
    runs = [SeedRun(config.world(), s) for s in seeds]
    recipes: dict[str, Recipe | None] = {COLD_START: None, **{n: load_recipe(n) for n in done}}
    results = collect_recipes(out, config.seeds, recipes, config.reference, [_counts(r) for r in runs])
    results["failed"] = {n: f for n, f in failed.items() if f}
    results["cold_start"] = cold_start_name(config)
    (out / "results.md").write_text(format_recipe_table(results), encoding="utf-8")
    plot_recipes(results, out / "recipes.png")
    with quiet_logs(out, "mlflow"):
        results["mlflow_run_id"] = log_to_mlflow(config, results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return results


def cold_start_name(config: RecipeComparisonConfig) -> str:
    """What the table calls the checkpoint every recipe starts from."""
    if not config.cold_start.steps:
        return "the initial policy (ramp pretrain init: random weights, tokenizer fitted on the world)"
    return (
        f"the initial policy after {config.cold_start.steps} SFT steps on the oracle's trajectories of "
        f"{config.cold_start.questions} one-search fact questions (the question is the query)"
    )


def _counts(run: SeedRun) -> dict[str, int]:
    data = json.loads((run.data / "data.json").read_text(encoding="utf-8"))
    synthesized = json.loads((synthesized_dir(run) / "summary.json").read_text(encoding="utf-8"))
    return {
        "ramp_trajectories": data["ramp_trajectories"],
        "ramp_tasks": data["ramp_heldout_tasks"],
        "qa_trajectories": data["questions"]["train"],
        "synthesized": synthesized["kept"],
    }


def log_to_mlflow(config: RecipeComparisonConfig, results: dict[str, Any], out: Path) -> str:
    """One parent run (every recipe's means, the differences, the table and plot) with a child per recipe
    and seed (a failed one tagged ``status: failed`` with its error)."""
    with mlflow_run(
        config.tracking.experiment, out.name, config.model_dump(mode="json"), uri=config.tracking.tracking_uri
    ) as mlflow:
        parent = mlflow.active_run().info.run_id
        log_rows(
            mlflow,
            "recipe",
            results["recipes"],
            results,
            (out / "results.md", out / "recipes.png"),
            lambda name: {"stages": ",".join(results["recipes"][name]["stages"])},
        )
        for name, seeds in results["failed"].items():
            for seed, failure in seeds.items():
                with mlflow.start_run(run_name=f"{name}-seed{seed}", nested=True):
                    mlflow.log_params({"recipe": name, "seed": seed})
                    mlflow.set_tags(
                        {"status": "failed", "failed_step": failure["step"], "error": failure["error"]}
                    )
    return str(parent)
