"""QA fine-tuning by SFT (``ramp finetune sft``): the Megatron stage's shards and trainer, run on QA
trajectories (``ramp data cot`` over a QA set), and the result converted back to a Hugging Face policy.

One data format and one trainer: this is ``ramp pretrain prepare`` → ``train`` → ``convert mcore-to-hf``
with the outputs laid out under one directory (``shards/``, ``checkpoints/``, ``policy/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ramp.pretrain.convert import mcore_to_hf
from ramp.pretrain.prepare import run_prepare
from ramp.pretrain.train import run_training

from ramp.train.config import PretrainConfig


def sft_overrides(output: str | Path) -> dict[str, object]:
    """The config values that put shards and checkpoints under ``output``."""
    out = Path(output)
    return {"data.blend": ["1.0", str(out / "shards")], "checkpoint.dir": str(out / "checkpoints")}


def run_sft(
    trajectories: str | Path, output: str | Path, config: PretrainConfig, workers: int = 1
) -> dict[str, Any]:
    """Prepare shards, train from ``model.hf``, write ``output/policy``; returns the run's summary."""
    out = Path(output)
    manifest = run_prepare(trajectories, out / "shards", config, workers)
    summary = run_training(config, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    policy = mcore_to_hf(config.checkpoint.dir, config.model.hf, out / "policy")
    return {"manifest": manifest, "summary": summary, "policy": str(policy)}
