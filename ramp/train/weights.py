"""The Qwen2 (Hugging Face) <-> megatron-core ``GPTModel`` weight map, on full (unsharded) tensors.

megatron's fused ``linear_qkv`` holds, per query group, the group's query heads, then its key head,
then its value head (rows, biases alike); ``linear_fc1`` is gate then up. The word embedding (and an
untied output layer) are padded with zero rows to the padded vocabulary. Tensor-parallel sharding is
left to ``dist_checkpointing``: these maps work on the TP=1 layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ramp.train.model import Qwen2Shape

Tensors = dict[str, torch.Tensor]


def _interleave_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, shape: Qwen2Shape) -> torch.Tensor:
    groups, per_group = shape.num_kv_heads, shape.num_heads // shape.num_kv_heads
    rest = q.shape[1:]
    q = q.reshape(groups, per_group * shape.head_dim, *rest)
    k = k.reshape(groups, shape.head_dim, *rest)
    v = v.reshape(groups, shape.head_dim, *rest)
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


def _split_qkv(qkv: torch.Tensor, shape: Qwen2Shape) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    groups, per_group, d = shape.num_kv_heads, shape.num_heads // shape.num_kv_heads, shape.head_dim
    rest = qkv.shape[1:]
    grouped = qkv.reshape(groups, (per_group + 2) * d, *rest)
    q, k, v = torch.split(grouped, [per_group * d, d, d], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def _pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    if weight.shape[0] > rows:
        raise ValueError(f"vocabulary of {weight.shape[0]} rows does not fit {rows} padded rows")
    return torch.cat([weight, weight.new_zeros(rows - weight.shape[0], *weight.shape[1:])])


def hf_to_mcore(hf: Mapping[str, torch.Tensor], shape: Qwen2Shape, padded_vocab: int) -> Tensors:
    """A Qwen2ForCausalLM state dict -> a TP=1 ``GPTModel`` state dict."""
    out: Tensors = {
        "embedding.word_embeddings.weight": _pad_rows(hf["model.embed_tokens.weight"], padded_vocab)
    }
    for i in range(shape.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        attn = src + "self_attn."
        out[dst + "input_layernorm.weight"] = hf[src + "input_layernorm.weight"]
        for kind in ("weight", "bias"):
            out[dst + f"self_attention.linear_qkv.{kind}"] = _interleave_qkv(
                hf[attn + f"q_proj.{kind}"], hf[attn + f"k_proj.{kind}"], hf[attn + f"v_proj.{kind}"], shape
            )
        out[dst + "self_attention.linear_proj.weight"] = hf[attn + "o_proj.weight"]
        out[dst + "pre_mlp_layernorm.weight"] = hf[src + "post_attention_layernorm.weight"]
        out[dst + "mlp.linear_fc1.weight"] = torch.cat(
            [hf[src + "mlp.gate_proj.weight"], hf[src + "mlp.up_proj.weight"]]
        )
        out[dst + "mlp.linear_fc2.weight"] = hf[src + "mlp.down_proj.weight"]
    out["decoder.final_layernorm.weight"] = hf["model.norm.weight"]
    if not shape.tie_word_embeddings:
        out["output_layer.weight"] = _pad_rows(hf["lm_head.weight"], padded_vocab)
    return {k: v.detach().clone() for k, v in out.items()}


def mcore_to_hf(mc: Mapping[str, torch.Tensor], shape: Qwen2Shape) -> Tensors:
    """A TP=1 ``GPTModel`` state dict -> a Qwen2ForCausalLM state dict (vocab padding removed)."""
    vocab = shape.vocab_size
    embed = mc["embedding.word_embeddings.weight"][:vocab]
    out: Tensors = {"model.embed_tokens.weight": embed}
    for i in range(shape.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        attn = dst + "self_attn."
        out[dst + "input_layernorm.weight"] = mc[src + "input_layernorm.weight"]
        for kind in ("weight", "bias"):
            q, k, v = _split_qkv(mc[src + f"self_attention.linear_qkv.{kind}"], shape)
            out[attn + f"q_proj.{kind}"], out[attn + f"k_proj.{kind}"], out[attn + f"v_proj.{kind}"] = q, k, v
        out[attn + "o_proj.weight"] = mc[src + "self_attention.linear_proj.weight"]
        out[dst + "post_attention_layernorm.weight"] = mc[src + "pre_mlp_layernorm.weight"]
        gate, up = torch.chunk(mc[src + "mlp.linear_fc1.weight"], 2)
        out[dst + "mlp.gate_proj.weight"], out[dst + "mlp.up_proj.weight"] = gate, up
        out[dst + "mlp.down_proj.weight"] = mc[src + "mlp.linear_fc2.weight"]
    out["model.norm.weight"] = mc["decoder.final_layernorm.weight"]
    out["lm_head.weight"] = embed if shape.tie_word_embeddings else mc["output_layer.weight"][:vocab]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}
