"""`ramp pretrain train` on CPU versus a plain transformers training loop: same tiny Qwen2 shape, same
packed rows, same micro/global batch, same optimizer (AdamW), same run.

Both train on the rows of one ``ramp pretrain prepare`` shard set (drawn through the same megatron
dataset, in the same order) with the masked per-token loss; the baseline is ``Qwen2ForCausalLM``
(SDPA, plain causal attention over the row, no megatron). Tokens/s counts non-pad tokens, first step
excluded, in alternating rounds (baseline, megatron, baseline, megatron, ...) so load drift on a shared
machine hits both. Target: megatron / baseline >= 0.9 (the CPU path must not be pathological).

    python bench/bench_pretrain.py                 # hidden 256, 4 layers, seq 1024, 3 rounds of 30 steps
    python bench/bench_pretrain.py --quick         # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny tokenizer/model helpers shared with the tests

from pretrain_helpers import make_trajectories, save_tiny_hf, write_trajectories  # noqa: E402

from ramp.config import load_config  # noqa: E402
from ramp.train.config import PretrainConfig  # noqa: E402


def make_config(tmp: Path, args: argparse.Namespace, name: str) -> PretrainConfig:
    values = {
        "prepare.seq_length": args.seq_length,
        "prepare.num_shards": 1,
        "data.blend": ["1.0", str(tmp / "shards")],
        "model.hf": str(tmp / "hf"),
        "model.init": "random",
        "optim.warmup_steps": 2,
        "optim.lr": 1e-3,
        "train.steps": args.steps,
        "train.micro_batch_size": args.micro_batch,
        "train.global_batch_size": args.global_batch,
        "train.seed": 0,
        "checkpoint.dir": str(tmp / f"ckpt-{name}"),
        "checkpoint.save_interval": 10**6,
        "checkpoint.resume": False,
        "tracking.tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "tracking.log_interval": 10**6,
        "tracking.run_name": name,
    }
    return load_config(PretrainConfig, "pretrain", values=values)


def hf_loop(config: PretrainConfig, hf_dir: Path, device: str = "cpu", bf16: bool = False) -> float:
    """Plain transformers training on the same rows (``bf16``: autocast over fp32 weights, fused AdamW);
    non-pad tokens/s, first step excluded."""
    from transformers import AutoModelForCausalLM

    from ramp.train.schedule import cosine_lr
    from ramp.train.shards import build_train_dataset

    cfg = config.train
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="sdpa", dtype=torch.float32)
    model.to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay, fused=device != "cpu"
    )
    dataset = build_train_dataset(
        config.data.blend, config.prepare.seq_length, cfg.steps * cfg.global_batch_size, cfg.seed
    )
    tokens = seconds = 0.0
    for step in range(cfg.steps):
        began = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(
                step,
                lr=config.optim.lr,
                min_lr=config.optim.min_lr,
                warmup_steps=config.optim.warmup_steps,
                total_steps=cfg.steps,
            )
        rows = [dataset[step * cfg.global_batch_size + i] for i in range(cfg.global_batch_size)]
        count = sum(float(r["loss_mask"].sum()) for r in rows)
        step_tokens = sum(float((r["segment_ids"] >= 0).sum()) for r in rows)
        for start in range(0, len(rows), cfg.micro_batch_size):
            batch = rows[start : start + cfg.micro_batch_size]
            ids = torch.stack([r["tokens"] for r in batch]).to(device)
            labels = torch.stack([r["labels"] for r in batch]).to(device)
            mask = torch.stack([r["loss_mask"] for r in batch]).to(device)
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=ids).logits
            per_token = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), reduction="none"
            )
            ((per_token * mask.flatten()).sum() / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.synchronize()
        if step:
            tokens += step_tokens
            seconds += time.perf_counter() - began
    return tokens / seconds


def megatron_run(config: PretrainConfig) -> float:
    from ramp.pretrain.train import run_training

    summary: dict[str, Any] = run_training(config)
    return float(summary["tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq-length", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--trajectories", type=int, default=96)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.layers, args.steps, args.rounds = 64, 2, 6, 1

    from ramp.pretrain.prepare import run_prepare

    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as name:
        tmp = Path(name)
        save_tiny_hf(tmp / "hf", hidden=args.hidden, layers=args.layers)
        manifest = run_prepare(
            write_trajectories(make_trajectories(args.trajectories), tmp / "trajectories"),
            tmp / "shards",
            make_config(tmp, args, "prepare"),
        )
        baseline, ours = [], []
        for r in range(args.rounds):
            baseline.append(hf_loop(make_config(tmp, args, f"hf-{r}"), tmp / "hf"))
            ours.append(megatron_run(make_config(tmp, args, f"megatron-{r}")))
            print(
                f"round {r}: transformers {baseline[-1]:.0f} tok/s, ramp pretrain train {ours[-1]:.0f} tok/s",
                flush=True,
            )
        ratios = [o / b for o, b in zip(ours, baseline, strict=True)]
        print(
            json.dumps(
                {
                    "shape": {
                        "hidden": args.hidden,
                        "layers": args.layers,
                        "seq_length": args.seq_length,
                        "micro_batch": args.micro_batch,
                        "global_batch": args.global_batch,
                        "steps": args.steps,
                    },
                    "packing_efficiency": round(manifest["packing_efficiency"], 4),
                    "transformers_tokens_per_s": [round(x, 1) for x in baseline],
                    "megatron_tokens_per_s": [round(x, 1) for x in ours],
                    "ratio_per_round": [round(x, 3) for x in ratios],
                    "ratio_median": round(statistics.median(ratios), 3),
                    "torch_threads": torch.get_num_threads(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
