"""``ramp experiment ramp-effect``: does RAMP pretraining help a policy learn to answer two-hop questions?

A controlled experiment in generated worlds (:mod:`ramp.experiment.world`, one per seed), every stage the
real one, each a fingerprinted stage (:mod:`ramp.stages`: a changed setting reruns exactly what depends on
it). Per seed (:mod:`ramp.cli.ramp_effect_data` makes its data), from one seeded random initialisation:

- **A**: RAMP SFT on the oracle's trajectories (the Megatron path) -> DAPO on RAMP tasks with the mask-count
  curriculum -> QA stage;
- **A-mixed** (ablation): A with DAPO on every mask count at once;
- **B**: the QA stage only;
- **C**: next-token pretraining on the world's articles, as many rows as A's RAMP SFT -> QA stage: a
  positive A - C is more than "any pretraining on the world's text".

Every arm's QA stage is QA SFT on the training questions, with its steps, learning rate and share of the
arm's earlier data mixed in chosen by one grid on the dev questions of one world (:class:`QAGrid`); the
choice is reused by every seed. After RAMP SFT the **gate** measures the copy rate on held-out RAMP tasks;
after each stage of A the held-out RAMP copy rate and answer reward and the zero-shot first-query accuracy
on the test questions are recorded. Arms are compared on the held-out questions with paired intervals
over seeds and a verdict (:mod:`ramp.experiment.statistics`).

The run has three phases on one pool of ``workers`` processes (one torch thread each): every seed's
stages before its QA stage; the QA grid on one world; every seed's QA stages and evaluations. Each job
logs to ``OUTPUT/logs/``; a job whose stages are all done is skipped without a worker; the console
shows one line per stage and a progress bar.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from ramp.agent.config import RolloutConfig
from ramp.cli.ramp_effect_data import build_seed_data
from ramp.eval.run import run_eval
from ramp.experiment.config import RampEffectConfig, stage_config
from ramp.experiment.measures import question_outcomes, summarize_outcomes
from ramp.experiment.ramp_eval import HeldOutTask, evaluate_ramp, held_out_tasks
from ramp.experiment.report import collect, format_tables, plot
from ramp.experiment.world import read_jsonl
from ramp.finetune.dapo import train
from ramp.finetune.sft import run_sft, sft_overrides
from ramp.logs import quiet_logs
from ramp.prompts import load_templates
from ramp.retrieval.env import SearchEnv
from ramp.retrieval.lucene import LuceneRetriever
from ramp.stages import Stage, StageRunner, run_stage
from ramp.tracking import mlflow_run
from ramp.train.init import init_policy
from ramp.workers import Job, WorkerPool

DATASET = "world"
PRE_QA = {"A": "A/dapo/policy", "A-mixed": "A-mixed/dapo/policy", "B": "init", "C": "C/lm/policy"}
EARLIER = {"A": "A/ramp-sft/shards", "A-mixed": "A/ramp-sft/shards", "C": "C/lm/shards"}  # mixed into QA
WORKER = f"{__name__}:run_seed_job"  # a worker process's job (ramp.workers)
A_MEASURED = ("init", "ramp-sft", "dapo")  # A's stages measured before its QA stage
Echo = Callable[[str], None]


@dataclass(frozen=True)
class QAChoice:
    """One QA-stage setting of the grid (``mix``: share of the arm's earlier data in the QA rows)."""

    steps: int
    lr: float
    mix: float

    @property
    def name(self) -> str:
        return f"s{self.steps}-lr{self.lr:g}-mix{self.mix:g}"


class SeedRun:
    """The stages of one experiment seed under ``OUTPUT/seed-N``."""

    def __init__(self, config: RampEffectConfig, seed: int) -> None:
        self.config, self.seed = config, seed
        self.root = Path(config.output) / f"seed-{seed}"
        self.data = self.root / "data"
        self.uri = f"sqlite:///{(self.root / 'stages.db').resolve()}"  # the stages' own MLflow runs

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # -- phase 1: data, init, A's RAMP SFT and DAPO, A-mixed's DAPO, C's pretraining, A's measurements
    def setup(self) -> list[Stage]:
        """The seed's world and data, and its initial policy (every arm's and recipe's cold start)."""
        c = self.config
        data_fields = {
            "world",
            "questions",
            "prompts",
            "search",
            "draws",
            "renamed_copies",
            "data",
            "answerability",
        }
        data_settings = c.model_dump(mode="json", include=data_fields)
        data = Stage(
            "data",
            lambda: build_seed_data(c, self.seed, self.data),
            settings={**data_settings, "seed": self.seed},
            outputs=(self.data,),
            command=f"(world {c.world.seed + self.seed} -> ramp data build/answerability, oracle)",
        )
        return [data, self._init()]

    def before_qa(self) -> list[Stage]:
        stages = [
            *self.setup(),
            self.sft("A/ramp-sft", "ramp_sft", self.data / "ramp-trajectories", self.path("init")),
            self._dapo("A", "staged"),
            self.sft("C/lm", "ramp_sft", self.data / "lm-articles", self.path("init")),  # A's rows
        ]
        stages += [self._measure("A", stage) for stage in A_MEASURED]
        if self.config.ablation:
            stages += [self._dapo("A-mixed", "mixed"), self._measure("A-mixed", "dapo")]
        return stages

    def _init(self) -> Stage:
        init_cfg = self.config.init.model_copy(
            update={"model": self.config.init.model.model_copy(update={"seed": self.seed})}
        )
        corpus = (self.data / "world" / "articles.jsonl", self.data / "qa-train.jsonl")
        return Stage(
            "init",
            lambda: init_policy(list(corpus), self.path("init"), init_cfg),
            settings=init_cfg,
            inputs=corpus,
            outputs=(self.path("init"),),
            command=f"ramp pretrain init --corpus {corpus[0]} --output {self.path('init')}",
        )

    def sft(
        self,
        name: str,
        recipe: str,
        trajectories: Path,
        start: Path,
        overrides: dict[str, Any] | None = None,
        blend: Sequence[tuple[float, Path]] = (),
    ) -> Stage:
        """SFT through the Megatron stage (``ramp finetune sft``) into ``OUTPUT/seed-N/NAME``, with the
        experiment's ``recipe`` settings (``ramp_sft`` or ``qa_sft``) and ``overrides`` on top."""
        out = self.path(name)
        values: dict[str, Any] = {
            **sft_overrides(out),
            **(overrides or {}),
            "model.hf": str(start),
            "model.init": "hf",
            "train.seed": self.seed,
            "tracking.tracking_uri": self.uri,
            "tracking.run_name": name,
            "checkpoint.resume": False,
        }
        if blend:
            share = sum(w for w, _ in blend)
            values["data.blend"] = [
                str(1 - share),
                str(out / "shards"),
                *(x for w, p in blend for x in (str(w), str(p))),
            ]
        cfg = stage_config(self.config, recipe, values)
        inputs = (trajectories, start, *(p for _, p in blend))
        return Stage(
            name,
            lambda: run_sft(trajectories, out, cfg),
            settings=cfg,
            inputs=inputs,
            outputs=(out,),
            command=f"ramp finetune sft --trajectories {trajectories} --output {out}",
        )

    def _dapo(self, arm: str, mode: str) -> Stage:
        out = self.path(arm, "dapo")
        policy = self.path("A", "ramp-sft", "policy")
        cfg = stage_config(
            self.config,
            "dapo",
            {
                "policy.model": str(policy),
                "retriever.kind": "lucene",
                "retriever.index": str(self.data / "index"),
                "data.task": "ramp",
                "data.samples": str(self.data / "rl-heldout"),  # tasks RAMP SFT never saw: the gate's
                "data.prompts": self.config.prompts,
                "search": self.config.search.model_dump(mode="json"),
                "curriculum.mode": mode,
                "curriculum.seed": self.seed,
                "rollout.seed": self.seed,
                "trainer.seed": self.seed,
                "trainer.output_dir": str(out),
                "trainer.mlflow_uri": self.uri,
                "trainer.run_name": f"{arm}-dapo",
                "trainer.progress": False,
                "trainer.threads": 1,
                "trainer.resume": False,
            },
        )
        return Stage(
            f"{arm}/dapo",
            lambda: train(cfg),
            settings=cfg,
            inputs=(policy, self.data / "rl-heldout", self.data / "index"),
            outputs=(out,),
            command=f"ramp rl train --set policy.model={policy} --set curriculum.mode={mode}",
        )

    def _measure(self, arm: str, stage: str) -> Stage:
        """``arm``'s policy after ``stage``: held-out RAMP tasks (copy rate, answer reward) and zero-shot
        questions (first-query accuracy before any QA training)."""
        policy = self.path("init") if stage == "init" else self.path(arm, stage, "policy")
        out = self.path(arm, "measures", stage)
        inputs = ("rl-heldout", "rl-heldout-entities", "qa-test.jsonl", "index")
        return Stage(
            f"{arm}/measure-{stage}",
            lambda: self.measure(policy, out),
            settings={k: getattr(self.config, k) for k in ("gate", "search", "eval", "prompts")},
            inputs=(policy, *(self.data / name for name in inputs)),
            outputs=(out,),
            command=f"(held-out RAMP tasks and zero-shot questions with {policy})",
        )

    def measure(self, policy: Path, out: Path) -> None:
        templates = load_templates(self.config.prompts)
        eval_cfg = stage_config(self.config, "eval")
        rollout = RolloutConfig(**eval_cfg.agent.rollout.model_dump())
        out.mkdir(parents=True, exist_ok=True)
        retriever = LuceneRetriever(self.data / "index", threads=1)
        try:
            env = SearchEnv(retriever, self.config.search)
            results = {}
            for name in ("heldout", "heldout-entities"):
                tasks = [
                    HeldOutTask(t, s)
                    for t, s in held_out_tasks(self.data / f"rl-{name}", templates, self.config.gate.tasks)
                ]
                results[name] = evaluate_ramp(policy, tasks, env, rollout, rows_path=out / f"{name}.jsonl")
        finally:
            retriever.close()
        results["zero_shot"] = self.evaluate_questions(policy, out / "zero-shot", "qa-test.jsonl")
        (out / "measures.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    def evaluate_questions(
        self, policy: Path, out: Path, questions: str, inference: str = "agent", uri: str | None = None
    ) -> dict[str, float]:
        """``ramp eval run`` of ``policy`` on a question file of the seed's data (``inference``: the eval
        policy, ``agent`` or ``decompose``; ``uri``: its MLflow store, default the seed's); the metrics."""
        cfg = stage_config(
            self.config,
            "eval",
            {
                "policy": inference,
                "output_dir": str(out),
                "tracking_uri": uri or self.uri,
                "run_name": str(out.relative_to(self.root)),
                "agent.backend.hf.model": str(policy),
                "agent.search": self.config.search.model_dump(mode="json"),
                "agent.prompts": self.config.prompts,
                "retriever.kind": "lucene",
                "retriever.index": str(self.data / "index"),
                "datasets": [{"name": DATASET, "loader": "flashrag", "path": str(self.data / questions)}],
            },
        )
        run_eval(cfg, progress=False)
        rows = pq.read_table(out / "predictions.parquet").to_pylist()
        facts = {r["id"]: r for r in read_jsonl(self.data / questions)}
        outcomes = question_outcomes(rows, facts)
        (out / "outcomes.json").write_text(json.dumps(outcomes, sort_keys=True) + "\n")
        return summarize_outcomes(outcomes)

    # -- phase 2: the QA grid (on this seed's world) -----------------------------------------------------
    def grid(self, arm: str, choice: QAChoice) -> list[Stage]:
        name = f"grid/{arm}/{choice.name}"
        sft = self._qa_sft(name, arm, choice, self.data / "qa-grid-trajectories")
        policy, out = self.path(name, "policy"), self.path(name, "dev")
        evaluate = Stage(
            f"{name}/dev",
            lambda: self._write(out, self.evaluate_questions(policy, out / "eval", "qa-dev.jsonl")),
            settings={"eval": self.config.eval, "search": self.config.search, "prompts": self.config.prompts},
            inputs=(policy, self.data / "qa-dev.jsonl"),
            outputs=(out,),
            command=f"ramp eval run --set agent.backend.hf.model={policy}",
        )
        return [sft, evaluate]

    def _qa_sft(self, name: str, arm: str, choice: QAChoice, trajectories: Path) -> Stage:
        earlier = EARLIER.get(arm)
        blend = [(choice.mix, self.path(earlier))] if earlier and choice.mix > 0 else []
        overrides = {"train.steps": choice.steps, "optim.lr": choice.lr, "optim.min_lr": choice.lr / 10}
        return self.sft(name, "qa_sft", trajectories, self.path(PRE_QA[arm]), overrides, blend)

    # -- phase 3: every arm's QA stage and evaluation ------------------------------------------------------
    def qa(self, arm: str, choice: QAChoice) -> list[Stage]:
        sft = self._qa_sft(f"{arm}/qa", arm, choice, self.data / "qa-trajectories")
        policy, out = self.path(arm, "qa", "policy"), self.path(arm, "eval")
        stages = [
            sft,
            Stage(
                f"{arm}/eval",
                lambda: self._write(out, self.evaluate_questions(policy, out / "eval", "qa-test.jsonl")),
                settings={
                    "eval": self.config.eval,
                    "search": self.config.search,
                    "prompts": self.config.prompts,
                },
                inputs=(policy, self.data / "qa-test.jsonl"),
                outputs=(out,),
                command=f"ramp eval run --set agent.backend.hf.model={policy}",
            ),
        ]
        if arm == "A":
            stages.append(self._measure("A", "qa"))
        return stages

    @staticmethod
    def _write(out: Path, summary: dict[str, float]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def grid_choices(config: RampEffectConfig, arm: str) -> list[QAChoice]:
    """The grid of one arm (B has no earlier data to mix in: its grid has mix 0 only)."""
    grid = config.qa_grid
    mixes = grid.mix if arm in EARLIER else [0.0]
    return [QAChoice(s, lr, m) for s, lr, m in itertools.product(grid.steps, grid.lr, sorted(set(mixes)))]


def dev_score(summary: dict[str, float]) -> float:
    """What the grid maximises on the dev questions: first-query accuracy plus EM."""
    return summary["first_query_accuracy"] + summary["exact_match"]


# ---------------------------------------------------------------------------------------- processes


def job_stages(config: RampEffectConfig, phase: str, seed: int, arm: str, choice: Any) -> list[Stage]:
    """A job's stages: one seed's stages of a phase, or one grid point."""
    run = SeedRun(config, seed)
    if phase == "before_qa":
        return run.before_qa()
    if phase == "grid":
        return run.grid(arm, QAChoice(*choice))
    return run.qa(arm, QAChoice(*choice))


def run_seed_job(config_json: str, phase: str, seed: int, arm: str, choice: list[Any], events: Any) -> None:
    """A worker's job: its stages (:func:`job_stages`), each through the stage primitive, reported to the
    parent as events."""
    torch.set_num_threads(1)
    config = RampEffectConfig.model_validate_json(config_json)
    state = SeedRun(config, seed).root / ".stages"
    for stage in job_stages(config, phase, seed, arm, choice):
        events.put(("start", seed, stage.name))
        started = time.monotonic()
        try:
            outcome = run_stage(stage, state, echo=print)
        except BaseException as err:
            traceback.print_exc()  # into the worker's log
            events.put(
                ("FAILED", seed, stage.name, time.monotonic() - started, f"{type(err).__name__}: {err}")
            )
            raise SystemExit(1) from None
        events.put((outcome.status, seed, stage.name, time.monotonic() - started))


def seed_job_done(config: RampEffectConfig, job: tuple[str, int, str, Any]) -> list[str] | None:
    """The names of the job's stages when every one is done (its worker would only skip them), else None."""
    phase, seed, arm, choice = job
    stages = job_stages(config, phase, seed, arm, choice)
    runner = StageRunner(SeedRun(config, seed).root / ".stages")
    return [s.name for s in stages] if all(runner.done(s) for s in stages) else None


def run_jobs(
    pool: WorkerPool,
    jobs: Sequence[tuple[str, int, str, Any]],
    config: Any,
    echo: Echo,
    total: int,
    done: Callable[[tuple[str, int, str, Any]], list[str] | None],
    keep_going: bool = False,
) -> list[str]:
    """Run ``jobs`` (phase, seed, arm, choice) on ``pool``'s workers, each called with the config as JSON;
    print one line per stage as workers report them, with a progress bar over ``total`` stages. A job
    whose stages are all ``done`` is reported skipped without a worker. A failed job fails the run, or
    with ``keep_going`` the others go on and the failed jobs' names are returned."""
    with tqdm(total=total, desc="stages", unit="stage", leave=False) as bar:
        todo = []
        for job in jobs:
            finished = done(job)
            for name in finished or ():
                _report(("skipped", job[1], name, 0.0), bar, echo)
            if finished is None:
                name = f"seed-{job[1]}-{job[0]}{'-' + job[2] if job[2] else ''}"
                todo.append(Job(name, (config.model_dump_json(), *job)))
        return pool.run(todo, lambda event: _report(event, bar, echo), keep_going)


def _report(event: tuple[Any, ...], bar: Any, echo: Echo) -> None:
    bar.update(event[0] != "start")
    with bar.external_write_mode():
        echo(_event_line(event))
        sys.stdout.flush()


def _event_line(event: tuple[Any, ...]) -> str:
    status, seed, name = event[:3]
    if status == "start":
        return f"[seed {seed}] {name:<28} start"
    line = f"[seed {seed}] {name:<28} {status:<7} {event[3]:.1f} s"
    return f"{line}  {event[4]}" if len(event) > 4 else line


# ------------------------------------------------------------------------------------------- the run


def run_experiment(config: RampEffectConfig, echo: Echo = print) -> dict[str, Any]:
    """Phase 1 for every seed, the QA grid on one world, phase 3 for every seed; then the results."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"  # inherited by the workers
    seeds = range(config.seeds)
    arms = config.arms()
    echo(f"RAMP effect -> {out}: {config.seeds} seeds, arms {', '.join(arms)}; logs in {out / 'logs'}")
    done = partial(seed_job_done, config)
    with WorkerPool(config.workers, WORKER, out / "logs") as pool:
        phase1 = [("before_qa", s, "", None) for s in seeds]
        run_jobs(pool, phase1, config, echo, sum(len(SeedRun(config, s).before_qa()) for s in seeds), done)
        grid = [(arm, choice) for arm in arms for choice in grid_choices(config, arm)]
        tuner = SeedRun(config, config.qa_grid.seed)
        grid_jobs = [("grid", tuner.seed, arm, _astuple(c)) for arm, c in grid]
        run_jobs(pool, grid_jobs, config, echo, 2 * len(grid), done)
        scores = {
            (arm, c): dev_score(_json(tuner.path(f"grid/{arm}/{c.name}", "dev", "summary.json")))
            for arm, c in grid
        }
        chosen = {
            arm: max(
                (c for a, c in grid if a == arm), key=lambda c: (scores[(arm, c)], -c.steps, -c.lr, -c.mix)
            )
            for arm in arms
        }
        phase3 = [("qa", s, arm, _astuple(chosen[arm])) for s in seeds for arm in arms]
        total = sum(len(SeedRun(config, s).qa(arm, chosen[arm])) for s in seeds for arm in arms)
        run_jobs(pool, phase3, config, echo, total, done)
    results = collect(out, config.seeds, arms, config.gate.threshold)
    results["grid"] = _grid_report(tuner, grid, scores, chosen)
    (out / "results.md").write_text(format_tables(results), encoding="utf-8")
    plot(results, out / "ramp_effect.png")
    with quiet_logs(out, "mlflow"):
        results["mlflow_run_id"] = log_to_mlflow(config, results, out)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return results


def _astuple(choice: QAChoice) -> list[Any]:
    return [choice.steps, choice.lr, choice.mix]


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _grid_report(
    tuner: SeedRun,
    grid: Sequence[tuple[str, QAChoice]],
    scores: dict[tuple[str, QAChoice], float],
    chosen: dict[str, QAChoice],
) -> dict[str, Any]:
    """Every grid point's dev score, the choice per arm and the grid's cost (wall and CPU seconds)."""
    markers = [
        tuner.root / ".stages" / f"{name}.json"
        for arm, c in grid
        for name in (f"grid/{arm}/{c.name}", f"grid/{arm}/{c.name}/dev")
    ]
    recorded = [_json(m) for m in markers if m.exists()]
    return {
        "world_seed": tuner.config.world.seed + tuner.seed,
        "points": [{"arm": arm, **vars(c), "dev_score": scores[(arm, c)]} for arm, c in grid],
        "chosen": {arm: vars(c) for arm, c in chosen.items()},
        "cost_wall_s": sum(r.get("wall_s", 0.0) for r in recorded),
        "cost_cpu_s": sum(r.get("cpu_s", 0.0) for r in recorded),
    }


def log_to_mlflow(config: RampEffectConfig, results: dict[str, Any], out: Path) -> str:
    """One parent run (headline metrics, differences, the tables, the plot) with a child per arm and seed."""
    with mlflow_run(
        config.tracking.experiment, out.name, config.model_dump(mode="json"), uri=config.tracking.tracking_uri
    ) as mlflow:
        parent = mlflow.active_run().info.run_id
        mlflow.set_tag("verdict", results["verdict"])
        mlflow.log_metric("gate/ramp_copy_rate", results["gate"]["ramp_copy_rate"])
        log_rows(mlflow, "arm", results["arms"], results, (out / "results.md", out / "ramp_effect.png"))
    return str(parent)


def log_rows(
    mlflow: Any,
    kind: str,
    rows: dict[str, dict[str, Any]],
    results: dict[str, Any],
    artifacts: Sequence[Path],
    params: Callable[[str], dict[str, Any]] = lambda name: {},
) -> None:
    """Into the active (parent) run: each row's means (``ROW/metric``), the differences' means
    (``diff/NAME/metric``) and ``artifacts``; then a child run per row and seed with its per-seed values
    and params ``{kind: row, seed, world_seed, **params(row)}``. Row entries that are not metrics are
    skipped."""
    metrics = {name: {m: v for m, v in row.items() if isinstance(v, dict)} for name, row in rows.items()}
    for name, values in metrics.items():
        mlflow.log_metrics({f"{name}/{m}": v["mean"] for m, v in values.items()})
    for name, diffs in results["differences"].items():
        mlflow.log_metrics({f"diff/{name}/{m}": d["mean"] for m, d in diffs.items()})
    for path in artifacts:
        mlflow.log_artifact(str(path))
    for name, values in metrics.items():
        for n, seed in enumerate(results["seeds"]):
            with mlflow.start_run(run_name=f"{name}-seed{seed['seed']}", nested=True):
                mlflow.log_params(
                    {kind: name, "seed": seed["seed"], "world_seed": seed["world_seed"], **params(name)}
                )
                mlflow.log_metrics({m: v["per_seed"][n] for m, v in values.items()})


# ------------------------------------------------------------------------------------- the demo's world


def run_world_demo(config: RampEffectConfig, echo: Echo = print) -> dict[str, Any]:
    """A's stages before QA on one small world, in this process (``make demo``'s world stage): data, init,
    RAMP SFT, DAPO with the curriculum, and the held-out RAMP measures after each; writes ``world.json`` and
    ``world.png`` (copy rate and answer reward per stage, DAPO's reward per step) under ``config.output``."""
    run = SeedRun(config, 0)
    keep = {"data", "init", "A/ramp-sft", "A/dapo", *(f"A/measure-{s}" for s in A_MEASURED)}
    for stage in (s for s in run.before_qa() if s.name in keep):
        with quiet_logs(config.output, stage.name.replace("/", "-")):
            outcome = run_stage(stage, run.root / ".stages", echo=lambda line: None)
        echo(f"  world {stage.name:<20} {outcome.status}")
    measures = {s: _json(run.path("A", "measures", s, "measures.json"))["heldout"] for s in A_MEASURED}
    history = read_jsonl(run.path("A", "dapo", "history.jsonl"))
    summary = {
        "copy_rate": {s: m["copy_rate"] for s, m in measures.items()},
        "answer_reward": {s: m["answer_reward"] for s, m in measures.items()},
        "dapo_reward": [row["reward/answer"] for row in history],
        "dapo_stage": [int(row["curriculum/stage"]) for row in history],
    }
    out = Path(config.output)
    (out / "world.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")  # stages in order
    plot_world_demo(summary, out / "world.png")
    return summary


def plot_world_demo(summary: dict[str, Any], path: Path) -> None:
    """Held-out RAMP copy rate and answer reward after each stage of A; DAPO's answer reward per step."""
    figure = Figure(figsize=(10, 3.6))
    stages, curve = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    names = list(summary["copy_rate"])
    x = np.arange(len(names))
    stages.bar(x - 0.2, [summary["copy_rate"][n] for n in names], 0.4, label="copy rate (first query)")
    stages.bar(x + 0.2, [summary["answer_reward"][n] for n in names], 0.4, label="answer reward")
    stages.set_xticks(x, names)
    stages.set_ylim(0, 1)
    stages.set_title("held-out RAMP tasks after each stage")
    stages.legend(loc="upper left", fontsize=8)
    steps = np.arange(1, len(summary["dapo_reward"]) + 1)
    curve.plot(steps, summary["dapo_reward"], marker="o")
    for step, stage in zip(steps, summary["dapo_stage"], strict=True):
        curve.annotate(f"s{stage}", (step, summary["dapo_reward"][step - 1]), fontsize=7)
    curve.set_xlabel("DAPO step")
    curve.set_ylabel("answer reward (batch mean)")
    curve.set_title("DAPO with the mask-count curriculum")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
