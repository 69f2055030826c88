"""Model FLOPs per trained token and accelerator peaks, for MFU."""

from __future__ import annotations

from ramp.train.model import Qwen2Shape

# dense bf16 tensor-core peaks (FLOP/s), by a substring of torch.cuda.get_device_name()
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def params_count(shape: Qwen2Shape) -> int:
    """Weights touched by the matmuls per token (embedding lookups excluded, the output layer included)."""
    h, d = shape.hidden_size, shape.head_dim
    attn = h * (shape.num_heads * d) * 2 + h * (shape.num_kv_heads * d) * 2
    mlp = 3 * h * shape.intermediate_size
    return shape.num_layers * (attn + mlp) + h * shape.vocab_size


def train_flops_per_token(shape: Qwen2Shape, seq_length: int, causal: bool = True) -> float:
    """Forward + backward FLOPs per token: 6 × matmul weights + attention scores and values."""
    attention = 12 * shape.num_layers * shape.num_heads * shape.head_dim * seq_length
    return 6 * params_count(shape) + (attention / 2 if causal else attention)


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16.items() if key in device_name), None)
