"""``ramp experiment ramp-effect``: does RAMP pretraining help a policy learn to answer two-hop questions?

A controlled experiment in a generated world (:mod:`ramp.experiment.world`), every stage the real one:

1. data, once for all arms (``OUTPUT/data``): the world's articles -> ``ramp data build`` (spans tagged by
   the generator: ``spans.extractor=tagged``) -> ``ramp index build`` -> ``ramp data answerability`` ->
   RAMP trajectories and QA trajectories of the training questions from the world oracle
   (:mod:`ramp.experiment.oracle`: real searches and result blocks); questions that two searches do not
   answer are set aside (``questions-unverified.jsonl``) and the chained facts must need the earlier value.
2. per seed (one process each, one torch thread), from the same random initialisation
   (``ramp pretrain init``, seeded):

   - **A** (RAMP): SFT on the RAMP trajectories through the Megatron path -> DAPO on the RAMP samples with
     the mask-count curriculum -> QA SFT on the training questions;
   - **A-mixed** (ablation): A with DAPO on all mask counts at once;
   - **B** (no RAMP): QA SFT only, for as many optimizer steps on as many rows as A's three stages
     together (:func:`arm_b_steps`), so B trains on at least A's tokens (DAPO episodes are shorter than a
     packed row; A's rollout generation is extra compute on top).

3. evaluation of each arm on the held-out questions (``ramp eval run``): token recall, EM, F1, first-query
   accuracy (the first search retrieves the first-hop supporting passage) and well-formed rate (the
   episode ends with an answer); the difference A - B per seed and its mean +- std; one MLflow parent run
   with a child run per arm and seed; a plot.

Everything is seeded: a rerun of a seed gives identical metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from ramp.config import StrictModel
from ramp.experiment.world import write_jsonl
from ramp.prompts import PromptTemplates
from ramp.retrieval.env import SearchConfig
from ramp.train.init import InitConfig

ARMS = ("A", "A-mixed", "B")
METRICS = ("token_recall", "exact_match", "f1", "first_query_accuracy", "well_formed")
DATASET = "world"


class WorldConfig(StrictModel):
    seed: int = 0
    countries: int = Field(default=8, ge=2)
    cities_per_country: int = Field(default=5, ge=2)
    people: int = Field(default=200, ge=2)
    companies: int = Field(default=160, ge=2)


class QuestionSplit(StrictModel):
    train: int = Field(default=60, ge=1)  # the low-data fine-tuning set
    test: int = Field(default=200, ge=1)  # held out
    seed: int = 0


class TrackingSettings(StrictModel):
    experiment: str = "ramp-effect"
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite runs/mlflow.db


class RampEffectConfig(StrictModel):
    """``configs/experiment/ramp_effect.yaml``; each stage list holds ``--set`` overrides of its recipe."""

    output: str = "runs/experiment/ramp-effect"
    seeds: int = Field(default=3, ge=1)
    workers: int = Field(default=3, ge=1)  # seed processes run at once
    ablation: bool = True  # also arm A-mixed (DAPO without the curriculum)
    world: WorldConfig = WorldConfig()
    questions: QuestionSplit = QuestionSplit()
    init: InitConfig = InitConfig(tokenizer="word")
    prompts: str = "prompts"  # task prompt templates of every stage (recipe name or YAML path)
    search: SearchConfig = SearchConfig(top_k=2, max_chars_per_doc=300)
    draws: int = Field(default=3, ge=1)  # data builds (seeds data.seed + n): more mask draws for the oracle
    data: list[str] = Field(default_factory=list)  # configs/data.yaml
    answerability: list[str] = Field(default_factory=list)  # configs/retrieval.yaml
    ramp_sft: list[str] = Field(default_factory=list)  # configs/pretrain.yaml
    dapo: list[str] = Field(default_factory=list)  # configs/rl.yaml
    qa_sft: list[str] = Field(default_factory=list)  # configs/pretrain.yaml
    eval: list[str] = Field(default_factory=list)  # configs/eval.yaml
    tracking: TrackingSettings = TrackingSettings()


# ----------------------------------------------------------------------------------------------- data


def prepare_data(config: RampEffectConfig, out: Path) -> dict[str, Any]:
    """World -> samples -> index -> answerable samples -> oracle trajectories; reused when done."""
    done = out / "data.json"
    fingerprint = _fingerprint(
        config, ("world", "questions", "search", "prompts", "draws", "data", "answerability")
    )
    if done.exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
        return dict(json.loads(done.read_text()))
    from ramp.config import load_config
    from ramp.data.config import DataConfig
    from ramp.experiment.world import generate_world, split_questions, unverified_chains, unverified_questions
    from ramp.pipelines.answerability import run_answerability
    from ramp.pipelines.ramp_data import run_build
    from ramp.prompts import load_templates
    from ramp.retrieval.config import RetrievalSettings
    from ramp.retrieval.indexing import build_index
    from ramp.retrieval.lucene import LuceneRetriever

    world = generate_world(**config.world.model_dump())
    paths = world.write(out / "world")
    data_cfg = load_config(
        DataConfig,
        "data",
        ["source.format=jsonl", "spans.extractor=tagged", "masking.exclude=passage", *config.data],
    )
    build = run_build([str(paths["articles"])], str(out / "samples"), data_cfg, chunk_mb=0)
    draws = [out / "samples"]
    for n in range(1, config.draws):  # the same passages, other masks: more RAMP trajectories
        draws.append(out / f"samples-draw{n}")
        other = data_cfg.model_copy(update={"seed": data_cfg.seed + n})
        run_build([str(paths["articles"])], str(draws[-1]), other, chunk_mb=0)
    build_index([out / "samples"], out / "index", threads=1, shards=1, progress=False)
    settings = load_config(
        RetrievalSettings,
        "retrieval",
        ["retriever.kind=lucene", f"retriever.index={out / 'index'}", *config.answerability],
    )
    answerable = run_answerability(
        str(out / "samples"), str(out / "answerable"), settings.retriever, settings.answerability, chunk_mb=0
    )
    retriever = LuceneRetriever(out / "index", threads=1)
    try:
        unverified = dict(unverified_questions(world, retriever, k=config.search.top_k))
        bad_chains = unverified_chains(world, retriever, k=config.search.top_k)
        if bad_chains:
            raise RuntimeError(f"world not verified: chains {bad_chains[:5]}")
        verified = dataclasses.replace(
            world, questions=[q for q in world.questions if q.id not in unverified]
        )
        train, test = split_questions(
            verified, config.questions.train, config.questions.test, config.questions.seed
        )
        for name, questions in (("qa-train", train), ("qa-test", test)):
            write_jsonl(out / f"{name}.jsonl", (_qa_row(q) for q in questions))
        write_jsonl(
            out / "questions-unverified.jsonl",
            ({"id": k, "reason": v} for k, v in sorted(unverified.items())),
        )
        sources = [out / "answerable", *draws]
        templates = load_templates(config.prompts)
        ramp_stats = write_oracle_trajectories(
            out, sources, world, train, retriever, config.search, templates
        )
    finally:
        retriever.close()
    summary = {
        "fingerprint": fingerprint,
        "articles": len(world.articles),
        "build": build,
        "answerability": answerable,
        "questions": {
            "train": len(train),
            "test": len(test),
            "world": len(world.questions),
            "unverified": len(unverified),
        },
        "chains": len(world.chains),
        **ramp_stats,
    }
    done.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return summary


def _qa_row(question: Any) -> dict[str, Any]:
    return {
        "id": question.id,
        "question": question.question,
        "golden_answers": list(question.golden_answers),
        "type": question.type,
        "supporting_ids": [f"{d}#0" for d in question.supporting_ids],
    }


def write_oracle_trajectories(
    out: Path,
    sources: Sequence[Path],
    world: Any,
    train: Sequence[Any],
    retriever: Any,
    search: SearchConfig,
    templates: PromptTemplates | None = None,
) -> dict[str, Any]:
    """RAMP trajectories of the samples in ``sources`` (each masked passage once; ids of later sources get
    ``@<source>``) and QA trajectories of ``train``, by the world oracle, in the prompts of ``templates``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ramp.agent.task import task_from_qa, task_from_sample
    from ramp.cot.trajectories import TRAJECTORY_SCHEMA
    from ramp.data.samples import Sample
    from ramp.experiment.oracle import qa_trajectory, ramp_trajectory
    from ramp.retrieval.env import SearchEnv

    env = SearchEnv(retriever, search)
    lookups = {(x.article_id, x.value): x for x in world.lookups}
    seen: set[str] = set()
    rows = []
    for n, source in enumerate(sources):
        table = [r for f in sorted(source.glob("samples-*.parquet")) for r in pq.read_table(f).to_pylist()]
        for row in sorted(table, key=lambda r: r["sample_id"]):
            if row["masked_passage"] not in seen:
                seen.add(row["masked_passage"])
                rows.append({**row, "sample_id": row["sample_id"] + (f"@{source.name}" if n else "")})
    kept, rejected = [], {}
    for row in rows:
        sample = Sample.from_row(row)
        made = ramp_trajectory(task_from_sample(sample, templates), sample.article_id, lookups, env)
        if isinstance(made, str):
            rejected[sample.sample_id] = made
        else:
            kept.append(made)
    qa = []
    for question in train:
        made = qa_trajectory(task_from_qa(_qa_row(question), templates), question, env)
        if isinstance(made, str):
            raise RuntimeError(f"oracle QA trajectory of {question.id} failed: {made}")
        qa.append(made)
    for name, trajectories in (("ramp-trajectories", kept), ("qa-trajectories", qa)):
        (out / name).mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist([t.to_row() for t in trajectories], schema=TRAJECTORY_SCHEMA)
        pq.write_table(table, out / name / "trajectories-00000.parquet", compression="zstd")
    write_jsonl(
        out / "ramp-rejected.jsonl", ({"sample_id": k, "reason": v} for k, v in sorted(rejected.items()))
    )
    by_k: dict[str, int] = {}
    for t in kept:
        by_k[str(t.num_masks)] = by_k.get(str(t.num_masks), 0) + 1
    return {
        "ramp_trajectories": len(kept),
        "ramp_trajectories_by_k": dict(sorted(by_k.items())),
        "ramp_rejected": len(rejected),
        "qa_trajectories": len(qa),
    }


def _fingerprint(config: RampEffectConfig, keys: Sequence[str]) -> str:
    dumped = config.model_dump(mode="json")
    text = json.dumps({k: dumped[k] for k in keys}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# ------------------------------------------------------------------------------------------- one seed


def _sft(
    trajectories: Path,
    out: Path,
    init: Path,
    overrides: Sequence[str],
    steps: int | None,
    seed: int,
    uri: str,
) -> dict[str, Any]:
    """QA or RAMP SFT through the Megatron stage (``ramp finetune sft``); returns steps, rows, tokens."""
    from ramp.config import load_config
    from ramp.finetune.sft import run_sft, sft_overrides
    from ramp.train.config import PretrainConfig

    values: dict[str, Any] = {
        **sft_overrides(out),
        "model.hf": str(init),
        "model.init": "hf",
        "train.seed": seed,
        "tracking.tracking_uri": uri,
        "tracking.run_name": out.name,
        "checkpoint.resume": True,  # a rerun after a crash continues its own stage's checkpoint
    }
    extra = [f"train.steps={steps}"] if steps is not None else []
    cfg = load_config(PretrainConfig, "pretrain", [*overrides, *extra], values=values)
    if (out / "policy" / "config.json").exists():
        return json.loads((out / "sft.json").read_text())
    with _timed(out):
        run_sft(trajectories, out, cfg)
    rows = cfg.train.steps * cfg.train.global_batch_size
    result = {"steps": cfg.train.steps, "rows": rows, "tokens": rows * (cfg.prepare.seq_length + 1)}
    (out / "sft.json").write_text(json.dumps(result, sort_keys=True) + "\n")
    return result


def _dapo(
    policy: Path, out: Path, data: Path, config: RampEffectConfig, mode: str, seed: int, uri: str
) -> dict[str, Any]:
    from ramp.config import load_config
    from ramp.finetune.dapo import train
    from ramp.rl.config import RLConfig

    cfg = load_config(
        RLConfig,
        "rl",
        config.dapo,
        values={
            "policy.model": str(policy),
            "retriever.kind": "lucene",
            "retriever.index": str(data / "index"),
            "data.task": "ramp",
            "data.samples": str(data / "answerable"),
            "data.prompts": config.prompts,
            "search": config.search.model_dump(mode="json"),
            "curriculum.mode": mode,
            "curriculum.seed": seed,
            "rollout.seed": seed,
            "trainer.seed": seed,
            "trainer.output_dir": str(out),
            "trainer.mlflow_uri": uri,
            "trainer.run_name": out.name,
            "trainer.progress": False,
            "trainer.threads": 1,
        },
    )
    with _timed(out):
        train(cfg)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines() if line.strip()]
    rows = cfg.trainer.train_batch_size * cfg.rollout.n * cfg.trainer.ppo_epochs
    return {
        "steps": cfg.trainer.total_steps,
        "rows": rows * cfg.trainer.total_steps,
        "reward_first": history[0]["reward/answer"] if history else 0.0,
        "reward_last": history[-1]["reward/answer"] if history else 0.0,
    }


@contextmanager
def _timed(out: Path) -> Iterator[None]:
    """Append the stage's wall time to ``timings.jsonl`` beside it (the seed's log of where time went)."""
    start = time.perf_counter()
    yield
    with (out.parent / "timings.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"stage": str(out), "wall_s": round(time.perf_counter() - start, 1)}) + "\n")


def arm_b_steps(a_rows: int, rows_per_step: int) -> int:
    """QA SFT steps of arm B: A's optimizer rows (RAMP SFT + DAPO + QA SFT) in B's batches."""
    return max(1, math.ceil(a_rows / rows_per_step))


def _evaluate(policy: Path, out: Path, data: Path, config: RampEffectConfig, uri: str) -> dict[str, float]:
    import pyarrow.parquet as pq

    from ramp.config import load_config
    from ramp.eval.run import run_eval
    from ramp.qa.config import EvalConfig

    cfg = load_config(
        EvalConfig,
        "eval",
        config.eval,
        values={
            "output_dir": str(out),
            "tracking_uri": uri,
            "run_name": out.parent.name,
            "agent.backend.hf.model": str(policy),
            "agent.search": config.search.model_dump(mode="json"),
            "agent.prompts": config.prompts,
            "retriever.kind": "lucene",
            "retriever.index": str(data / "index"),
            "datasets": [{"name": DATASET, "loader": "flashrag", "path": str(data / "qa-test.jsonl")}],
        },
    )
    with _timed(out):
        run_eval(cfg, progress=False)
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    return arm_metrics(rows, _supporting(data / "qa-test.jsonl"))


def _supporting(path: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: r["supporting_ids"][0] for r in rows}


def arm_metrics(rows: Sequence[dict[str, Any]], first_hop: dict[str, str]) -> dict[str, float]:
    """Mean token recall / EM / F1 over the predictions, first-query accuracy (the first search's results
    hold the first-hop supporting passage) and well-formed rate (the episode ended with an answer)."""
    n = max(1, len(rows))
    first = sum(bool(r["retrieved_ids"]) and first_hop[r["id"]] in r["retrieved_ids"][0] for r in rows)
    return {
        "token_recall": sum(r["token_recall"] for r in rows) / n,
        "exact_match": sum(r["exact_match"] for r in rows) / n,
        "f1": sum(r["f1"] for r in rows) / n,
        "first_query_accuracy": first / n,
        "well_formed": sum(r["finish_reason"] == "answer" for r in rows) / n,
        "mean_searches": sum(r["num_searches"] for r in rows) / n,
        "questions": float(len(rows)),
    }


def run_seed(config: RampEffectConfig, seed: int, data: Path, out: Path) -> dict[str, Any]:
    """Every arm of one seed; results in ``out/result.json`` (reused by a rerun)."""
    import torch

    from ramp.train.init import init_policy

    done = out / "result.json"
    if done.exists():
        return dict(json.loads(done.read_text()))
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(out / 'stages.db').resolve()}"  # the stages' own runs; the summary goes to the parent
    init = out / "init"
    init_cfg = config.init.model_copy(update={"model": config.init.model.model_copy(update={"seed": seed})})
    if not (init / "config.json").exists():
        init_policy([data / "world" / "articles.jsonl", data / "qa-train.jsonl"], init, init_cfg)
    ramp_sft = _sft(
        data / "ramp-trajectories", out / "A" / "ramp-sft", init, config.ramp_sft, None, seed, uri
    )
    result: dict[str, Any] = {"seed": seed, "arms": {}}
    for arm, mode in (("A", "staged"), ("A-mixed", "mixed"))[: 2 if config.ablation else 1]:
        dapo_dir = out / arm / "dapo"
        if not (dapo_dir / "policy" / "config.json").exists() or not (out / arm / "dapo.json").exists():
            stats = _dapo(out / "A" / "ramp-sft" / "policy", dapo_dir, data, config, mode, seed, uri)
            (out / arm / "dapo.json").write_text(json.dumps(stats, sort_keys=True) + "\n")
        dapo = json.loads((out / arm / "dapo.json").read_text())
        qa = _sft(
            data / "qa-trajectories",
            out / arm / "qa-sft",
            dapo_dir / "policy",
            config.qa_sft,
            None,
            seed,
            uri,
        )
        metrics = _evaluate(out / arm / "qa-sft" / "policy", out / arm / "eval", data, config, uri)
        rows = ramp_sft["rows"] + dapo["rows"] + qa["rows"]
        result["arms"][arm] = {
            "metrics": metrics,
            "rows": rows,
            "ramp_sft": ramp_sft,
            "dapo": dapo,
            "qa_sft": qa,
        }
    a_rows, qa_batch = (
        result["arms"]["A"]["rows"],
        result["arms"]["A"]["qa_sft"]["rows"] // result["arms"]["A"]["qa_sft"]["steps"],
    )
    b_steps = arm_b_steps(a_rows, qa_batch)
    qa_b = _sft(data / "qa-trajectories", out / "B" / "qa-sft", init, config.qa_sft, b_steps, seed, uri)
    metrics = _evaluate(out / "B" / "qa-sft" / "policy", out / "B" / "eval", data, config, uri)
    result["arms"]["B"] = {"metrics": metrics, "rows": qa_b["rows"], "qa_sft": qa_b}
    done.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


def run_processes(jobs: Sequence[tuple[str, int, str, str]], workers: int) -> None:
    """Run the seeds in ``workers`` spawned processes at a time; a failed seed fails the experiment."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    pending = list(jobs)
    running: list[Any] = []  # started, not yet joined
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            process = context.Process(target=_seed_worker, args=(job,), name=f"seed-{job[1]}")
            process.start()
            running.append(process)
        running[0].join()
        done = running.pop(0)
        if done.exitcode != 0:
            for process in running:
                process.terminate()
            raise RuntimeError(f"{done.name} failed (exit code {done.exitcode}); its traceback is above")


def _seed_worker(args: tuple[str, int, str, str]) -> dict[str, Any]:
    config_json, seed, data, out = args
    return run_seed(RampEffectConfig.model_validate_json(config_json), seed, Path(data), Path(out))


# ------------------------------------------------------------------------------------------ summary


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: mean and (sample) std over seeds of every metric; A - B and A - A-mixed per seed."""
    summary: dict[str, Any] = {"seeds": [r["seed"] for r in results], "arms": {}, "differences": {}}
    arms = _arms(results)
    for arm in arms:
        per_seed = [r["arms"][arm]["metrics"] for r in results]
        summary["arms"][arm] = {m: _mean_std([s[m] for s in per_seed]) for m in METRICS}
    pairs = {"A-B": ("A", "B"), "A-A_mixed": ("A", "A-mixed")}
    for name, (x, y) in ((n, p) for n, p in pairs.items() if p[1] in arms):
        diffs = {
            m: [r["arms"][x]["metrics"][m] - r["arms"][y]["metrics"][m] for r in results] for m in METRICS
        }
        summary["differences"][name] = {m: {**_mean_std(v), "per_seed": v} for m, v in diffs.items()}
    return summary


def _arms(results: Sequence[dict[str, Any]]) -> list[str]:
    return [arm for arm in ARMS if arm in results[0]["arms"]]


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def format_table(summary: dict[str, Any]) -> str:
    """The Markdown table of the README: per arm mean +- std, then the differences."""
    header = "| arm | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS) + "\n"
    lines = [
        f"| {arm} | "
        + " | ".join(f"{v['mean']:.3f} ± {v['std']:.3f}" for v in summary["arms"][arm].values())
        + " |"
        for arm in summary["arms"]
    ]
    lines += [
        f"| {name} | "
        + " | ".join(
            f"{v['mean']:+.3f} ± {v['std']:.3f} ({', '.join(f'{x:+.2f}' for x in v['per_seed'])})"
            for v in summary["differences"][name].values()
        )
        + " |"
        for name in summary["differences"]
    ]
    return header + "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], results: Sequence[dict[str, Any]], path: Path) -> None:
    """Bars per metric and arm (mean over seeds, std as error bars), each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    arms = list(summary["arms"])
    width = 0.8 / len(arms)
    for a, arm in enumerate(arms):
        xs = [m + (a - (len(arms) - 1) / 2) * width for m in range(len(METRICS))]
        stats = summary["arms"][arm]
        ax.bar(
            xs,
            [stats[m]["mean"] for m in METRICS],
            width,
            yerr=[stats[m]["std"] for m in METRICS],
            label=arm,
            capsize=3,
        )
        for r in results:
            ax.scatter(xs, [r["arms"][arm]["metrics"][m] for m in METRICS], color="black", s=6, zorder=3)
    ax.set_xticks(range(len(METRICS)), [m.replace("_", " ") for m in METRICS])
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out two-hop questions")
    ax.set_title(f"RAMP effect: A = RAMP SFT + DAPO + QA SFT, B = QA SFT only ({len(results)} seeds)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_to_mlflow(
    config: RampEffectConfig,
    data: dict[str, Any],
    summary: dict[str, Any],
    results: Sequence[dict[str, Any]],
    out: Path,
) -> str:
    """One parent run (summary metrics, table, plot) with a child run per arm and seed."""
    from ramp.tracking import mlflow_run

    with mlflow_run(
        config.tracking.experiment, out.name, config.model_dump(mode="json"), uri=config.tracking.tracking_uri
    ) as mlflow:
        parent = mlflow.active_run().info.run_id
        for arm in summary["arms"]:
            for m in METRICS:
                mlflow.log_metric(f"{arm}/{m}", summary["arms"][arm][m]["mean"])
                mlflow.log_metric(f"{arm}/{m}_std", summary["arms"][arm][m]["std"])
        for name, diffs in summary["differences"].items():
            for m, v in diffs.items():
                mlflow.log_metric(f"diff/{name}/{m}", v["mean"])
        mlflow.log_dict(data, "data.json")
        mlflow.log_artifact(str(out / "results.md"))
        mlflow.log_artifact(str(out / "ramp_effect.png"))
        for r in results:
            for arm in summary["arms"]:
                with mlflow.start_run(run_name=f"{arm}-seed{r['seed']}", nested=True):
                    mlflow.log_params({"arm": arm, "seed": r["seed"], "rows": r["arms"][arm]["rows"]})
                    mlflow.log_metrics(r["arms"][arm]["metrics"])
    return str(parent)


def run_experiment(config: RampEffectConfig) -> dict[str, Any]:
    """Data once, the seeds in parallel processes, then the summary, plot and MLflow runs."""

    out = Path(config.output)
    data_dir = out / "data"
    data = prepare_data(config, data_dir)
    jobs = [(config.model_dump_json(), s, str(data_dir), str(out / f"seed-{s}")) for s in range(config.seeds)]
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    if config.workers > 1 and len(jobs) > 1:
        run_processes(jobs, config.workers)  # not a Pool: its daemonic workers cannot start processes
    results = [_seed_worker(job) for job in jobs]  # each seed's result.json (computed now if missing)
    summary = summarize(results)
    (out / "results.md").write_text(format_table(summary))
    plot(summary, results, out / "ramp_effect.png")
    summary["mlflow_run_id"] = log_to_mlflow(config, data, summary, results, out)
    summary["data"] = data
    (out / "results.json").write_text(
        json.dumps({"summary": summary, "seeds": list(results)}, indent=2, sort_keys=True) + "\n"
    )
    return summary
