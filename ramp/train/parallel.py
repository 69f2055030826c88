"""torch.distributed and megatron model-parallel setup for one process of a (possibly single-process) job.

Under ``torchrun`` the rank and world size come from the environment; a plain process becomes a world of
one through a file store. CPU uses gloo (with :mod:`ramp.train.cpu_shim`), GPU nccl.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ramp import engines
from ramp.train import cpu_shim


@dataclass(frozen=True)
class ParallelInfo:
    rank: int
    world_size: int
    tp: int
    pp: int
    dp: int
    dp_rank: int
    tp_rank: int
    pp_rank: int
    device: torch.device


def init_parallel(tp: int = 1, pp: int = 1, seed: int = 0) -> ParallelInfo:
    """Initialise torch.distributed (if needed), megatron's TP/PP/DP groups and its RNG trackers."""
    parallel_state, tensor_parallel = engines.megatron("parallel_state"), engines.megatron("tensor_parallel")
    cpu_shim.install()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group("nccl" if cuda else "gloo")
        else:
            store = tempfile.mkdtemp(prefix="ramp-dist-") + "/store"
            dist.init_process_group(
                "nccl" if cuda else "gloo", init_method=f"file://{store}", rank=0, world_size=1
            )
    world = dist.get_world_size()
    if world % (tp * pp):
        raise ValueError(f"world size {world} is not divisible by TP×PP = {tp}×{pp}")
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    torch.manual_seed(seed)  # CPU-initialised weights: identical on every DP replica
    tensor_parallel.model_parallel_cuda_manual_seed(seed, inference_rng_tracker=not cuda)
    return ParallelInfo(
        rank=dist.get_rank(),
        world_size=world,
        tp=tp,
        pp=pp,
        dp=parallel_state.get_data_parallel_world_size(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        pp_rank=parallel_state.get_pipeline_model_parallel_rank(),
        device=torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu"),
    )


def shutdown_parallel() -> None:
    """Destroy megatron's groups and the process group (so a process can initialise again)."""
    engines.megatron("parallel_state").destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
