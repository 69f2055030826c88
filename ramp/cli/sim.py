"""``ramp sim``: the simulated search engine's training data and its fine-tuning (ZeroSearch)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.parquet as pq
import typer

from ramp.cli.options import Index, Overrides, RetrieverUrl, load_with_retriever
from ramp.config import load_config
from ramp.cot.sim_pairs import (
    DOCUMENTS,
    SimSettings,
    collect_pairs,
    format_prepare_stats,
    pair_trajectories,
    queries_from_questions,
    queries_from_trajectories,
    read_pairs,
    write_pairs,
)
from ramp.cot.trajectories import TRAJECTORY_SCHEMA
from ramp.errors import UserError
from ramp.finetune.sft import run_sft, sft_overrides
from ramp.retrieval.config import build_retriever
from ramp.retrieval.simulated import DOCUMENTS_FILE
from ramp.train.config import PretrainConfig

sim_app = typer.Typer(no_args_is_help=True)


@sim_app.command("prepare")
def prepare_command(
    output: Annotated[
        str, typer.Option("--output", help="Output directory: pairs.jsonl, documents.jsonl, ...")
    ],
    questions: Annotated[
        str | None, typer.Option("--questions", help="QA rows {id, question, golden_answers} (.jsonl).")
    ] = None,
    trajectories: Annotated[
        str | None, typer.Option("--trajectories", help="Verified trajectories (`ramp data cot` output).")
    ] = None,
    index: Index = None,
    retriever_url: RetrieverUrl = None,
    config: Annotated[str, typer.Option("--config", help="YAML config (default configs/sim.yaml).")] = "sim",
    overrides: Overrides = None,
) -> None:
    """(query -> real documents) pairs, useful and noisy, from real searches of a question set's questions
    or of trajectories' queries."""
    if questions is None and trajectories is None:
        raise UserError("give --questions FILE.jsonl, --trajectories DIR, or both")
    settings = load_with_retriever(SimSettings, config, overrides, index, retriever_url, required=True)
    queries, rejected = queries_from_questions(questions) if questions else ([], [])
    if trajectories:
        queries += queries_from_trajectories(trajectories)
    retriever = build_retriever(settings.retriever)
    try:
        pairs, unanswered = collect_pairs(queries, retriever, settings.prepare)
    finally:
        retriever.close()
    stats = write_pairs(output, pairs, [*rejected, *unanswered], len(queries) + len(rejected))
    typer.echo(format_prepare_stats(stats))


@sim_app.command("train")
def train_command(
    pairs: Annotated[str, typer.Option("--pairs", help="Output directory of `ramp sim prepare`.")],
    output: Annotated[
        str, typer.Option("--output", help="Output dir: conversations/, shards/, ..., policy/")
    ],
    config: Annotated[
        str, typer.Option("--config", help="Megatron recipe (configs/pretrain.yaml)")
    ] = "pretrain",
    overrides: Overrides = None,
) -> None:
    """Fine-tune a causal LM (`--set model.hf=DIR`) to write the pairs' documents for their prompts, through
    the project's SFT stage (shards -> Megatron trainer -> HF); the simulator is OUTPUT/policy."""
    settings = load_config(PretrainConfig, config, overrides or [], values=sft_overrides(output))
    conversations = pair_trajectories(read_pairs(pairs))
    directory = Path(output) / "conversations"
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([t.to_row() for t in conversations], schema=TRAJECTORY_SCHEMA)
    pq.write_table(table, directory / "trajectories-00000-of-00001.parquet")
    result = run_sft(directory, output, settings)
    shutil.copyfile(Path(pairs) / DOCUMENTS, Path(result["policy"]) / DOCUMENTS_FILE)
    losses = result["summary"]["losses"]
    last = max(losses) if losses else 0
    typer.echo(
        f"{len(conversations)} pairs; trained to step {last}"
        + (f", loss {losses[last]:.4f}" if losses else "")
        + f"; simulator in {result['policy']} (--set retriever.kind=simulated "
        f"--set retriever.simulator.backend=hf --set retriever.simulator.model={result['policy']})"
    )
