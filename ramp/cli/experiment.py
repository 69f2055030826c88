"""``ramp experiment``: every stage end to end (``demo``), the controlled RAMP-effect experiment and the
recipe comparison."""

from __future__ import annotations

import json
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel

from ramp.cli.demo import Demo, load_demo_config
from ramp.cli.options import Overrides
from ramp.cli.ramp_effect import run_experiment
from ramp.cli.recipe_comparison import run_comparison
from ramp.config import load_config
from ramp.experiment.config import RampEffectConfig, RecipeComparisonConfig
from ramp.experiment.recipe_report import format_recipe_table
from ramp.experiment.report import format_tables

experiment_app = typer.Typer(no_args_is_help=True)
M = TypeVar("M", bound=BaseModel)


@experiment_app.command("demo")
def demo_command(
    config: Annotated[
        str, typer.Option("--config", help="Demo recipe (configs/demo/demo.yaml, or ci.yaml: minutes).")
    ] = "demo/demo",
    output: Annotated[
        str | None, typer.Option("--output", help="Output directory (default: the recipe's output).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun stages that are done.")] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run just this stage (repeatable); others untouched.")
    ] = None,
    overrides: Overrides = None,
) -> None:
    """Every stage on the bundled data: masking -> index -> answerable samples -> trajectories -> tiny
    policy -> Megatron pretraining -> HF -> DAPO curriculum -> HotpotQA fine-tuning -> evaluation ->
    MLflow. A rerun skips the stages that are done (their inputs unchanged) unless --force."""
    demo = Demo(load_demo_config(config, overrides or [], output), echo=typer.echo)
    typer.echo(f"RAMP demo -> {demo.out} (stage progress below; done stages are skipped, --force reruns)")
    outcomes = demo.run(force=force, only=only or [])
    if (demo.out / "summary.json").exists():
        typer.echo("")
        typer.echo(demo.table(outcomes))


@experiment_app.command("ramp-effect")
def ramp_effect_command(
    config: Annotated[
        str, typer.Option("--config", help="YAML recipe (configs/experiment/ramp_effect.yaml).")
    ] = "experiment/ramp_effect",
    output: Annotated[str | None, typer.Option("--output", help="Output directory.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Seeds (each its own world).")] = None,
    overrides: Overrides = None,
) -> None:
    """Arms A (RAMP SFT + DAPO + QA), A-mixed, B (QA only) and C (LM pretraining + QA) on held-out two-hop
    questions of generated worlds: prints the tables and the verdict, writes results.json, a plot and MLflow
    runs. A rerun recomputes exactly the stages whose settings or inputs changed."""
    cfg = _load(RampEffectConfig, config, overrides, output, seeds)
    results = run_experiment(cfg, echo=typer.echo)
    typer.echo(format_tables(results))
    typer.echo(
        json.dumps(
            {"output": cfg.output, "verdict": results["verdict"], "mlflow_run_id": results["mlflow_run_id"]}
        )
    )
    typer.echo(f"plot: {cfg.output}/ramp_effect.png   results: {cfg.output}/results.json")


@experiment_app.command("recipes")
def recipes_command(
    config: Annotated[
        str, typer.Option("--config", help="YAML config (configs/experiment/recipes.yaml).")
    ] = "experiment/recipes",
    output: Annotated[str | None, typer.Option("--output", help="Output directory.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Seeds (each its own world).")] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run just this recipe (repeatable).")
    ] = None,
    overrides: Overrides = None,
) -> None:
    """Every recipe of configs/recipes/ from one cold start in the RAMP-effect world (same retriever,
    top-k and held-out questions; each seed its own world): prints the table and the differences against
    masksearch, writes results.json, a plot and MLflow runs. A rerun recomputes exactly what changed."""
    cfg = _load(RecipeComparisonConfig, config, overrides, output, seeds)
    results = run_comparison(cfg, only=only or [], echo=typer.echo)
    typer.echo(format_recipe_table(results))
    typer.echo(json.dumps({"output": cfg.output, "mlflow_run_id": results["mlflow_run_id"]}))
    typer.echo(f"plot: {cfg.output}/recipes.png   results: {cfg.output}/results.json")


def _load(
    model: type[M], config: str, overrides: list[str] | None, output: str | None, seeds: int | None
) -> M:
    """An experiment's config with ``--output`` and ``--seeds`` (when given) over the file, then ``--set``."""
    values = {k: v for k, v in (("output", output), ("seeds", seeds)) if v is not None}
    return load_config(model, config, overrides or [], values=values)
