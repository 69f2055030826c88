"""``ramp pretrain``: token shards, Megatron-core training, HF <-> megatron conversion, launcher."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from ramp.cli.options import BEAM_COMMAND, Overrides, PipelineOptions, Verbose, Workers, beam_args
from ramp.config import ConfigError, load_config
from ramp.logs import quiet_logs
from ramp.pretrain.convert import check_conversion, hf_to_mcore, mcore_to_hf
from ramp.pretrain.launch import launch
from ramp.pretrain.prepare import run_prepare
from ramp.pretrain.train import run_training, train_log_name
from ramp.train.config import PretrainConfig
from ramp.train.init import InitConfig, init_policy

pretrain_app = typer.Typer(no_args_is_help=True, add_completion=False)
convert_app = typer.Typer(no_args_is_help=True, add_completion=False)
pretrain_app.add_typer(convert_app, name="convert", help="Convert checkpoints between HF and megatron-core.")

Config = Annotated[str, typer.Option("--config", help="YAML config (default configs/pretrain.yaml).")]


def _load(
    config: str, overrides: list[str] | None, values: dict[str, object] | None = None
) -> PretrainConfig:
    try:
        return load_config(PretrainConfig, config, overrides or [], values=values)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@pretrain_app.command("prepare", context_settings=BEAM_COMMAND)
def prepare_command(
    ctx: typer.Context,
    trajectories: Annotated[
        str, typer.Option("--trajectories", help="Directory with trajectories-*.parquet.")
    ],
    output: Annotated[str, typer.Option("--output", help="Output directory for the shards.")],
    config: Config = "pretrain",
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="HF tokenizer dir (default model.hf).")
    ] = None,
    overrides: Overrides = None,
    workers: Workers = 1,
    pipeline_options: PipelineOptions = None,
) -> None:
    """Tokenize trajectories (assistant-only loss mask), pack them and write megatron IndexedDataset shards.
    Beam options may also follow ``--``."""
    cfg = _load(config, overrides, {"model.tokenizer": tokenizer} if tokenizer else None)
    try:
        manifest = run_prepare(trajectories, output, cfg, workers, beam_args(ctx, pipeline_options))
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    reasons = ", ".join(f"{k}={v}" for k, v in manifest["rejected_by_reason"].items()) or "none"
    typer.echo(
        f"{manifest['conversations_in']} conversations -> {manifest['packed']} packed "
        f"into {manifest['rows']} rows "
        f"of {manifest['seq_length'] + 1} tokens, {manifest['rejected']} rejected ({reasons})\n"
        f"packing efficiency: {manifest['packing_efficiency']:.1%}   loss tokens: {manifest['loss_tokens']}"
    )


@pretrain_app.command("train")
def train_command(config: Config = "pretrain", overrides: Overrides = None, verbose: Verbose = False) -> None:
    """Train a megatron-core GPTModel on packed shards (run under torchrun for several processes).
    Megatron's and torch's warnings go to the log beside checkpoint.dir (logs/pretrain-train*.log)."""
    cfg = _load(config, overrides)
    with quiet_logs(Path(cfg.checkpoint.dir).parent, train_log_name(), verbose):
        summary = run_training(cfg, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if summary["losses"]:
        last = max(summary["losses"])
        typer.echo(
            json.dumps(
                {
                    **{k: v for k, v in summary.items() if k != "losses"},
                    "final_step": last,
                    "final_loss": summary["losses"][last],
                }
            )
        )


@pretrain_app.command("launch")
def launch_command(
    config: Config = "pretrain",
    overrides: Overrides = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the command and write the script only.")
    ] = False,
) -> None:
    """Print and run the torchrun command (one node); write the Slurm script (any number of nodes)."""
    cfg = _load(config, overrides)
    path = config if config.endswith((".yaml", ".yml")) else f"configs/{config}.yaml"
    code = launch(cfg, path, overrides or [], run=not dry_run)
    raise typer.Exit(code)


@convert_app.command("hf-to-mcore")
def hf_to_mcore_command(
    hf: Annotated[str, typer.Option("--hf", help="Hugging Face Qwen2 model directory.")],
    out: Annotated[str, typer.Option("--out", help="Output megatron checkpoint directory.")],
    tp: Annotated[int, typer.Option("--tp", min=1, help="Pad the vocabulary for this TP size.")] = 1,
) -> None:
    """HF weights -> a megatron dist_checkpointing checkpoint (loads at any TP/PP)."""
    typer.echo(f"wrote {hf_to_mcore(hf, out, tp)}")


@convert_app.command("mcore-to-hf")
def mcore_to_hf_command(
    ckpt: Annotated[str, typer.Option("--ckpt", help="Megatron checkpoint (or training checkpoint dir).")],
    hf_config: Annotated[str, typer.Option("--hf-config", help="HF dir with the model's config.json.")],
    out: Annotated[str, typer.Option("--out", help="Output Hugging Face directory.")],
) -> None:
    """A megatron checkpoint -> a Hugging Face model directory (with the tokenizer when hf-config has one)."""
    typer.echo(f"wrote {mcore_to_hf(ckpt, hf_config, out)}")


@pretrain_app.command("check-conversion")
def check_conversion_command(
    hf: Annotated[str, typer.Option("--hf", help="Hugging Face Qwen2 model directory.")],
    tp: Annotated[int, typer.Option("--tp", min=1, help="Tensor-parallel size of the megatron model.")] = 1,
) -> None:
    """Convert, run both models in fp32 on a fixed input, print the max |logit difference|; exit 1 above
    the tolerance or when HF -> megatron -> HF is not exact."""
    report = check_conversion(hf, tp)
    typer.echo(json.dumps(report, sort_keys=True))
    if not report["ok"]:
        raise typer.Exit(1)


@pretrain_app.command("init")
def init_command(
    corpus: Annotated[
        list[str],
        typer.Option("--corpus", help="Corpus file or directory (.jsonl, .parquet, text); repeatable."),
    ],
    output: Annotated[str, typer.Option("--output", help="Output Hugging Face directory.")],
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", help="bpe (byte-level BPE) or word (word-level).")
    ] = "bpe",
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", help="The most tokens the tokenizer learns.")
    ] = 4000,
    overrides: Overrides = None,
) -> None:
    """Train a tokenizer on the corpus and write it with a random Qwen2 (sizes from --set model.*)."""
    try:
        cfg = load_config(
            InitConfig, None, overrides or [], {"tokenizer": tokenizer, "vocab_size": vocab_size}
        )
        summary = init_policy(corpus, output, cfg)
    except (ConfigError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, sort_keys=True))
