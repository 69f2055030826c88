"""One process or ``torchrun`` ranks: the collectives the RL trainer needs (identity on one process), FSDP2
sharding of the policy, and the splits that keep every rank in step (FSDP's collectives need the same
number of forward/backward passes on every rank)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, value: float) -> float:
        return self.sum_all([value])[0]

    def sum_all(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over ranks, in one all-reduce."""
        if self.world == 1:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def max(self, value: int) -> int:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def gather(self, value: int) -> list[int]:
        if self.world == 1:
            return [value]
        out = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world)]
        dist.all_gather(out, torch.tensor([value], dtype=torch.long, device=self.device))
        return [int(t.item()) for t in out]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed() -> Dist:
    """This process's rank, world size and device (``torchrun``'s environment; one process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world == 1:
        return Dist(device=device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


def shard(model: Any) -> Any:
    """FSDP2: each decoder layer its own unit, the rest (embeddings, norm, head) the root."""
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def full_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The whole model's weights on every rank (gathered from FSDP2 shards)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """``parts`` contiguous chunks of near-equal size (some may be empty)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(list(items[start:end]))
        start = end
    return out


def micro_batches(items: Sequence[T], size: int, dist_info: Dist) -> list[list[T]]:
    """Chunks of at most ``size``; every rank gets the same number of chunks (FSDP's collectives)."""
    count = dist_info.max(max(1, math.ceil(len(items) / size)))
    return split(items, count)
