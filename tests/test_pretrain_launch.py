"""`ramp pretrain launch`: the one-node torchrun command and the multi-node Slurm script from one YAML."""

from __future__ import annotations

import pytest
from ramp.pretrain.launch import slurm_script, torchrun_command
from typer.testing import CliRunner

from ramp.cli import app
from ramp.config import load_config
from ramp.train.config import PretrainConfig

MULTI_NODE = [
    "launch.nodes=4",
    "launch.gpus_per_node=8",
    "launch.partition=gpu",
    "parallel.tp=2",
    "parallel.pp=2",
    "train.micro_batch_size=2",
    "train.global_batch_size=64",
    "data.blend=[0.3,runs/a,0.7,runs/b]",
    "checkpoint.dir=runs/ckpt",
]


def test_slurm_script_carries_the_layout():
    config = load_config(PretrainConfig, "pretrain", MULTI_NODE)
    script = slurm_script(config, "configs/pretrain.yaml", ["parallel.tp=2"])
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=gpu",
        "TP 2 × PP 2 × DP 8",
        "micro batch 2, global batch 64, 4 micro-batches per step",
        "data blend: 0.3 runs/a 0.7 runs/b",
        "checkpoints: runs/ckpt",
        '--nnodes "$SLURM_NNODES" --nproc-per-node 8',
        "-m ramp pretrain train --config configs/pretrain.yaml --set parallel.tp=2",
    ):
        assert line in script, line


def test_one_node_torchrun_and_bad_layouts():
    config = load_config(PretrainConfig, "pretrain", ["launch.gpus_per_node=4", "train.global_batch_size=8"])
    command = torchrun_command(config, "my.yaml")
    assert command[command.index("--nproc-per-node") + 1] == "4" and "--standalone" in command
    assert command[-6:] == ["-m", "ramp", "pretrain", "train", "--config", "my.yaml"]
    with pytest.raises(ValueError, match="not divisible"):
        torchrun_command(
            load_config(PretrainConfig, "pretrain", ["launch.gpus_per_node=3", "parallel.tp=2"]), "x"
        )
    with pytest.raises(ValueError, match="global_batch_size"):
        torchrun_command(
            load_config(PretrainConfig, "pretrain", ["launch.gpus_per_node=8", "train.global_batch_size=12"]),
            "x",
        )


def test_launch_dry_run_writes_the_script(tmp_path):
    script = tmp_path / "job.sbatch"
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "launch",
            "--dry-run",
            "--set",
            f"launch.script={script}",
            "--set",
            "launch.gpus_per_node=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "torchrun" in result.output and "--nproc-per-node 2" in result.output
    assert script.read_text().startswith("#!/bin/bash")
