"""`ramp pretrain train` on CPU versus a plain transformers training loop, each with logits at every
position ("all") and at the loss-carrying positions only ("loss"), on two shapes, in one run.

Shapes: ``experiment`` (the RAMP-effect experiment's policy: hidden 64, intermediate 192, 2 layers, 4 heads,
2 KV heads, word-level vocabulary 3,264, tied embeddings, seq 1,024, micro = global batch 4) and ``0.5b``
(Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4,864, vocabulary 151,936, tied
embeddings; seq 512, a few steps of global batch 1). Both trainers start from random weights and train on
the rows of one ``ramp pretrain prepare`` shard set built from RAMP-shaped trajectories (the real system and
user prompts, one search, a retrieved passage: 10-14% of the positions of a packed row carry loss), drawn
through the same megatron dataset in the same order, with the masked per-token loss, AdamW, cosine LR and
gradient clipping. The baseline is ``Qwen2ForCausalLM`` (SDPA, plain causal attention over the row, no
megatron); its "loss" variant runs the decoder, gathers the loss positions and applies ``lm_head`` there
(checked once per run: same loss and gradients as "all"). Tokens/s counts non-pad tokens, first step
excluded, per second of wall time and per second of the process's CPU time (steadier on a shared machine);
each round runs every variant in turn, so load drift hits all of them; the load average is printed before
each round.

Targets (issue 20): megatron / transformers >= 0.9 (the CPU path must not be pathological); loss / all
>= 1.8 on the experiment's shape; a measured loss / all on the 0.5B shape.

    python bench/bench_pretrain.py                          # both shapes, 3 rounds
    python bench/bench_pretrain.py --shapes experiment      # the experiment's shape only
    python bench/bench_pretrain.py --micro-batches 1,2,4,8  # megatron "loss": tokens/s per micro-batch size
    python bench/bench_pretrain.py --quick                  # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny tokenizer/model helpers shared with the tests

from pretrain_helpers import make_trajectories, qwen_style_tokenizer, write_trajectories  # noqa: E402

from ramp.config import load_config  # noqa: E402
from ramp.logs import quiet_logs  # noqa: E402
from ramp.train.config import PretrainConfig  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    "experiment": {
        "model": dict(
            hidden_size=64,
            intermediate_size=192,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=3264,  # the word-level tokenizer of a world (seed 1: 3,264; seed 0: 3,269)
            tie_word_embeddings=True,
        ),
        "seq_length": 1024,
        "micro_batch": 4,
        "global_batch": 4,
        "steps": 40,
    },
    "0.5b": {
        "model": dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151_936,
            tie_word_embeddings=True,
            rope_theta=1_000_000.0,
            rms_norm_eps=1e-6,
        ),
        "seq_length": 512,  # a CPU step of this shape takes tens of seconds; the shorter conversations fit
        "micro_batch": 1,
        "global_batch": 1,
        "steps": 4,
    },
}
# (passage, retrieved text) characters per trajectory: conversations of about 300-650 tokens that pack
# into rows of 1,024 at about 80% (the real RAMP system/user prompts are most of each conversation)
TRAJECTORY_SIZES = ((400, 300), (150, 100), (250, 200))
VARIANTS = (("transformers", "all"), ("transformers", "loss"), ("megatron", "all"), ("megatron", "loss"))


def make_config(tmp: Path, args: argparse.Namespace, name: str, **values: Any) -> PretrainConfig:
    """The ``ramp pretrain train`` config of one run (``args``: seq_length, steps, micro/global batch)."""
    base = {
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
    return load_config(PretrainConfig, "pretrain", values={**base, **values})


def ramp_trajectories(count: int) -> list[Any]:
    """RAMP-shaped trajectories of mixed lengths (see ``TRAJECTORY_SIZES``)."""
    out: list[Any] = []
    for n, (passage, result) in enumerate(TRAJECTORY_SIZES):
        out += make_trajectories(
            count // len(TRAJECTORY_SIZES), offset=n * 400, passage_chars=passage, result_chars=result
        )
    return out


def hf_model(hf_dir: Path, seed: int, device: str = "cpu") -> Any:
    """The baseline: a randomly initialised ``Qwen2ForCausalLM`` from ``hf_dir``'s config, SDPA, fp32."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(hf_dir)
    if (hf_dir / "model.safetensors").is_file():
        model = AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="sdpa", dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.float32)
    return model.to(device).train()


def hf_loss(model: Any, batch: dict[str, torch.Tensor], logits: str, bf16: bool = False) -> torch.Tensor:
    """Σ per-token loss × loss mask of one micro-batch: ``lm_head`` at every position (``all``) or only
    where the mask is non-zero (``loss``)."""
    ids, labels, mask = batch["tokens"], batch["labels"], batch["loss_mask"]
    with torch.autocast(device_type=ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        if logits == "all":
            scores, targets, weights = (
                model(input_ids=ids).logits.flatten(0, 1),
                labels.flatten(),
                mask.flatten(),
            )
        else:
            where = mask != 0
            hidden = model.model(input_ids=ids).last_hidden_state
            scores, targets, weights = model.lm_head(hidden[where]), labels[where], mask[where]
    per_token = torch.nn.functional.cross_entropy(scores.float(), targets, reduction="none")
    return (per_token * weights).sum()


def hf_loop(
    config: PretrainConfig, hf_dir: Path, device: str = "cpu", bf16: bool = False, logits: str = "all"
) -> dict[str, float]:
    """Plain transformers training on the same rows (``bf16``: autocast over fp32 weights, fused AdamW);
    non-pad tokens per second of wall time and of this process's CPU time, first step excluded."""
    from ramp.train.schedule import cosine_lr
    from ramp.train.shards import build_train_dataset

    cfg = config.train
    model = hf_model(hf_dir, cfg.seed, device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay, fused=device != "cpu"
    )
    dataset = build_train_dataset(
        config.data.blend, config.prepare.seq_length, cfg.steps * cfg.global_batch_size, cfg.seed
    )
    tokens = seconds = cpu_seconds = 0.0
    for step in range(cfg.steps):
        began, cpu_began = time.perf_counter(), time.process_time()
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
            batch = _stack(rows[start : start + cfg.micro_batch_size], device)
            (hf_loss(model, batch, logits, bf16) / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.synchronize()
        if step:
            tokens += step_tokens
            seconds += time.perf_counter() - began
            cpu_seconds += time.process_time() - cpu_began
    return {"tokens_per_s": tokens / seconds, "tokens_per_cpu_s": tokens / cpu_seconds}


def check_hf_loss_positions(config: PretrainConfig, hf_dir: Path) -> float:
    """Max |difference| of the mean loss and of every gradient between the two baseline variants (fp32)."""
    from ramp.train.shards import build_train_dataset

    dataset = build_train_dataset(config.data.blend, config.prepare.seq_length, 2, config.train.seed)
    batch = _stack([dataset[0], dataset[1]], "cpu")
    results = []
    for logits in ("all", "loss"):
        model = hf_model(hf_dir, config.train.seed)
        loss = hf_loss(model, batch, logits) / batch["loss_mask"].sum()  # the mean, as training sees it
        loss.backward()
        results.append([loss.detach(), *(p.grad for p in model.parameters())])
    return max(float((a - b).abs().max()) for a, b in zip(*results, strict=True))


def _stack(rows: list[dict[str, torch.Tensor]], device: str) -> dict[str, torch.Tensor]:
    return {k: torch.stack([r[k] for r in rows]).to(device) for k in ("tokens", "labels", "loss_mask")}


@contextlib.contextmanager
def _no_checkpoint_writes() -> Iterator[None]:
    """Skip the final checkpoint write (outside the timed steps; gigabytes at the 0.5B shape)."""
    from ramp.pretrain.train import Trainer

    save = Trainer._save
    Trainer._save = lambda self, step, optimizer: None
    try:
        yield
    finally:
        Trainer._save = save


def megatron_run(config: PretrainConfig) -> dict[str, float]:
    from ramp.pretrain.train import run_training

    with _no_checkpoint_writes():
        summary: dict[str, Any] = run_training(config)
    return {k: float(summary[k]) for k in ("tokens_per_s", "tokens_per_cpu_s")}


def run_variant(
    tmp: Path, args: argparse.Namespace, trainer: str, logits: str, name: str
) -> dict[str, float]:
    gc.collect()  # the previous run's model and optimizer (gigabytes at the 0.5B shape) before this one's
    if trainer == "transformers":
        return hf_loop(make_config(tmp, args, name), tmp / "hf", logits=logits)
    return megatron_run(make_config(tmp, args, name, **{"train.logits": logits}))


def prepare_shape(root: Path, shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """The shape's HF config + tokenizer (no weights: both trainers start from random) and its shards."""
    from ramp.pretrain.prepare import run_prepare
    from transformers import Qwen2Config

    tmp = root / shape
    Qwen2Config(max_position_embeddings=32_768, **SHAPES[shape]["model"]).save_pretrained(tmp / "hf")
    qwen_style_tokenizer().save_pretrained(tmp / "hf")
    trajectories = write_trajectories(ramp_trajectories(args.trajectories), tmp / "trajectories")
    manifest = run_prepare(trajectories, tmp / "shards", make_config(tmp, args, "prepare"))
    return {
        "packing_efficiency": round(manifest["packing_efficiency"], 3),
        "loss_share_of_positions": round(manifest["loss_tokens"] / (manifest["rows"] * args.seq_length), 3),
        "loss_share_of_tokens": round(manifest["loss_tokens"] / manifest["tokens"], 3),
    }


def shape_args(args: argparse.Namespace, shape: str) -> argparse.Namespace:
    spec = SHAPES[shape]
    values = {k: spec[k] for k in ("seq_length", "micro_batch", "global_batch", "steps")}
    if args.steps:
        values["steps"] = args.steps
    return argparse.Namespace(**{**vars(args), **values})


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def compare(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Every shape × variant, ``args.rounds`` interleaved rounds; medians and per-round ratios."""
    report: dict[str, Any] = {}
    for shape in args.shapes:
        sargs = shape_args(args, shape)
        report[shape] = {
            "data": prepare_shape(root, shape, sargs),
            "tokens_per_s": {},
            "tokens_per_cpu_s": {},
        }
        if shape == "experiment":
            check = check_hf_loss_positions(make_config(root / shape, sargs, "check"), root / shape / "hf")
            report[shape]["transformers_loss_vs_all_max_abs_diff"] = check
    for r in range(args.rounds):
        print(f"round {r}: load average {load()}", flush=True)
        for shape in args.shapes:
            sargs = shape_args(args, shape)
            for trainer, logits in VARIANTS:
                rates = run_variant(root / shape, sargs, trainer, logits, f"{shape}-{trainer}-{logits}-{r}")
                for measure, rate in rates.items():
                    report[shape][measure].setdefault(f"{trainer}/{logits}", []).append(round(rate, 1))
                print(
                    f"  {shape} {trainer:>12} logits={logits}: {rates['tokens_per_s']:,.0f} tok/s "
                    f"({rates['tokens_per_cpu_s']:,.0f} per CPU-second)",
                    flush=True,
                )
    for shape in args.shapes:
        report[shape]["shape"] = {
            k: v for k, v in vars(shape_args(args, shape)).items() if k in SHAPES[shape]
        }
        for measure in ("tokens_per_s", "tokens_per_cpu_s"):
            rates = report[shape][measure]
            report[shape][f"median_{measure}"] = {k: round(statistics.median(v), 1) for k, v in rates.items()}
            report[shape][f"ratios_{measure}"] = {
                name: _ratio(rates, a, b) for name, (a, b) in RATIOS.items()
            }
    return report


RATIOS = {
    "megatron/transformers, logits all": ("megatron/all", "transformers/all"),
    "megatron/transformers, logits loss": ("megatron/loss", "transformers/loss"),
    "megatron loss / transformers all": ("megatron/loss", "transformers/all"),
    "loss/all logits, transformers": ("transformers/loss", "transformers/all"),
    "loss/all logits, megatron": ("megatron/loss", "megatron/all"),
}


def _ratio(rates: dict[str, list[float]], a: str, b: str) -> dict[str, Any]:
    """The median of the per-round ratios a / b (each round measured both under the same load)."""
    per_round = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
    return {"median": round(statistics.median(per_round), 3), "per_round": [round(x, 3) for x in per_round]}


def sweep_micro_batches(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """megatron, logits at loss positions, experiment shape: tokens/s per micro-batch size (= global)."""
    sargs = shape_args(args, "experiment")
    data = prepare_shape(root, "experiment", sargs)
    rates: dict[str, dict[int, list[float]]] = {"tokens_per_s": {}, "tokens_per_cpu_s": {}}
    for r in range(args.rounds):
        print(f"round {r}: load average {load()}", flush=True)
        for micro in args.micro_batches:
            margs = argparse.Namespace(**{**vars(sargs), "micro_batch": micro, "global_batch": micro})
            measured = run_variant(root / "experiment", margs, "megatron", "loss", f"micro{micro}-{r}")
            for measure, rate in measured.items():
                rates[measure].setdefault(micro, []).append(round(rate, 1))
            print(
                f"  micro-batch {micro}: {measured['tokens_per_s']:,.0f} tok/s "
                f"({measured['tokens_per_cpu_s']:,.0f} per CPU-second)",
                flush=True,
            )
    medians = {m: {k: round(statistics.median(v), 1) for k, v in r.items()} for m, r in rates.items()}
    return {
        "data": data,
        **rates,
        **{f"median_{m}": v for m, v in medians.items()},
        "best_micro_batch": max(medians["tokens_per_s"], key=lambda k: medians["tokens_per_s"][k]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", default="experiment,0.5b", help="comma-separated: " + ", ".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=0, help="steps per run (default: per shape)")
    parser.add_argument("--trajectories", type=int, default=120)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--micro-batches", default="", help="e.g. 1,2,4,8: sweep instead of comparing")
    parser.add_argument(
        "--verbose", action="store_true", help="megatron's and torch's warnings on the console"
    )
    parser.add_argument("--quick", action="store_true", help="experiment shape, 1 round of 6 steps")
    args = parser.parse_args()
    args.shapes = [s for s in args.shapes.split(",") if s]
    if unknown := set(args.shapes) - set(SHAPES):
        parser.error(f"unknown shapes {sorted(unknown)}; choose from {sorted(SHAPES)}")
    args.micro_batches = [int(m) for m in args.micro_batches.split(",") if m]
    if args.quick:
        args.shapes, args.rounds, args.steps = ["experiment"], 1, 6
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.verbose:  # the trainer's progress bar, once per run: the rounds print their own lines
        os.environ.setdefault("TQDM_DISABLE", "1")
    print(f"torch threads {torch.get_num_threads()}, load average {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as name:
        root = Path(name)
        with quiet_logs(Path(tempfile.gettempdir()) / "ramp-bench-pretrain", "bench-pretrain", args.verbose):
            report = sweep_micro_batches(args, root) if args.micro_batches else compare(args, root)
    report["torch_threads"] = torch.get_num_threads()
    report["load_average_end"] = load()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
