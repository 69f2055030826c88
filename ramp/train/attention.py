"""A core-attention module for megatron's local layer spec that calls torch's fused
``scaled_dot_product_attention`` (the flash kernel on CPU) instead of megatron's unfused ``baddbmm`` →
masked softmax → ``bmm``, which materialises ``[b·heads, s, s]`` scores and their gradients.

Same inputs, outputs and mask convention as megatron's ``DotProductAttention``: query ``[sq, b, np, hn]``,
key/value ``[sk, b, ng, hn]`` (grouped-query heads shared as megatron shares them), a boolean
``attention_mask`` with True = masked (None: causal), output ``[sq, b, np·hn]``. Packed rows can instead
come as ``packed_seq_params`` (:func:`ramp.train.model.packed_segments`): each conversation then attends
causally within itself through one SDPA call of its own length, which skips the blocks a block-diagonal
mask would compute and throw away.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

from ramp import engines


@cache
def sdpa_attention_class() -> type:
    """The class, built on first use (megatron through :mod:`ramp.engines`)."""
    tensor_parallel = engines.megatron("tensor_parallel")
    DotProductAttention = engines.megatron("transformer.dot_product_attention").DotProductAttention

    class SDPAttention(DotProductAttention):  # type: ignore[misc,valid-type]
        """megatron's ``DotProductAttention`` with its score computation replaced by torch SDPA."""

        def __init__(self, config: Any, layer_number: int, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, layer_number, *args, **kwargs)
            if self.softmax_offset is not None or self.scale_mask_softmax.window_size is not None:
                raise ValueError("SDPAttention supports the vanilla softmax without window attention")
            if config.apply_query_key_layer_scaling:  # megatron divides the scale, then multiplies it back
                self.softmax_scale *= self.layer_number

        def forward(
            self,
            query: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
            attention_mask: torch.Tensor | None,
            attn_mask_type: Any = None,
            attention_bias: torch.Tensor | None = None,
            packed_seq_params: Any = None,
        ) -> torch.Tensor:
            if attention_bias is not None:
                raise ValueError("SDPAttention takes no attention_bias")
            with tensor_parallel.get_cuda_rng_tracker().fork():
                if packed_seq_params is not None:
                    return self._per_segment(query, key, value, packed_seq_params)
                sq, b, heads, head_dim = query.shape
                context = self._sdpa(
                    query.permute(1, 2, 0, 3),
                    key.permute(1, 2, 0, 3),
                    value.permute(1, 2, 0, 3),
                    None if attention_mask is None else ~attention_mask,
                )
            return context.permute(2, 0, 1, 3).reshape(sq, b, heads * head_dim)

        def _per_segment(
            self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packed: Any
        ) -> torch.Tensor:
            """Causal attention within each run of ``packed.cu_seqlens_q`` over the row-major positions."""
            if packed.qkv_format != "sbhd" or packed.cu_seqlens_kv is not packed.cu_seqlens_q:
                raise ValueError("SDPAttention takes sbhd self-attention sequences (packed_segments)")
            sq, b, heads, head_dim = query.shape
            lengths = (packed.cu_seqlens_q[1:] - packed.cu_seqlens_q[:-1]).tolist()
            runs = [
                x.transpose(0, 1).reshape(b * sq, *x.shape[2:]).split(lengths) for x in (query, key, value)
            ]
            outputs = []
            for q, k, v in zip(*runs, strict=True):  # one run: [len, np, hn]
                out = self._sdpa(*(x.transpose(0, 1)[None] for x in (q, k, v)))  # [1, np, len, hn]
                outputs.append(out[0].transpose(0, 1))
            context = torch.cat(outputs)  # [b·s, np, hn]
            return context.view(b, sq, heads * head_dim).transpose(0, 1).contiguous()

        def _sdpa(
            self,
            query: torch.Tensor,
            key: torch.Tensor,
            value: torch.Tensor,
            keep: torch.Tensor | None = None,
        ) -> torch.Tensor:
            """torch SDPA over ``[b, heads, s, hn]``: ``keep`` (True = attend) or causal."""
            return F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=keep,
                dropout_p=self.attention_dropout.p if self.training else 0.0,
                is_causal=keep is None,
                scale=self.softmax_scale,
                enable_gqa=key.shape[1] != query.shape[1],
            )

    return SDPAttention
