"""``ramp eval run``: a policy over every question of every dataset, tracked in MLflow.

Layout of ``output_dir``::

    parts/<dataset>-<n>.parquet   one part per ``chunk_size`` questions, written atomically
    predictions.parquet      every row (:data:`ramp.qa.scoring.ROW_SCHEMA`), datasets in config order
    summary.json, plots/*.png
    mlflow-run.json          the MLflow run it logs to (a resume with the same config continues it)
    .stages/*.json           the markers of the parts and of the report (:mod:`ramp.stages`)

Resumable, by the stage rule of :mod:`ramp.stages`: each part is a stage whose settings are the whole
config that decides the rows (everything but where results go: ``experiment``, ``run_name``,
``tracking_uri``, ``output_dir``) with its dataset, chunk and question ids, and whose inputs are the
dataset files, the local index and the policy's local checkpoint. A restart skips finished parts and
computes only the rest (the final rows are those of an uninterrupted run: the policy is deterministic per
chunk); a changed setting or input recomputes the parts it decides; with nothing changed nothing runs and
no file is touched. The report (a stage over the parts) logs to the MLflow run: params when it starts and,
at the end, metrics, the predictions table, the Parquet file and plots (per-dataset bars, token recall vs
number of searches).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ramp.errors import UserError
from ramp.qa.config import EvalConfig
from ramp.qa.loaders import QARecord, load_qa
from ramp.qa.scoring import (
    JUDGE,
    MACRO,
    METRIC_NAMES,
    ROW_SCHEMA,
    PolicyAnswer,
    result_row,
    searches_curve,
    summarize,
)
from ramp.retrieval.base import Retriever
from ramp.stages import Stage, StageRunner, canonical_json
from ramp.tracking import mlflow_run

RUN_FILE = "mlflow-run.json"
PREDICTIONS_NAME = "predictions.parquet"
TABLE_NAME = "predictions.json"  # the MLflow table artifact
STATE_DIR = ".stages"
DESTINATION = ("experiment", "run_name", "tracking_uri", "output_dir")  # where results go, not what they are

log = logging.getLogger(__name__)


Chunk = tuple[str, int, list[QARecord], int]  # dataset, chunk number, its records, first position


class EvalError(UserError):
    """An evaluation that cannot run or resume as asked; the message says why."""


class Policy(Protocol):
    def answer(self, records: Sequence[QARecord]) -> list[PolicyAnswer]: ...


@dataclass(frozen=True)
class EvalResult:
    summary: dict[str, float]
    predictions: Path
    run_id: str
    questions: int
    computed: int  # questions answered by this invocation (the rest came from earlier parts)
    answer_seconds: float  # time spent answering them (policy, scoring, part files)


# ------------------------------------------------------------------------------------------ policies


class AgentPolicy:
    """The search agent: the rollout loop over QA tasks (one rollout per question, no log-probs)."""

    def __init__(self, config: EvalConfig, retriever: Retriever, backend: Any | None = None) -> None:
        from ramp.agent.backends import build_backend
        from ramp.agent.rollout import RolloutLoop
        from ramp.prompts import load_templates
        from ramp.retrieval.env import SearchEnv

        self.templates = load_templates(config.agent.prompts)
        self.backend = backend if backend is not None else build_backend(config.agent.backend)
        rollout = config.agent.rollout.model_copy(update={"logprobs": False})
        self.loop = RolloutLoop(self.backend, SearchEnv(retriever, config.agent.search), rollout)

    def answer(self, records: Sequence[QARecord]) -> list[PolicyAnswer]:
        from ramp.agent.task import task_from_qa

        rollouts = self.loop.run([task_from_qa(r.to_row(), self.templates) for r in records])
        return [
            PolicyAnswer(
                prediction=r.answer,
                finish_reason=r.finish_reason or "",
                turns=r.turns,
                queries=list(r.queries),
                retrieved_ids=[list(ids) for ids in r.documents],
                model_tokens=r.num_sampled_tokens,
            )
            for r in rollouts
        ]


class DecomposePolicy:
    """AceSearcher's inference: one greedy decomposition per question, one search per sub-question, the
    solver's answers (:class:`ramp.agent.decompose.DecomposeSolver`)."""

    def __init__(self, config: EvalConfig, retriever: Retriever, backend: Any | None = None) -> None:
        from ramp.agent.backends import build_backend
        from ramp.agent.decompose import DecomposeSolver
        from ramp.retrieval.env import SearchEnv

        self.backend = backend if backend is not None else build_backend(config.agent.backend)
        tokenizer = getattr(self.backend, "tokenizer", None)
        if tokenizer is None:
            raise EvalError("policy decompose needs a token-level backend (agent.backend.kind hf or vllm)")
        env = SearchEnv(retriever, config.agent.search)
        self.solver = DecomposeSolver(self.backend, tokenizer, env, config.decompose)

    def answer(self, records: Sequence[QARecord]) -> list[PolicyAnswer]:
        questions, ids = [r.question for r in records], [str(r.id) for r in records]
        generated = [row[0] for row in self.solver.decompose_generations(questions, 1, 0.0, 0, ids)]
        solutions = self.solver.solve(questions, [g.text for g in generated])
        return [
            PolicyAnswer(
                prediction=s.answer,
                finish_reason="answer",
                turns=len(s.queries) + 1,
                queries=list(s.queries),
                retrieved_ids=[list(ids) for ids in s.doc_ids],
                model_tokens=len(g.token_ids) + s.solver_tokens,
            )
            for g, s in zip(generated, solutions, strict=True)
        ]


def top_k(config: EvalConfig) -> int:
    """Documents per search (the agent's and the built-in policy's)."""
    return config.agent.search.top_k


def build_policy(config: EvalConfig, retriever: Retriever, backend: Any | None = None) -> Policy:
    """The configured policy; ``backend`` replaces the configured generation backend (agent policy)."""
    if config.policy == "builtin":
        from ramp.qa.builtin import BuiltinQAPolicy

        return BuiltinQAPolicy(retriever, top_k(config), config.builtin)
    if config.policy == "decompose":
        return DecomposePolicy(config, retriever, backend)
    return AgentPolicy(config, retriever, backend)


def model_name(config: EvalConfig) -> str:
    """The policy's model as a short name (``builtin`` for the no-model policy)."""
    if config.policy == "builtin":
        return "builtin"
    backend = config.agent.backend
    model = getattr(backend, backend.kind).model
    return Path(model.rstrip("/")).name or model


def run_params(config: EvalConfig) -> dict[str, Any]:
    """The MLflow params: the headline ones, then the whole config flattened under ``config.``."""
    backend = config.agent.backend
    retriever = config.retriever
    return {
        "policy": config.policy,
        "model": model_name(config),
        "checkpoint": "" if config.policy == "builtin" else getattr(backend, backend.kind).model,
        "backend": "" if config.policy == "builtin" else backend.kind,
        "retriever": f"{retriever.kind}:{retriever.index if retriever.kind == 'lucene' else retriever.url}",
        "k": top_k(config),
        "max_turns": 1 if config.policy == "builtin" else config.agent.rollout.max_turns,
        "datasets": ",".join(d.name for d in config.datasets),
        "config": config.model_dump(mode="json"),
    }


# ------------------------------------------------------------------------------------------ files


def row_settings(config: EvalConfig) -> dict[str, Any]:
    """The config that decides the rows: everything but where results go."""
    return config.model_dump(mode="json", exclude=set(DESTINATION))


def row_inputs(config: EvalConfig) -> tuple[Path, ...]:
    """The local files the rows are read from: the datasets, the index and the policy's checkpoint."""
    paths = [d.path for d in config.datasets if d.path]
    if config.retriever.kind == "lucene" and config.retriever.index:
        paths.append(config.retriever.index)
    if config.policy == "agent":
        backend = config.agent.backend
        paths.append(getattr(backend, backend.kind).model)
    return tuple(Path(p) for p in paths if "://" not in p and Path(p).exists())


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` whole (a temporary file renamed), unless ``path`` holds it already."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as Parquet atomically (a killed writer leaves no partial file under ``path``)."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(list(rows), schema=ROW_SCHEMA), tmp, compression="zstd")
    os.replace(tmp, path)


def part_path(out: Path, dataset: str, chunk: int) -> Path:
    return out / "parts" / f"{dataset}-{chunk:05d}.parquet"


# ------------------------------------------------------------------------------------------ the run


def run_eval(config: EvalConfig, progress: bool = True, backend: Any | None = None) -> EvalResult:
    """Evaluate (or resume evaluating) ``config``; returns the summary metrics and where rows are.

    ``backend``: a generation backend to use instead of building ``config.agent.backend``."""
    out = Path(config.output_dir)
    datasets = [(d.name, load_qa(d.loader_name, d.path, d.limit)) for d in config.datasets]
    total = sum(len(records) for _, records in datasets)
    chunks = [
        (name, c, records[start : start + config.chunk_size], start)
        for name, records in datasets
        for c, start in enumerate(range(0, len(records), config.chunk_size))
    ]
    runner = StageRunner(out / STATE_DIR, echo=log.debug)
    answerer = _Answerer(config, out, backend)
    parts = [answerer.stage(chunk) for chunk in chunks]
    todo = [(stage, chunk) for stage, chunk in zip(parts, chunks, strict=True) if not runner.done(stage)]
    run_id = _recorded_run(out, config)
    report = _Report(config, out, chunks, [name for name, _ in datasets])
    if not todo and run_id is not None and runner.done(report.stage(run_id, None)):
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        return EvalResult(summary, out / PREDICTIONS_NAME, run_id, total, 0, 0.0)

    run_name = config.run_name or ("builtin" if config.policy == "builtin" else f"agent-{model_name(config)}")
    params = None if run_id else run_params(config)
    with mlflow_run(config.experiment, run_name, params, config.tracking_uri, run_id=run_id) as mlflow:
        run_id = mlflow.active_run().info.run_id
        out.mkdir(parents=True, exist_ok=True)
        _write_text(out / RUN_FILE, json.dumps({"run_id": run_id, "settings": _run_settings(config)}) + "\n")
        started = time.perf_counter()
        done = total - sum(len(records) for _, (_, _, records, _) in todo)
        bar = tqdm(total=total, initial=done, desc="eval", unit="question", disable=not progress)
        try:
            for stage, (_, _, records, _) in todo:
                runner.run_one(stage)
                bar.update(len(records))
        finally:
            bar.close()
            answerer.close()
        report.computed, report.seconds = total - done, time.perf_counter() - started
        runner.run_one(report.stage(run_id, mlflow))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return EvalResult(summary, out / PREDICTIONS_NAME, run_id, total, report.computed, report.seconds)


def _run_settings(config: EvalConfig) -> str:
    """What an MLflow run stands for: its params and where it is logged (a resume with others starts anew)."""
    where = {k: getattr(config, k) for k in ("experiment", "run_name", "tracking_uri")}
    return canonical_json({"params": run_params(config), **where})


def _recorded_run(out: Path, config: EvalConfig) -> str | None:
    """The MLflow run an earlier invocation with the same settings logged to, if any."""
    try:
        record = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(record["run_id"]) if record.get("settings") == _run_settings(config) else None


class _Answerer:
    """The parts' stages; the retriever, policy and judge are built when the first part runs."""

    def __init__(self, config: EvalConfig, out: Path, backend: Any | None) -> None:
        self.config, self.out, self.backend = config, out, backend
        self.inputs = row_inputs(config)
        self.retriever: Retriever | None = None
        self.policy: Policy | None = None
        self.judge: Any = None

    def stage(self, chunk: Chunk) -> Stage:
        dataset, number, records, _ = chunk
        settings = {
            "rows": row_settings(self.config),
            "dataset": dataset,
            "chunk": number,
            "questions": [r.id for r in records],
        }
        path = part_path(self.out, dataset, number)
        return Stage(f"{dataset}-{number:05d}", lambda: self.answer(chunk), settings, self.inputs, (path,))

    def answer(self, chunk: Chunk) -> None:
        dataset, number, records, start = chunk
        if self.policy is None:
            from ramp.retrieval.config import build_retriever

            self.retriever = build_retriever(self.config.retriever)
            self.policy = build_policy(self.config, self.retriever, self.backend)
            self.judge = _build_judge(self.config) if self.config.judge.enabled else None
        answers = self.policy.answer(records)
        rows = [
            result_row(dataset, start + i, record, answer)
            for i, (record, answer) in enumerate(zip(records, answers, strict=True))
        ]
        if self.judge is not None:
            _judge_rows(self.judge, rows)
        path = part_path(self.out, dataset, number)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_rows(path, rows)

    def close(self) -> None:
        if self.retriever is not None:
            self.retriever.close()


class _Report:
    """The report stage: every part's rows -> predictions.parquet, summary.json, plots, MLflow."""

    def __init__(self, config: EvalConfig, out: Path, chunks: list[Chunk], datasets: list[str]) -> None:
        self.config, self.out, self.chunks, self.datasets = config, out, chunks, datasets
        self.computed, self.seconds = 0, 0.0

    def stage(self, run_id: str, mlflow: Any) -> Stage:
        parts = tuple(part_path(self.out, dataset, number) for dataset, number, _, _ in self.chunks)
        outputs = (self.out / PREDICTIONS_NAME, self.out / "summary.json", self.out / "plots")
        settings = {"config": self.config, "run_id": run_id}
        return Stage("report", lambda: self.write(mlflow), settings, parts, outputs)

    def write(self, mlflow: Any) -> None:
        rows = _collect(self.out, self.chunks, sum(len(records) for _, _, records, _ in self.chunks))
        write_rows(self.out / PREDICTIONS_NAME, rows)
        summary = summarize(rows, self.datasets)
        _write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
        mlflow.log_metrics(summary)
        if self.computed:
            rate = self.computed / self.seconds
            mlflow.log_metrics({"eval_seconds": self.seconds, "questions_per_second": rate})
        _log_artifacts(mlflow, self.out, rows, summary, self.datasets)


def _build_judge(config: EvalConfig) -> Any:
    from ramp.agent.backends import build_backend
    from ramp.prompts import load_templates
    from ramp.rewards import LLMJudge

    backend = build_backend(config.judge.backend)
    return LLMJudge(backend, load_templates().judge, config.judge.max_new_tokens)


def _judge_rows(judge: Any, rows: list[dict[str, Any]]) -> None:
    from ramp.rewards import JudgeItem

    items = [JudgeItem(r["question"], r["golden_answers"], r["prediction"]) for r in rows]
    for row, verdict in zip(rows, judge.judge(items), strict=True):
        row[JUDGE] = verdict.score


def _collect(out: Path, chunks: list[Chunk], total: int) -> list[dict[str, Any]]:
    """Every part's rows in dataset and position order, checked: one row per question, none twice."""
    rows: list[dict[str, Any]] = []
    for dataset, chunk, records, start in chunks:
        part = pq.read_table(part_path(out, dataset, chunk), schema=ROW_SCHEMA).to_pylist()
        expected = [(start + i, r.id) for i, r in enumerate(records)]
        if [(row["position"], row["id"]) for row in part] != expected:
            last = start + len(records) - 1
            raise EvalError(f"{part_path(out, dataset, chunk)} does not hold questions {start}..{last}")
        rows += part
    if len(rows) != total:
        raise EvalError(f"{len(rows)} rows for {total} questions")
    return rows


# ------------------------------------------------------------------------------------------ artifacts


def _log_artifacts(
    mlflow: Any, out: Path, rows: list[dict[str, Any]], summary: dict[str, float], datasets: list[str]
) -> None:
    import pandas as pd

    table = pd.DataFrame(
        [
            {
                **{k: v for k, v in row.items() if k not in ("queries", "retrieved_ids", "golden_answers")},
                "golden_answers": json.dumps(row["golden_answers"], ensure_ascii=False),
                "queries": json.dumps(row["queries"], ensure_ascii=False),
                "retrieved_ids": json.dumps(row["retrieved_ids"], ensure_ascii=False),
            }
            for row in rows
        ]
    )
    run_id = mlflow.active_run().info.run_id
    logged = {item.path for item in mlflow.MlflowClient().list_artifacts(run_id)}
    if TABLE_NAME not in logged:  # log_table appends to an existing table: a rerun logs the same rows
        mlflow.log_table(table, artifact_file=TABLE_NAME)
    mlflow.log_artifact(str(out / PREDICTIONS_NAME))
    mlflow.log_artifact(str(out / "summary.json"))
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    for name, figure in (
        ("datasets.png", dataset_bars(summary, datasets)),
        ("recall_vs_searches.png", recall_vs_searches(rows)),
    ):
        figure.savefig(plots / name, dpi=120, bbox_inches="tight")
        mlflow.log_figure(figure, f"plots/{name}")
        import matplotlib.pyplot as plt

        plt.close(figure)


def dataset_bars(summary: dict[str, float], datasets: list[str]) -> Any:
    """Grouped bars: each metric per dataset, macro average last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in (*METRIC_NAMES, JUDGE) if f"{m}/{MACRO}" in summary]
    columns = [*datasets, MACRO]
    figure, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(columns) + 2), 3.6))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        values = [100 * summary.get(f"{metric}/{c}", 0.0) for c in columns]
        xs = [x + (i - (len(metrics) - 1) / 2) * width for x in range(len(columns))]
        bars = ax.bar(xs, values, width, label=metric)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, ncols=len(metrics))
    ax.set_title("per-dataset scores")
    return figure


def recall_vs_searches(rows: list[dict[str, Any]]) -> Any:
    """Mean token recall by the number of searches a question took (question counts on the bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = searches_curve(rows)
    figure, ax = plt.subplots(figsize=(5.5, 3.6))
    bars = ax.bar([str(n) for n in curve], [100 * v for v, _ in curve.values()], color="tab:green")
    ax.bar_label(bars, labels=[f"n={c}" for _, c in curve.values()], fontsize=7)
    ax.set_xlabel("searches")
    ax.set_ylabel("token recall (%)")
    ax.set_ylim(0, 105)
    ax.set_title("token recall vs number of searches")
    return figure
