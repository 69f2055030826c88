"""``ramp data``: the masking pipeline, its statistics, the answerability filter and the curation of
trajectories."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ramp.cli.cot import cot_command
from ramp.cli.options import (
    BEAM_COMMAND,
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
from ramp.config import load_config
from ramp.cot.curate import CurateConfig, run_curate
from ramp.data.answerability import format_answerability_stats
from ramp.data.audit import audit, format_audit, write_audit
from ramp.data.stats import format_stats, load_stats
from ramp.data.synthesis import SynthesisSettings, format_synthesis_stats
from ramp.logs import quiet_logs
from ramp.pipelines.answerability import run_answerability
from ramp.pipelines.ramp_data import load_data_config, run_build
from ramp.pipelines.runner import BeamRun
from ramp.pipelines.synthesize import run_synthesize
from ramp.retrieval.config import RetrievalSettings

data_app = typer.Typer(no_args_is_help=True)

FORMATS = ["dpr", "jsonl", "parquet", "xml"]


@data_app.command("build", context_settings=BEAM_COMMAND)
def build_command(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Option("--input", help="File or glob; repeatable.")],
    output: Annotated[str, typer.Option("--output", help="Output directory (local or any Beam filesystem).")],
    fmt: Annotated[str | None, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML config (default configs/data.yaml).")
    ] = None,
    overrides: Overrides = None,
    workers: Workers = 1,
    chunk_mb: ChunkMb = None,
    pipeline_options: PipelineOptions = None,
    verbose: Verbose = False,
) -> None:
    """Build masked samples. Beam options may also follow ``--`` (e.g. ``-- --runner=FlinkRunner``)."""
    if fmt is not None and fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    cfg = load_data_config(config, fmt, overrides or [])
    beam_run = BeamRun(workers, tuple(beam_args(ctx, pipeline_options)))
    with quiet_logs(output, "data-build", verbose):
        stats = run_build(inputs, output, cfg, beam_run, chunk_mb)
    typer.echo(format_stats(stats))


@data_app.command("stats")
def stats_command(
    directory: Annotated[str, typer.Argument(help="Output directory of `ramp data build`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Counts of an output directory: input records, samples, rejections by reason, masks by type and k."""
    stats = load_stats(directory)
    typer.echo(json.dumps(stats, indent=2) if as_json else format_stats(stats))


@data_app.command("audit")
def audit_command(
    directory: Annotated[
        str, typer.Argument(help="A samples directory (`ramp data build` or answerability).")
    ],
    examples: Annotated[int, typer.Option("--examples", help="Random samples to print masked.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the example draw.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Quality report of a samples directory (also written as DIR/audit.json)."""
    report = audit(directory, examples, seed)
    write_audit(directory, report)
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False) if as_json else format_audit(report))


@data_app.command("answerability", context_settings=BEAM_COMMAND)
def answerability_command(
    ctx: typer.Context,
    samples: Annotated[str, typer.Option("--samples", help="Output directory of `ramp data build`.")],
    output: Annotated[str, typer.Option("--output", help="Output directory (not the samples directory).")],
    index: Index = None,
    retriever_url: RetrieverUrl = None,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML config (default configs/retrieval.yaml).")
    ] = None,
    overrides: Overrides = None,
    workers: Workers = 1,
    chunk_mb: ChunkMb = None,
    pipeline_options: PipelineOptions = None,
    verbose: Verbose = False,
    allow_foreign_index: Annotated[
        bool,
        typer.Option("--allow-foreign-index", help="Search although the samples' passages are not in it."),
    ] = False,
) -> None:
    """Keep samples whose masks the search tool can answer without the source passage."""
    settings = load_with_retriever(
        RetrievalSettings, config or "retrieval", overrides, index, retriever_url, required=True
    )
    with quiet_logs(output, "answerability", verbose):
        stats = run_answerability(
            samples,
            output,
            settings.retriever,
            settings.answerability,
            BeamRun(workers, tuple(beam_args(ctx, pipeline_options))),
            chunk_mb,
            allow_foreign_index,
        )
    typer.echo(format_answerability_stats(stats))


@data_app.command("curate")
def curate_command(
    trajectories: Annotated[
        str, typer.Option("--trajectories", help="A trajectories directory (`ramp data cot`).")
    ],
    output: Annotated[
        str, typer.Option("--output", help="Output directory (not the trajectories directory).")
    ],
    config: Annotated[str | None, typer.Option("--config", help="YAML of the curation settings.")] = None,
    overrides: Overrides = None,
) -> None:
    """SimpleDeepSearcher's curation: a small SFT set of verified trajectories (format, searches, one per
    question, difficulty, diversity, size); the rest to rejected-curation.jsonl with their reasons."""
    result = run_curate(trajectories, output, load_config(CurateConfig, config, overrides or []))
    reasons = ", ".join(f"{reason} {n}" for reason, n in result.reasons.items()) or "none"
    total = len(result.kept) + len(result.rejected)
    typer.echo(
        f"curated {total} trajectories: kept {len(result.kept)}, rejected {len(result.rejected)} ({reasons})"
    )


@data_app.command("synthesize", context_settings=BEAM_COMMAND)
def synthesize_command(
    ctx: typer.Context,
    seeds: Annotated[str, typer.Option("--seeds", help="Seed QA rows: a .jsonl file or glob.")],
    output: Annotated[str, typer.Option("--output", help="Output directory (local or any Beam filesystem).")],
    index: Index = None,
    retriever_url: RetrieverUrl = None,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML config (default configs/synth.yaml).")
    ] = None,
    overrides: Overrides = None,
    workers: Workers = 1,
    chunk_mb: ChunkMb = None,
    pipeline_options: PipelineOptions = None,
    verbose: Verbose = False,
) -> None:
    """Harder questions from simple ones (WebDancer's E2HQA): entities replaced by descriptions found by
    search, each step verified by retrieval; rejected seeds go to rejected-*.jsonl with their reason."""
    settings = load_with_retriever(
        SynthesisSettings, config or "synth", overrides, index, retriever_url, required=True
    )
    with quiet_logs(output, "synthesize", verbose):
        beam_run = BeamRun(workers, tuple(beam_args(ctx, pipeline_options)))
        stats = run_synthesize(seeds, output, settings, beam_run, chunk_mb)
    typer.echo(format_synthesis_stats(stats))


data_app.command("cot", context_settings=BEAM_COMMAND)(cot_command)
