"""Hugging Face Qwen2 <-> megatron-core checkpoints, and the conversion check.

    hf_to_mcore(hf_dir, out, tp)          HF weights -> dist_checkpointing dir (vocab padded for TP=tp)
    mcore_to_hf(ckpt, hf_config, out)     a converted or training checkpoint -> HF dir (+ tokenizer)
    check_conversion(hf_dir, tp)          converts, builds both on CPU (fp32, HF eager attention) and
                                          returns the max |logit difference| on a fixed input

Single-process steps run as a world of one; ``tp > 1`` logits come from ``tp`` gloo/nccl processes.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ramp import engines
from ramp.train import cpu_shim
from ramp.train.checkpoint import load_model, read_meta, resolve_checkpoint, save_model, shape_from_meta
from ramp.train.model import Qwen2Shape, build_gpt_model, padded_vocab_size, transformer_config
from ramp.train.parallel import init_parallel, shutdown_parallel
from ramp.train.weights import hf_to_mcore as map_hf_to_mcore
from ramp.train.weights import mcore_to_hf as map_mcore_to_hf

CHECK_TOLERANCE = 1e-5


@contextmanager
def _parallel(tp: int = 1) -> Any:
    """Megatron's groups for this block: a world of one unless torch.distributed is already running."""
    parallel_state = engines.megatron("parallel_state")
    owned = not dist.is_initialized()
    ready = parallel_state.model_parallel_is_initialized()
    if not ready:
        init_parallel(tp=tp)
    try:
        yield
    finally:
        if owned:
            shutdown_parallel()
        elif not ready:
            parallel_state.destroy_model_parallel()


def load_hf(hf_dir: str | Path, dtype: torch.dtype = torch.float32) -> Any:
    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype, attn_implementation="eager").eval()


def hf_to_mcore(hf_dir: str | Path, out: str | Path, tp: int = 1) -> Path:
    """Convert a HF Qwen2 checkpoint into a megatron ``dist_checkpointing`` checkpoint (any TP loads it)."""
    hf = load_hf(hf_dir)
    shape = Qwen2Shape.from_hf(hf.config)
    padded = padded_vocab_size(shape.vocab_size, tp)
    with _parallel():
        model = build_gpt_model(shape, transformer_config(shape), vocab_size=padded)
        missing, unexpected = model.load_state_dict(
            map_hf_to_mcore(hf.state_dict(), shape, padded), strict=False
        )
        if [k for k in missing if not k.endswith("_extra_state")] or unexpected:
            raise ValueError(f"weight map mismatch: missing {missing}, unexpected {unexpected}")
        return save_model(model, out, shape, padded, source=str(hf_dir), converted_for_tp=tp)


def mcore_state(ckpt: str | Path) -> tuple[dict[str, torch.Tensor], Qwen2Shape, dict[str, Any]]:
    """The full (TP=1) model state dict of a checkpoint, its shape and meta."""
    directory = resolve_checkpoint(ckpt)
    meta = read_meta(directory)
    shape = shape_from_meta(meta)
    with _parallel():
        model = build_gpt_model(shape, transformer_config(shape), vocab_size=meta["padded_vocab_size"])
        load_model(model, directory)
        state = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    return state, shape, meta


def mcore_to_hf(ckpt: str | Path, hf_config: str | Path, out: str | Path) -> Path:
    """Write a megatron checkpoint as a HF model in ``out`` with ``hf_config``'s config (and tokenizer)."""
    state, shape, _ = mcore_state(ckpt)
    config = AutoConfig.from_pretrained(hf_config)
    if Qwen2Shape.from_hf(config) != shape:
        raise ValueError(f"{hf_config} describes another model than the checkpoint {ckpt}")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    hf_state = map_mcore_to_hf(state, shape)
    if shape.tie_word_embeddings:
        hf_state.pop("lm_head.weight")
    model.load_state_dict(hf_state, strict=not shape.tie_word_embeddings)
    model.save_pretrained(out)
    with contextlib.suppress(OSError, ValueError):  # a config-only directory has no tokenizer to copy
        AutoTokenizer.from_pretrained(hf_config).save_pretrained(out)
    return Path(out)


def fixed_input(vocab_size: int, batch: int = 2, length: int = 48, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def mcore_logits(ckpt: str | Path, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits ``[b, s, vocab]`` (padding removed) of a checkpoint at this process's TP size."""
    directory = resolve_checkpoint(ckpt)
    meta = read_meta(directory)
    shape = shape_from_meta(meta)
    tp = engines.megatron("parallel_state").get_tensor_model_parallel_world_size()
    model = build_gpt_model(
        shape, transformer_config(shape, tp=tp), vocab_size=meta["padded_vocab_size"], parallel_output=False
    ).eval()
    load_model(model, directory)
    device = next(model.parameters()).device  # the CPU, or the GPU megatron built the model on
    ids = ids.to(device)
    s = ids.shape[1]
    causal = ~torch.ones(s, s, dtype=torch.bool, device=device).tril()[None, None]
    positions = torch.arange(s, device=device)[None].expand_as(ids)
    with torch.no_grad():
        logits = model(ids, positions, causal)
    return logits[..., : shape.vocab_size].float()


def _tp_worker(rank: int, tp: int, store: str, ckpt: str, ids: torch.Tensor, result: str) -> None:
    cpu_shim.install()
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=tp)
    init_parallel(tp=tp)
    try:
        logits = mcore_logits(ckpt, ids)
        if rank == 0:
            torch.save(logits, result)
    finally:
        shutdown_parallel()


def check_conversion(hf_dir: str | Path, tp: int = 1, work_dir: str | Path | None = None) -> dict[str, Any]:
    """Convert ``hf_dir``, run both models on a fixed input in fp32; max |Δlogit| and the round trip."""
    with tempfile.TemporaryDirectory(prefix="ramp-check-", dir=work_dir) as tmp:
        hf = load_hf(hf_dir)
        ids = fixed_input(hf.config.vocab_size)
        ckpt = hf_to_mcore(hf_dir, Path(tmp) / "mcore", tp=tp)
        if tp == 1:
            with _parallel():
                logits = mcore_logits(ckpt, ids)
        else:
            result = str(Path(tmp) / "logits.pt")
            mp.spawn(_tp_worker, args=(tp, str(Path(tmp) / "store"), str(ckpt), ids, result), nprocs=tp)
            logits = torch.load(result)
        with torch.no_grad():
            reference = hf(ids).logits.float()
        back = mcore_to_hf(ckpt, hf_dir, Path(tmp) / "hf")
        restored = load_hf(back).state_dict()
        original = hf.state_dict()
        exact = set(restored) == set(original) and all(
            torch.equal(restored[k], original[k]) for k in original
        )
    return {
        "max_abs_logit_diff": float((logits - reference).abs().max()),
        "round_trip_exact": exact,
        "tp": tp,
        "tolerance": CHECK_TOLERANCE,
        "ok": float((logits - reference).abs().max()) <= CHECK_TOLERANCE and exact,
    }


def format_check(report: dict[str, Any]) -> str:
    return json.dumps(report, sort_keys=True)
