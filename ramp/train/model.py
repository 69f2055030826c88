"""megatron-core ``GPTModel`` construction for the Qwen2 family (RMSNorm, SwiGLU, GQA, QKV bias, RoPE).

Everything megatron is imported lazily. On CPU the local layer spec is used (call
``ramp.train.cpu_shim.install()`` first); with Transformer Engine importable on a GPU, the TE spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from ramp.train.attention import sdpa_attention_class

VOCAB_MULTIPLE = 128


def padded_vocab_size(vocab_size: int, tp: int = 1, multiple: int = VOCAB_MULTIPLE) -> int:
    """``vocab_size`` rounded up to a multiple of ``tp × multiple`` (megatron's vocab padding)."""
    step = tp * multiple
    return -(-vocab_size // step) * step


@dataclass(frozen=True)
class Qwen2Shape:
    """The architecture fields megatron needs, read from a Hugging Face Qwen2 config."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool

    @classmethod
    def from_hf(cls, config: Any) -> Qwen2Shape:
        if getattr(config, "model_type", "qwen2") not in ("qwen2",):
            raise ValueError(f"only the Qwen2 family is supported, got model_type={config.model_type!r}")
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=config.num_key_value_heads or heads,
            head_dim=head_dim,
            rms_norm_eps=config.rms_norm_eps,
            rope_theta=float(rope_theta(config)),
            max_position_embeddings=config.max_position_embeddings,
            tie_word_embeddings=bool(config.tie_word_embeddings),
        )


def rope_theta(config: Any) -> float:
    """The checkpoint's RoPE base (transformers 5 keeps it in ``rope_parameters``)."""
    params = getattr(config, "rope_parameters", None) or {}
    if "rope_theta" in params:
        return float(params["rope_theta"])
    return float(getattr(config, "rope_theta", 10000.0))


def transformer_config(
    shape: Qwen2Shape,
    *,
    tp: int = 1,
    pp: int = 1,
    bf16: bool = False,
    recompute: bool = False,
    sequence_parallel: bool = False,
    init_std: float = 0.02,
) -> Any:
    """A megatron ``TransformerConfig`` matching ``shape`` (fused kernels off: they need CUDA)."""
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    dtype = torch.bfloat16 if bf16 else torch.float32
    extra: dict[str, Any] = {}
    if recompute:
        extra.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    return TransformerConfig(
        num_layers=shape.num_layers,
        hidden_size=shape.hidden_size,
        ffn_hidden_size=shape.intermediate_size,
        num_attention_heads=shape.num_heads,
        num_query_groups=shape.num_kv_heads,
        kv_channels=shape.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=shape.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        sequence_parallel=sequence_parallel,
        params_dtype=dtype,
        bf16=bf16,
        pipeline_dtype=dtype,
        calculate_per_token_loss=True,
        init_method_std=init_std,
        use_cpu_initialization=not torch.cuda.is_available(),
        **extra,
    )


def layer_spec(use_te: bool | None = None) -> Any:
    """The Transformer Engine spec when TE is importable on a GPU (or ``use_te``), else the local spec
    with torch SDPA as its core attention (:mod:`ramp.train.attention`)."""
    from megatron.core.models.gpt import gpt_layer_specs as specs

    if use_te is None:
        use_te = te_spec_available()
    if use_te:
        return specs.get_gpt_layer_with_transformer_engine_spec()
    spec = specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = sdpa_attention_class()
    return spec


def te_spec_available() -> bool:
    """A GPU and an importable Transformer Engine: the default spec is then TE's."""
    return torch.cuda.is_available() and _te_importable()


def _te_importable() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def build_gpt_model(
    shape: Qwen2Shape,
    config: Any,
    *,
    vocab_size: int,
    max_sequence_length: int | None = None,
    parallel_output: bool = True,
    use_te: bool | None = None,
) -> Any:
    """A megatron ``GPTModel`` (:func:`gpt_model_class`) for ``shape`` with ``vocab_size`` (already padded)
    output rows.

    Call ``initialize_model_parallel`` and ``model_parallel_cuda_manual_seed`` first.
    """
    from megatron.core import parallel_state

    return gpt_model_class()(
        config=config,
        transformer_layer_spec=layer_spec(use_te),
        vocab_size=vocab_size,
        max_sequence_length=max_sequence_length or shape.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=parallel_output,
        share_embeddings_and_output_weights=shape.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=shape.rope_theta,  # a float base works (megatron annotates int)
    )


@cache
def gpt_model_class() -> type:
    """megatron's ``GPTModel``, whose loss, when ``forward`` gets ``labels`` and a ``loss_mask``, applies the
    output layer and the cross entropy only at the positions where the mask is non-zero.

    The returned per-token loss is ``[b, s]`` as usual, zero elsewhere: equal to the full-logits loss times
    the mask, with the same gradients, while the output-layer matmul and the cross entropy shrink to the
    loss-carrying rows (about a tenth of a RAMP trajectory; the rest is prompt and retrieved text).
    """
    from megatron.core.models.gpt import GPTModel

    class RampGPTModel(GPTModel):
        def _postprocess(self, hidden_states: Any, **kwargs: Any) -> Any:
            labels, loss_mask = kwargs.get("labels"), kwargs.get("loss_mask")
            if labels is None or loss_mask is None or not self.post_process or self.config.mtp_num_layers:
                return super()._postprocess(hidden_states, **kwargs)
            return loss_at_positions(self, hidden_states, labels, loss_mask != 0)

    return RampGPTModel


def loss_at_positions(
    model: Any, hidden_states: torch.Tensor, labels: torch.Tensor, where: torch.Tensor
) -> Any:
    """Per-token loss ``[b, s]`` of ``model`` (a megatron ``GPTModel`` on its last pipeline stage) from its
    final ``hidden_states`` ``[s, b, h]``, computed at the positions ``where`` (``[b, s]`` bool) only.

    With tensor parallelism the gathered rows go through the column-parallel output layer and megatron's
    vocab-parallel cross entropy; under sequence parallelism the hidden states are first gathered along the
    sequence (the rows to keep may sit on any rank).
    """
    from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

    layer = model.output_layer
    sequence_parallel = layer.sequence_parallel
    if sequence_parallel:  # the backward splits the (TP-all-reduced) gradient back to this rank's shard
        hidden_states = gather_from_sequence_parallel_region(
            hidden_states, tensor_parallel_output_grad=False, group=model.pg_collection.tp
        )
    s, b, h = hidden_states.shape
    index = where.transpose(0, 1).reshape(-1).nonzero().squeeze(1)  # [s, b] order, as the hidden states
    rows = hidden_states.reshape(s * b, h).index_select(0, index).unsqueeze(1)  # [n, 1, h]
    weight = model.shared_embedding_or_output_weight() if model.share_embeddings_and_output_weights else None
    layer.sequence_parallel = False  # the rows are whole on every rank, as in megatron's inference path
    try:
        logits, _ = layer(rows, weight=weight, runtime_gather_output=False)
    finally:
        layer.sequence_parallel = sequence_parallel
    targets = labels.transpose(0, 1).reshape(-1).index_select(0, index)[None]  # [1, n]
    loss = model.compute_language_model_loss(targets, logits)[0]  # [n]
    per_token = loss.new_zeros(s * b).index_put((index,), loss)
    return per_token.view(s, b).transpose(0, 1)


def causal_segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """megatron's boolean attention mask ``[b, 1, s, s]`` (True = masked) for packed rows.

    A token attends to earlier tokens of its own segment (conversation) only; ``segment_ids`` is
    ``[b, s]``. RoPE scores depend on relative positions only, so with this block-diagonal mask a
    packed conversation sees exactly what it would see alone, without resetting position ids.
    """
    s = segment_ids.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return ~(same & causal)[:, None]


def packed_segments(segment_ids: torch.Tensor) -> Any:
    """The conversations of packed rows ``segment_ids`` ``[b, s]`` as megatron ``PackedSeqParams`` for
    :mod:`ramp.train.attention` (local spec), format ``sbhd``: ``cu_seqlens`` of the runs of one segment id
    (padding, -1, is a run of its own) over the row-major positions. Attending causally within each run is
    what :func:`causal_segment_mask` allows, without the ``[b, s, s]`` mask.
    """
    from megatron.core.packed_seq_params import PackedSeqParams

    b, s = segment_ids.shape
    starts = torch.ones(b, s, dtype=torch.bool, device=segment_ids.device)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    end = torch.tensor([b * s], device=starts.device)
    cu_seqlens = torch.cat([starts.reshape(-1).nonzero().squeeze(1), end]).to(torch.int32)
    return PackedSeqParams(
        qkv_format="sbhd",
        cu_seqlens_q=cu_seqlens,
        cu_seqlens_kv=cu_seqlens,
        max_seqlen_q=s,  # the rows' length: RoPE runs over the row, as without packing (megatron reads it)
        max_seqlen_kv=s,
    )


def without_padding(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The non-padding tokens of a micro-batch of packed rows as one row ``[1, T]`` (its ``[b, s]`` tensors
    gathered; segment ids made unique across rows, so that a row boundary still ends a conversation),
    and the ``[b, s]`` mask of where they came from. With per-conversation attention (RoPE is relative)
    the decoder gives every kept token what it gives in the padded rows, without computing the padding.
    """
    segment_ids = batch["segment_ids"]
    keep = segment_ids >= 0
    b, s = segment_ids.shape
    rows = torch.arange(b, device=segment_ids.device)[:, None]
    gathered = {k: v[keep][None] for k, v in batch.items() if v.shape == keep.shape}
    gathered["segment_ids"] = (rows * (s + 1) + segment_ids)[keep][None]
    return gathered, keep


def packed_rows_loss(
    model: Any, batch: dict[str, torch.Tensor], *, logits: str = "loss", per_conversation: bool = True
) -> torch.Tensor:
    """Per-token loss ``[b, s]`` of a megatron ``GPTModel`` (or its DDP wrapper) on a micro-batch of packed
    rows (``tokens``, ``labels``, ``loss_mask``, ``segment_ids``, ``position_ids``); ``logits="loss"``: zero
    where the loss mask is 0 (:func:`gpt_model_class`).

    ``per_conversation`` (local spec, no pipeline stages: the CPU path): the padding is dropped
    (:func:`without_padding`) and each conversation is one causal SDPA call, so the decoder computes real
    tokens only and attention only within conversations. Otherwise the block-diagonal mask is passed: one
    masked SDPA call per layer on the local spec; Transformer Engine applies its own causal mask.
    """

    def loss(rows: dict[str, torch.Tensor], **attention: Any) -> torch.Tensor:
        loss_mask = rows["loss_mask"] if logits == "loss" else None
        return model(
            rows["tokens"], rows["position_ids"], labels=rows["labels"], loss_mask=loss_mask, **attention
        )

    if not per_conversation:
        return loss(batch, attention_mask=causal_segment_mask(batch["segment_ids"]))
    tokens, keep = without_padding(batch)
    per_token = loss(tokens, attention_mask=None, packed_seq_params=packed_segments(tokens["segment_ids"]))
    return per_token.new_zeros(keep.shape).index_put((keep,), per_token[0])
