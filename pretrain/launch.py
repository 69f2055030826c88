"""``ramp pretrain launch``: the ``torchrun`` command for one node (printed and run) and a Slurm script
for many nodes, both from the same YAML and overrides."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from ramp.train.config import PretrainConfig


def _check(config: PretrainConfig) -> int:
    launch, par = config.launch, config.parallel
    world = launch.nodes * launch.gpus_per_node
    if world % (par.tp * par.pp):
        raise ValueError(f"{world} processes are not divisible by TP×PP = {par.tp}×{par.pp}")
    config.grad_accumulation(world)  # the global batch must split over DP ranks and micro-batches
    return world // (par.tp * par.pp)


def _train_args(config_path: str, overrides: Sequence[str]) -> list[str]:
    return [
        "-m",
        "ramp",
        "pretrain",
        "train",
        "--config",
        config_path,
        *(a for o in overrides for a in ("--set", o)),
    ]


def torchrun_command(config: PretrainConfig, config_path: str, overrides: Sequence[str] = ()) -> list[str]:
    """One node: ``torchrun --standalone --nproc-per-node G`` over ``ramp pretrain train``."""
    _check(config)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    return [
        torchrun,
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(config.launch.gpus_per_node),
        "--no-python",
        sys.executable,
        *_train_args(config_path, overrides),
    ]


def slurm_script(config: PretrainConfig, config_path: str, overrides: Sequence[str] = ()) -> str:
    """A Slurm batch script: one ``torchrun`` per node, rendezvous on the first node."""
    dp = _check(config)
    launch, par, train = config.launch, config.parallel, config.train
    sbatch = [
        "#SBATCH --job-name=ramp-pretrain",
        f"#SBATCH --nodes={launch.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={launch.gpus_per_node}",
        f"#SBATCH --time={launch.time}",
        "#SBATCH --exclusive",
    ]
    if launch.partition:
        sbatch.append(f"#SBATCH --partition={launch.partition}")
    if launch.account:
        sbatch.append(f"#SBATCH --account={launch.account}")
    container = f"--container-image={shlex.quote(launch.container_image)} " if launch.container_image else ""
    train_cmd = shlex.join(["python", *_train_args(config_path, overrides)])
    return "\n".join(
        [
            "#!/bin/bash",
            *sbatch,
            "#",
            f"# RAMP pretraining: {launch.nodes} node(s) × {launch.gpus_per_node} GPUs = "
            f"TP {par.tp} × PP {par.pp} × DP {dp}",
            f"# micro batch {train.micro_batch_size}, global batch {train.global_batch_size}, "
            f"{config.grad_accumulation(launch.nodes * launch.gpus_per_node)} micro-batches per step",
            f"# data blend: {' '.join(config.data.blend)}",
            f"# checkpoints: {config.checkpoint.dir}",
            "set -euo pipefail",
            'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            f'srun {container}torchrun --nnodes "$SLURM_NNODES" --nproc-per-node {launch.gpus_per_node} \\',
            '    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d \\',
            f'    --rdzv-endpoint "$MASTER_ADDR:{launch.master_port}" \\',
            f"    --no-python {train_cmd}",
            "",
        ]
    )


def launch(config: PretrainConfig, config_path: str, overrides: Sequence[str] = (), run: bool = True) -> int:
    """Write the Slurm script; on one node also print and run the torchrun command (its exit code)."""
    script = Path(config.launch.script)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(slurm_script(config, config_path, overrides), encoding="utf-8")
    print(f"Slurm script: {script}  (submit with: sbatch {shlex.quote(str(script))})")
    if config.launch.nodes > 1:
        return 0
    command = torchrun_command(config, config_path, overrides)
    print(shlex.join(command), flush=True)
    return subprocess.run(command, check=False).returncode if run else 0
