"""``ramp eval``: the distractor corpus, evaluation runs tracked in MLflow, and run comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ramp.cli.options import Overrides
from ramp.config import load_config
from ramp.eval.compare import compare_runs
from ramp.eval.run import run_eval
from ramp.qa.config import EvalConfig
from ramp.qa.corpus import build_corpus
from ramp.qa.scoring import METRIC_NAMES

eval_app = typer.Typer(no_args_is_help=True)


@eval_app.command("corpus")
def corpus(
    dataset: Annotated[str, typer.Option(help="hotpotqa | 2wikimultihopqa | musique")],
    input: Annotated[Path, typer.Option("--input", help="The dataset file (official layout)")],
    output: Annotated[Path, typer.Option(help="Output directory (passages-00000.parquet)")],
) -> None:
    """The context paragraphs of a QA file as a passages corpus for `ramp index build` (deduplicated)."""
    typer.echo(format_corpus_stats(build_corpus(dataset, input, output), output))


def format_corpus_stats(stats: dict[str, int], output: Path) -> str:
    """The line ``ramp eval corpus`` (and the demo's stage) prints."""
    return (
        f"{stats['paragraphs']} paragraphs -> {stats['passages']} passages in {output} "
        f"({stats['duplicates']} duplicates, {stats['empty']} empty)"
    )


@eval_app.command("run")
def run(
    config: Annotated[str, typer.Option("--config", help="YAML config (default configs/eval.yaml)")] = "eval",
    overrides: Overrides = None,
    policy: Annotated[
        str | None, typer.Option(help="agent | builtin (the no-model floor) | decompose (AceSearcher)")
    ] = None,
    output: Annotated[str | None, typer.Option(help="Output directory (overrides output_dir)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Evaluate a policy on every configured dataset; resumable; logged to MLflow."""
    values = {k: v for k, v in (("policy", policy), ("output_dir", output)) if v is not None}
    cfg = load_config(EvalConfig, config, overrides or [], values=values)
    result = run_eval(cfg, progress=progress)
    names = [d.name for d in cfg.datasets]
    typer.echo(f"{result.questions} questions ({result.computed} answered now); MLflow run {result.run_id}")
    for name in [*names, "macro"]:
        scores = "  ".join(f"{m} {100 * result.summary.get(f'{m}/{name}', 0.0):5.1f}" for m in METRIC_NAMES)
        typer.echo(f"{name:<20} {scores}")
    typer.echo(f"rows: {result.predictions}")


@eval_app.command("compare")
def compare(
    runs: Annotated[list[str], typer.Argument(help="MLflow run ids or run names")],
    metric: Annotated[str, typer.Option(help="exact_match | f1 | token_recall | judge")] = "token_recall",
    output: Annotated[Path, typer.Option(help="Directory for compare.md and compare.png")] = Path(
        "runs/eval/compare"
    ),
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default: runs/mlflow.db)")] = None,
) -> None:
    """Runs side by side: datasets as columns, runs as rows, macro average last."""
    comparison = compare_runs(runs, metric, output, tracking_uri)
    typer.echo(f"{metric} (%)")
    typer.echo(comparison.text())
    typer.echo(f"saved {comparison.markdown} and {comparison.png}")
