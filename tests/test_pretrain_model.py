"""The megatron model of `ramp pretrain train` on CPU: torch SDPA core attention (masked and per packed
conversation) against megatron's own DotProductAttention, and logits at the loss positions only against
logits everywhere: the same per-token loss and the same gradients (fp32, tiny models, TP=1 and TP=2)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ramp.pretrain.convert import _parallel

from ramp import engines
from ramp.train import cpu_shim
from ramp.train.model import (
    Qwen2Shape,
    build_gpt_model,
    causal_segment_mask,
    layer_spec,
    packed_rows_loss,
    packed_segments,
    padded_vocab_size,
    transformer_config,
)
from ramp.train.parallel import init_parallel, shutdown_parallel

TOLERANCE = 1e-5  # fp32, same weights: only the order of floating-point sums differs


def tiny_shape(tie: bool = False) -> Qwen2Shape:
    return Qwen2Shape(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=48,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        rms_norm_eps=1e-6,
        rope_theta=10_000.0,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
    )


def packed_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two rows of 64: one conversation filling the row, then three conversations and padding (so the
    first row's last segment id is the second row's first); a tenth of the positions carry loss, as in
    RAMP trajectories."""
    g = torch.Generator().manual_seed(seed)
    segments = torch.tensor([[0] * 64, [0] * 20 + [1] * 13 + [2] * 21 + [-1] * 10])
    loss_mask = (torch.rand(2, 64, generator=g) < 0.12).float() * (segments >= 0)
    loss_mask[1, 5] = loss_mask[1, 30] = loss_mask[0, 63] = 1.0
    return {
        "tokens": torch.randint(0, 300, (2, 64), generator=g),
        "labels": torch.randint(0, 300, (2, 64), generator=g),
        "loss_mask": loss_mask,
        "segment_ids": segments,
        "position_ids": torch.arange(64).expand(2, 64),
    }


def loss_and_grads(model: Any, batch: dict[str, torch.Tensor], **options: Any) -> list[torch.Tensor]:
    """[per-token loss × mask, every parameter's gradient] of Σ loss × mask, through the trainer's
    :func:`packed_rows_loss` (``options``) or, given ``attention_mask``, the model's own forward."""
    model.zero_grad(set_to_none=True)
    if "attention_mask" in options:
        per_token = model(batch["tokens"], batch["position_ids"], labels=batch["labels"], **options)
    else:
        per_token = packed_rows_loss(model, batch, **options)
    (per_token * batch["loss_mask"]).sum().backward()
    return [(per_token * batch["loss_mask"]).detach(), *(p.grad.clone() for p in model.parameters())]


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


@pytest.fixture()
def world_of_one() -> Any:
    with _parallel():
        yield


def build(shape: Qwen2Shape, tp: int = 1, spec: Any = None) -> Any:
    torch.manual_seed(0)
    config = transformer_config(shape, tp=tp)
    model = build_gpt_model(shape, config, vocab_size=padded_vocab_size(shape.vocab_size, tp))
    if spec is not None:  # the same weights under another layer spec
        other = engines.megatron("models.gpt").GPTModel(
            config=config,
            transformer_layer_spec=spec,
            vocab_size=padded_vocab_size(shape.vocab_size, tp),
            max_sequence_length=shape.max_position_embeddings,
            share_embeddings_and_output_weights=shape.tie_word_embeddings,
            position_embedding_type="rope",
            rotary_base=shape.rope_theta,
        )
        other.load_state_dict(model.state_dict())
        return other
    return model


def test_sdpa_attention_equals_megatron_dot_product_attention(world_of_one: Any):
    """With the block-diagonal mask (the GPU path) and per conversation with the padding dropped (the CPU
    path), the SDPA module gives megatron's DotProductAttention's loss and gradients at every position that
    carries loss."""
    shape, batch = tiny_shape(), packed_batch()
    ours = build(shape)
    megatron_spec = layer_spec(use_te=False)
    megatron_spec.submodules.self_attention.submodules.core_attention = engines.megatron(
        "transformer.dot_product_attention"
    ).DotProductAttention
    reference = build(shape, spec=megatron_spec)
    expected = loss_and_grads(reference, batch, attention_mask=causal_segment_mask(batch["segment_ids"]))
    masked = loss_and_grads(ours, batch, logits="all", per_conversation=False)
    assert max_difference(masked, expected) < TOLERANCE
    assert max_difference(loss_and_grads(ours, batch, logits="all"), expected) < TOLERANCE
    leaky = loss_and_grads(
        ours, batch, attention_mask=causal_segment_mask(torch.zeros_like(batch["segment_ids"]))
    )
    assert max_difference(leaky, expected) > 1e-3  # the test can tell row-wide attention apart


def test_packed_segments_are_the_runs_of_each_row():
    segments = torch.tensor(
        [[0, 0, 0, 1, 1, -1, -1, -1], [0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 2, -1]]
    )
    packed = packed_segments(segments)
    assert packed.cu_seqlens_q.tolist() == [0, 3, 5, 8, 16, 18, 22, 23, 24]  # a row boundary ends a run
    assert packed.max_seqlen_q == 8


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_loss_position_logits_equal_full_logits(world_of_one: Any, tie: bool):
    """Output layer + cross entropy at the loss positions only: the loss and every gradient (the tied
    embedding's too) equal those of logits at every position."""
    shape, batch = tiny_shape(tie), packed_batch()
    model = build(shape)
    full = loss_and_grads(model, batch, logits="all")
    at_positions = loss_and_grads(model, batch, logits="loss")
    assert max_difference(at_positions, full) < TOLERANCE
    assert float(full[0].abs().sum()) > 0 and all(float(g.abs().sum()) > 0 for g in full[1:])


def _tp_worker(rank: int, store: str, result: str) -> None:
    cpu_shim.install()
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    init_parallel(tp=2)
    try:
        batch = packed_batch()
        model = build(tiny_shape(tie=True), tp=2)
        full = loss_and_grads(model, batch, logits="all")
        at_positions = loss_and_grads(model, batch, logits="loss")
        difference = torch.tensor(max_difference(at_positions, full))
        dist.all_reduce(difference, op=dist.ReduceOp.MAX)
        if rank == 0:
            torch.save({"difference": float(difference), "loss": float(full[0].sum())}, result)
    finally:
        shutdown_parallel()


def test_loss_position_logits_under_tensor_parallelism():
    """TP=2 (two gloo processes): the gathered rows through the column-parallel output layer and the
    vocab-parallel cross entropy give the full-logits loss and gradients on every rank. (Sequence
    parallelism needs the Transformer Engine spec: megatron's torch norms refuse it, so not on a CPU.)"""
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp) / "result.pt")
        mp.spawn(_tp_worker, args=(str(Path(tmp) / "store"), result), nprocs=2)
        report = torch.load(result)
    assert report["loss"] > 0 and report["difference"] < TOLERANCE
