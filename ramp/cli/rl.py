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
from ramp.rl.verl_launch import Cluster, write_run

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
    config: Annotated[str, typer.Option("--config", help="RL recipe the run takes its values from.")] = "rl",
    overrides: Overrides = None,
    prompts: Annotated[
        str | None, typer.Option("--prompts", help="Prompt templates (default: the recipe's data.prompts).")
    ] = None,
    nnodes: Annotated[int, typer.Option("--nnodes", min=1, help="Nodes of the verl run.")] = 1,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", min=1, help="GPUs per node.")] = 8,
    retriever_port: Annotated[
        int, typer.Option("--retriever-port", help="Port of the retriever each node serves on 127.0.0.1.")
    ] = 8000,
    max_prompt_length: Annotated[
        int,
        typer.Option(
            "--max-prompt-length", min=1, help="Prompt tokens (the rest of the context is response)."
        ),
    ] = 1024,
) -> None:
    """Write a verl run: RAMP samples (and QA sets) as verl parquet, the search tool and agent-loop
    configs, one config per curriculum stage and launch.sh (scored by ramp.rl.verl.compute_score)."""
    if not samples and not qa:
        raise typer.BadParameter("give --samples and/or --qa")
    settings = load_config(RLConfig, config, overrides or [])
    templates = prompts or settings.data.prompts
    written = []
    if samples:
        by_k = settings.curriculum.mode == "staged"
        written += export_samples(samples, output, by_k=by_k, prompts=templates)
    qa_files = []
    for item in qa or []:
        name, sep, source = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--qa {item!r} is not NAME=FILE")
        qa_files.append(export_qa(source, output / f"{name}.parquet", data_source=name, prompts=templates))
    for path, rows in [*written, *qa_files]:
        typer.echo(f"{rows} rows -> {path}")
    if samples:
        cluster = Cluster(nnodes, gpus_per_node, retriever_port, max_prompt_length)
        files = {path.stem: path for path, _ in written}
        for path in write_run(settings, files, output, cluster, val_files=[p for p, _ in qa_files]):
            typer.echo(f"wrote {path}")
