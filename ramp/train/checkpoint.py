"""megatron ``dist_checkpointing`` checkpoints of a ``GPTModel``: TP/PP-agnostic model weights plus a
``ramp-mcore.json`` describing the model (its HF shape and padded vocabulary).

Training checkpoints live in ``<dir>/iter_NNNNNNN/`` with ``<dir>/latest_checkpointed_iteration.txt``;
a converted checkpoint (``ramp pretrain convert hf-to-mcore``) is a single such directory. Both load
at any TP size.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch.distributed as dist

from ramp import engines
from ramp.train.model import Qwen2Shape

META_FILE = "ramp-mcore.json"
LATEST_FILE = "latest_checkpointed_iteration.txt"


def iteration_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"iter_{step:07d}"


def latest_iteration(root: str | Path) -> int | None:
    path = Path(root) / LATEST_FILE
    return int(path.read_text().strip()) if path.is_file() else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a training directory -> its latest iteration."""
    step = latest_iteration(path)
    resolved = iteration_dir(path, step) if step is not None else Path(path)
    if not (resolved / META_FILE).is_file():
        raise FileNotFoundError(f"no megatron checkpoint ({META_FILE}) in {resolved}")
    return resolved


def read_meta(directory: str | Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    return meta


def shape_from_meta(meta: dict[str, Any]) -> Qwen2Shape:
    return Qwen2Shape(**meta["shape"])


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def save_model(model: Any, directory: str | Path, shape: Qwen2Shape, padded_vocab: int, **extra: Any) -> Path:
    """Save ``model`` (a ``GPTModel``, on every rank) with ``dist_checkpointing`` and its meta file."""
    directory = Path(directory)
    if _is_rank0():
        directory.mkdir(parents=True, exist_ok=True)  # dist_checkpointing.save needs it to exist
    _barrier()
    engines.megatron("dist_checkpointing").save(model.sharded_state_dict(), str(directory))
    if _is_rank0():
        meta = {"shape": asdict(shape), "padded_vocab_size": padded_vocab, **extra}
        (directory / META_FILE).write_text(
            json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    _barrier()
    return directory


def load_model(model: Any, directory: str | Path) -> None:
    """Load a ``dist_checkpointing`` checkpoint into ``model`` (any TP/PP layout)."""
    state = engines.megatron("dist_checkpointing").load(model.sharded_state_dict(), str(directory))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {directory} does not fit the model: missing {missing}, unexpected {unexpected}"
        )
