"""What an RL run leaves in ``trainer.output_dir``: ``checkpoint/state.pt`` (model, optimizer, scheduler,
curriculum, health streaks, step, MLflow run id and the metric history: everything a resumed run needs,
no other random state exists), ``history.jsonl`` (one line of metrics per step), the final policy as an HF
checkpoint in ``policy/`` and ``reward_curve.png``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint/state.pt"
POLICY_DIR = "policy"
HISTORY = "history.jsonl"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically: a killed save leaves the previous checkpoint whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def write_history(path: Path, history: Sequence[dict[str, float]]) -> None:
    """The whole history (a resumed run drops the lines of steps after its checkpoint: they are redone)."""
    path.write_text("".join(json.dumps(h, sort_keys=True) + "\n" for h in history), encoding="utf-8")


def append_history(path: Path, metrics: dict[str, float]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(metrics, sort_keys=True) + "\n")


def save_policy(policy: Any, tokenizer: Any, state_dict: dict[str, torch.Tensor], directory: Path) -> None:
    """The policy as an HF checkpoint (``state_dict``: its full weights, gathered from FSDP2 shards)."""
    model = policy.module if hasattr(policy, "module") else policy
    model.save_pretrained(directory, state_dict=state_dict)
    tokenizer.save_pretrained(directory)
