"""GPU: `ramp pretrain train` (megatron-core) versus a plain transformers loop (SDPA, bf16 autocast,
fused AdamW) on the Qwen2.5-0.5B shape (random init), same packed RAMP rows, same batch, same run.

Reports tokens/s (non-pad tokens, first step excluded) for both, the ratio (target >= 1.3) and
megatron's MFU (target >= 40%) from ``ramp.train.flops`` and the GPU's dense bf16 peak. One command on a
machine with one GPU and the project installed:

    python bench/bench_pretrain_gpu.py                    # 0.5B shape, seq 4096, micro 2, global 16, 20 steps
    python bench/bench_pretrain_gpu.py --shape 1.5b       # Qwen2.5-1.5B shape, if it fits

The shards come from trajectories built from the bundled wiki-18 sample with a locally trained tokenizer
(no hub access needed); the model's 151,936-row vocabulary is kept, so the cost per token is the real one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_pretrain (it adds tests/ for the helpers)
from bench_pretrain import hf_loop, make_config, megatron_run
from pretrain_helpers import make_trajectories, qwen_style_tokenizer, write_trajectories

SHAPES = {  # Qwen2.5 configs
    "0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
    "1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="0.5b")
    parser.add_argument("--seq-length", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--trajectories", type=int, default=600)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_pretrain_gpu.py needs a CUDA GPU (use bench/bench_pretrain.py on a CPU)")

    from ramp.pretrain.prepare import run_prepare
    from transformers import Qwen2Config

    from ramp.train.flops import peak_flops, train_flops_per_token
    from ramp.train.model import Qwen2Shape

    with tempfile.TemporaryDirectory(prefix="bench-pretrain-gpu-") as name:
        tmp = Path(name)
        config = Qwen2Config(
            vocab_size=151_936,
            max_position_embeddings=32_768,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
            **SHAPES[args.shape],
        )
        config.save_pretrained(tmp / "hf")
        qwen_style_tokenizer().save_pretrained(tmp / "hf")
        import transformers

        transformers.Qwen2ForCausalLM(config).save_pretrained(tmp / "hf")  # random init, for the baseline
        run_prepare(
            write_trajectories(make_trajectories(args.trajectories), tmp / "trajectories"),
            tmp / "shards",
            make_config(tmp, args, "prepare"),
        )
        baseline = hf_loop(make_config(tmp, args, "hf"), tmp / "hf", device="cuda", bf16=True)
        torch.cuda.empty_cache()
        ours = megatron_run(make_config(tmp, args, "megatron"))
        shape = Qwen2Shape.from_hf(config)
        flops = train_flops_per_token(shape, args.seq_length)
        peak = peak_flops(torch.cuda.get_device_name()) or float("nan")
        print(
            json.dumps(
                {
                    "gpu": torch.cuda.get_device_name(),
                    "shape": args.shape,
                    "seq_length": args.seq_length,
                    "micro_batch": args.micro_batch,
                    "global_batch": args.global_batch,
                    "steps": args.steps,
                    "transformers_tokens_per_s": round(baseline, 1),
                    "megatron_tokens_per_s": round(ours, 1),
                    "ratio": round(ours / baseline, 3),
                    "megatron_mfu": round(ours * flops / peak, 4),
                    "transformers_mfu": round(baseline * flops / peak, 4),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
