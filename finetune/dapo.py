"""DAPO reinforcement learning on RAMP samples (or QA sets): the entry point, as Megatron's
``pretrain_gpt.py`` is over ``megatron.core``. The trainer lives in :mod:`ramp.rl`:

- :mod:`ramp.rl.trainer`: the loop, top to bottom (rollouts → old log-probs → advantages → health →
  PPO-style updates → weight sync → metrics, curriculum, checkpoint);
- :mod:`ramp.rl.rollout`: episodes through the rollout engine and the retriever, rewards, dynamic sampling;
- :mod:`ramp.rl.actor`: log-probs at the sampled positions only, the clipped mini-batch updates;
- :mod:`ramp.rl.core_algos`: the formulas, registered by name; :mod:`ramp.rl.metrics`: how each metric
  is reduced; :mod:`ramp.rl.checkpoint`: what a run leaves on disk; :mod:`ramp.train.health`: what stops it.

One process (CPU or one GPU), or ``torchrun --nproc_per_node N -m ramp.finetune.dapo --config ...``: the
policy is sharded with FSDP2 (``fully_shard`` per decoder layer), every rank generates its share of each
generation batch with its own rollout engine, and the token-mean loss divides by the token count over all
ranks. A resumed run continues where the last checkpoint stopped and logs into the same MLflow run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch.distributed as dist

from ramp.config import load_config
from ramp.rl.config import RLConfig
from ramp.rl.trainer import RLTrainer, StepCallback


def train(config: RLConfig, on_step_end: StepCallback | None = None) -> Path:
    """Run DAPO to ``trainer.total_steps``; returns the output directory.

    ``on_step_end(step, metrics)`` runs after each step's checkpoint (tests stop a run there).
    """
    return RLTrainer(config).fit(on_step_end)


def main() -> None:
    """``torchrun ... -m ramp.finetune.dapo --config configs/rl.yaml [--set key=value ...]``."""
    parser = argparse.ArgumentParser(description="DAPO RL (see ramp rl train)")
    parser.add_argument("--config", default="rl")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    train(load_config(RLConfig, args.config, args.overrides))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
