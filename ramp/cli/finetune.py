"""``ramp finetune``: fine-tuning on QA sets (HotpotQA, ...) with the project's trainers (SFT and DAPO)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from ramp.cli.options import Overrides, Verbose
from ramp.config import load_config
from ramp.finetune.dapo import train
from ramp.finetune.sft import run_sft, sft_overrides
from ramp.logs import quiet_logs
from ramp.qa.loaders import load_qa, write_qa_jsonl
from ramp.rl.config import RLConfig
from ramp.train.config import PretrainConfig

finetune_app = typer.Typer(no_args_is_help=True)

QA_TRAIN_FILE = "qa-train.jsonl"


@finetune_app.command("sft")
def sft(
    trajectories: Annotated[
        str, typer.Option(help="Verified QA trajectories (`ramp data cot` over a QA set)")
    ],
    output: Annotated[str, typer.Option(help="Output dir: shards/, checkpoints/, policy/ (the HF result)")],
    config: Annotated[
        str, typer.Option("--config", help="Megatron recipe (configs/pretrain.yaml)")
    ] = "pretrain",
    overrides: Overrides = None,
    verbose: Verbose = False,
) -> None:
    """SFT on QA trajectories through the Megatron stage (shards -> trainer -> HF policy); the policy to
    fine-tune is `--set model.hf=DIR`. For several GPUs, run `ramp pretrain launch` with the same values.
    Library logs and warnings go to OUTPUT/logs/sft.log."""
    settings = load_config(PretrainConfig, config, overrides or [], values=sft_overrides(output))
    with quiet_logs(output, "sft", verbose):
        result = run_sft(trajectories, output, settings)
    manifest, losses = result["manifest"], result["summary"]["losses"]
    last = max(losses) if losses else 0
    typer.echo(
        f"{manifest['packed']} conversations packed ({manifest['packing_efficiency']:.1%} efficiency); "
        f"trained to step {last}"
        + (f", loss {losses[last]:.4f}" if losses else "")
        + f"; policy in {result['policy']}"
    )


@finetune_app.command("rl")
def rl(
    dataset: Annotated[str, typer.Option(help="A ramp.qa dataset: hotpotqa, musique, flashrag, ...")],
    input: Annotated[
        str | None, typer.Option("--input", help="Its file or hub:REPO[:CONFIG[:SPLIT]] (fanoutqa: optional)")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="The first N questions")] = None,
    reward: Annotated[str | None, typer.Option(help="token_recall (the paper) | exact_match | f1")] = None,
    config: Annotated[str, typer.Option("--config", help="RL recipe (configs/rl.yaml or a path)")] = "rl",
    overrides: Overrides = None,
) -> None:
    """DAPO on a QA set: the questions go to the RL trainer's QA task (QA prompt, configurable reward).
    For several processes, run `ramp rl train --nproc N --set data.task=qa --set data.qa=FILE`."""
    settings = qa_rl_config(config, overrides or [], reward)
    count = write_qa_questions(settings, dataset, input, limit)
    typer.echo(f"{count} {dataset} questions -> {settings.data.qa}")
    out = train(settings)
    typer.echo(f"trained {settings.trainer.total_steps} steps; policy and checkpoint in {out}")


def qa_rl_config(config: str, overrides: Sequence[str], reward: str | None) -> RLConfig:
    """The RL recipe with its QA task: ``data.qa`` is OUTPUT/qa-train.jsonl (``trainer.output_dir``)."""
    settings = load_config(RLConfig, config, overrides)
    values: dict[str, object] = {
        "data.task": "qa",
        "data.qa": str(Path(settings.trainer.output_dir) / QA_TRAIN_FILE),
    }
    if reward is not None:
        values["reward.metric"] = reward
    return load_config(RLConfig, config, overrides, values=values)


def write_qa_questions(settings: RLConfig, dataset: str, source: str | None, limit: int | None) -> int:
    """The questions of ``dataset`` (file ``source``; the first ``limit``) as ``settings.data.qa``."""
    return write_qa_jsonl(load_qa(dataset, source, limit), Path(settings.data.qa))
