"""``ramp data cot``: the multi-agent chain-of-thought trajectory builder."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ramp.cli.options import Overrides, PipelineOptions, Workers, beam_args

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
    index: Annotated[str | None, typer.Option("--index", help="Local Lucene index directory.")] = None,
    retriever_url: Annotated[
        str | None, typer.Option("--retriever-url", help="URL of a `ramp serve-retriever` server.")
    ] = None,
    workers: Workers = 1,
    pipeline_options: PipelineOptions = None,
) -> None:
    """Build verified CoT trajectories from masked samples; prints the verified yield.
    Beam options may also follow ``--`` (e.g. ``-- --runner=FlinkRunner``)."""
    if teacher is not None and teacher not in TEACHERS:
        raise typer.BadParameter(f"--teacher must be one of {', '.join(TEACHERS)}")
    if index and retriever_url:
        raise typer.BadParameter("give --index or --retriever-url, not both")
    from ramp.config import ConfigError, load_config
    from ramp.cot.config import CotConfig
    from ramp.pipelines.cot_builder import run_cot

    extra = [f"teacher.kind={teacher}"] if teacher else []
    if index:
        extra += ["retriever.kind=lucene", f"retriever.index={index}"]
    if retriever_url:
        extra += ["retriever.kind=http", f"retriever.url={retriever_url}"]
    try:
        cfg = load_config(CotConfig, config, [*extra, *(overrides or [])])
        stats = run_cot(samples, output, cfg, workers, beam_args(ctx, pipeline_options))
    except (ConfigError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(format_summary(stats))


def format_summary(stats: dict[str, Any]) -> str:
    reasons = ", ".join(f"{k}={v}" for k, v in stats["rejected_by_reason"].items()) or "none"
    return (
        f"teacher {stats['teacher']} (round {stats['round']}): {stats['samples_in']} samples -> "
        f"{stats['kept']} verified trajectories, {stats['rejected']} rejected ({reasons})\n"
        f"verified yield: {stats['verified_yield']:.1%}   "
        f"mean searches per kept trajectory: {stats['mean_searches_kept']:.2f}"
    )
