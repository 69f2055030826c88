"""``ramp rl``: DAPO training with the mask-count curriculum, and the verl export for scale-out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from ramp.cli.options import Overrides
from ramp.config import load_config
from ramp.finetune.dapo import train as run_training
from ramp.rl.config import RLConfig
from ramp.rl.verl import export_qa, export_samples

rl_app = typer.Typer(no_args_is_help=True)


@rl_app.command("train")
def train(
    config: Annotated[str, typer.Option("--config", help="RL recipe (configs/rl.yaml or a path).")] = "rl",
    overrides: Overrides = None,
    nproc: Annotated[
        int, typer.Option("--nproc", min=1, help="Processes (torchrun + FSDP2); 1 trains in this process.")
    ] = 1,
) -> None:
    """Train a policy with DAPO: rollouts with search, rewards, dynamic sampling, clipped updates."""
    settings = load_config(RLConfig, config, overrides or [])
    if nproc > 1:
        sets = [arg for item in overrides or [] for arg in ("--set", item)]
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        command += ["-m", "ramp.finetune.dapo", "--config", config, *sets]
        raise typer.Exit(subprocess.run(command, check=False).returncode)
    out = run_training(settings)
    typer.echo(f"trained {settings.trainer.total_steps} steps; policy and checkpoint in {out}")


@rl_app.command("export-verl")
def export_verl(
    output: Annotated[Path, typer.Option("--output", help="Output directory for the parquet files.")],
    samples: Annotated[
        str | None, typer.Option("--samples", help="Directory of samples-*.parquet (RAMP tasks).")
    ] = None,
    qa: Annotated[
        list[str] | None,
        typer.Option("--qa", help="NAME=FILE.jsonl QA set ({id, question, golden_answers})."),
    ] = None,
    by_k: Annotated[bool, typer.Option(help="One RAMP file per mask count (curriculum stages).")] = True,
    prompts: Annotated[str, typer.Option("--prompts", help="Prompt templates (recipe or path).")] = "prompts",
) -> None:
    """Write RAMP samples (and QA sets) in verl's RL parquet layout, scored by ramp.rl.verl.compute_score."""
    if not samples and not qa:
        raise typer.BadParameter("give --samples and/or --qa")
    written = []
    if samples:
        written += export_samples(samples, output, by_k=by_k, prompts=prompts)
    for item in qa or []:
        name, sep, source = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--qa {item!r} is not NAME=FILE")
        written.append(export_qa(source, output / f"{name}.parquet", data_source=name, prompts=prompts))
    for path, rows in written:
        typer.echo(f"{rows} rows -> {path}")
