"""``ramp data cot``: the multi-agent chain-of-thought trajectory builder."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ramp.cli.options import (
    ChunkMb,
    Index,
    Overrides,
    PipelineOptions,
    RetrieverUrl,
    Verbose,
    Workers,
    beam_args,
    load_with_retriever,
)
from ramp.cot.config import CotConfig
from ramp.logs import quiet_logs
from ramp.pipelines.cot_builder import run_cot
from ramp.pipelines.runner import BeamRun

TEACHERS = ("builtin", "openai", "student")


def cot_command(
    ctx: typer.Context,
    samples: Annotated[str, typer.Option("--samples", help="Directory with samples-*.parquet.")],
    output: Annotated[
        str, typer.Option("--output", help="Output directory for trajectories and rejections.")
    ],
    config: Annotated[str, typer.Option("--config", help="YAML config (default configs/cot.yaml).")] = "cot",
    overrides: Overrides = None,
    teacher: Annotated[str | None, typer.Option("--teacher", help="builtin | openai | student.")] = None,
    index: Index = None,
    retriever_url: RetrieverUrl = None,
    workers: Workers = 1,
    chunk_mb: ChunkMb = None,
    pipeline_options: PipelineOptions = None,
    verbose: Verbose = False,
    allow_foreign_index: Annotated[
        bool,
        typer.Option("--allow-foreign-index", help="Search although the samples' passages are not in it."),
    ] = False,
) -> None:
    """Build verified CoT trajectories from masked samples; prints the verified yield.
    Beam options may also follow ``--`` (e.g. ``-- --runner=FlinkRunner``)."""
    if teacher is not None and teacher not in TEACHERS:
        raise typer.BadParameter(f"--teacher must be one of {', '.join(TEACHERS)}")
    extra = [f"teacher.kind={teacher}"] if teacher else []
    cfg = load_with_retriever(CotConfig, config, [*extra, *(overrides or [])], index, retriever_url)
    with quiet_logs(output, "cot", verbose):
        stats = run_cot(
            samples,
            output,
            cfg,
            BeamRun(workers, tuple(beam_args(ctx, pipeline_options))),
            chunk_mb,
            allow_foreign_index,
        )
    typer.echo(format_summary(stats))


def format_summary(stats: dict[str, Any]) -> str:
    reasons = ", ".join(f"{k}={v}" for k, v in stats["rejected_by_reason"].items()) or "none"
    return (
        f"teacher {stats['teacher']} (round {stats['round']}): {stats['samples_in']} samples -> "
        f"{stats['kept']} verified trajectories, {stats['rejected']} rejected ({reasons})\n"
        f"verified yield: {stats['verified_yield']:.1%}   "
        f"mean searches per kept trajectory: {stats['mean_searches_kept']:.2f}"
    )
