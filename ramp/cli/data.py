"""``ramp data``: the masking pipeline, its statistics and the answerability filter."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ramp.cli.options import BEAM_COMMAND, Overrides, PipelineOptions, Workers, beam_args

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
    pipeline_options: PipelineOptions = None,
) -> None:
    """Build masked samples. Beam options may also follow ``--`` (e.g. ``-- --runner=FlinkRunner``)."""
    if fmt is not None and fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    from ramp.data.stats import format_stats
    from ramp.pipelines.ramp_data import load_data_config, run_build

    cfg = load_data_config(config, fmt, overrides or [])
    stats = run_build(inputs, output, cfg, workers, beam_args(ctx, pipeline_options))
    typer.echo(format_stats(stats))


@data_app.command("stats")
def stats_command(
    directory: Annotated[str, typer.Argument(help="Output directory of `ramp data build`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Counts of an output directory: input records, samples, rejections by reason, masks by type and k."""
    from ramp.data.stats import format_stats, load_stats

    stats = load_stats(directory)
    typer.echo(json.dumps(stats, indent=2) if as_json else format_stats(stats))


@data_app.command("answerability", context_settings=BEAM_COMMAND)
def answerability_command(
    ctx: typer.Context,
    samples: Annotated[str, typer.Option("--samples", help="Output directory of `ramp data build`.")],
    output: Annotated[str, typer.Option("--output", help="Output directory (not the samples directory).")],
    index: Annotated[str | None, typer.Option("--index", help="Lucene index of the corpus.")] = None,
    retriever_url: Annotated[
        str | None, typer.Option("--retriever-url", help="A running `ramp serve-retriever`.")
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML config (default configs/retrieval.yaml).")
    ] = None,
    overrides: Overrides = None,
    workers: Workers = 1,
    pipeline_options: PipelineOptions = None,
) -> None:
    """Keep samples whose masks the search tool can answer without the source passage."""
    if (index is None) == (retriever_url is None):
        raise typer.BadParameter("give exactly one of --index and --retriever-url")
    from ramp.config import load_config
    from ramp.data.answerability import format_answerability_stats
    from ramp.pipelines.answerability import run_answerability
    from ramp.retrieval.config import RetrievalSettings, RetrieverConfig

    location = ["retriever.kind=lucene"] if index is not None else ["retriever.kind=http"]
    settings = load_config(RetrievalSettings, config or "retrieval", [*(overrides or []), *location])
    place = {"index": index} if index is not None else {"url": retriever_url}
    retriever = RetrieverConfig.model_validate({**settings.retriever.model_dump(), **place})
    stats = run_answerability(
        samples, output, retriever, settings.answerability, workers, beam_args(ctx, pipeline_options)
    )
    typer.echo(format_answerability_stats(stats))
