"""Asynchronous against synchronous RL on CPU with the tiny policy of tests/rl_task.py: trained trajectories
per second of wall time, the same settings in both modes (``trainer.mode`` sync / async, dynamic sampling
off so every step trains ``train_batch_size`` × ``rollout.n`` trajectories).

Each trial builds a fresh trainer per mode and times ``fit`` from its start to the end of its last step
(weights pushed, checkpoint written; model loading and the final policy save are outside). Trials
alternate which mode runs first; the figure is the median of the per-trial ratios async / sync, with
both medians beside it. Async overlaps generation (a second thread) with the update, so its gain needs a
second free core: with torch at one thread each, sync uses one core and async up to two. Wall time on a
shared machine moves with the load, so the load average (``uptime``) is printed before and after; a
figure taken under load is preliminary.

    python bench/bench_async.py            # 3 trials of 4 steps
    python bench/bench_async.py --quick    # 1 trial of 2 steps
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny task shared with the tests

from rl_task import SEARCH, build_corpus, warm_start_policy  # noqa: E402

from ramp.config import load_config  # noqa: E402
from ramp.data.samples import Sample  # noqa: E402
from ramp.retrieval.env import SearchEnv  # noqa: E402
from ramp.retrieval.indexing import build_index  # noqa: E402
from ramp.retrieval.lucene import LuceneRetriever  # noqa: E402
from ramp.rl.config import RLConfig  # noqa: E402
from ramp.rl.trainer import RLTrainer  # noqa: E402


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def run(config: RLConfig) -> tuple[float, dict[str, int]]:
    """Trajectories trained per wall second of ``fit`` up to its last step; the async counts."""
    trainer = RLTrainer(config)
    ends: list[float] = []
    began = time.perf_counter()
    trainer.fit(lambda step, metrics: ends.append(time.perf_counter()))
    trained = config.trainer.total_steps * config.trainer.train_batch_size * config.rollout.n
    counts = getattr(trainer.rollout, "counts", {})
    return trained / (ends[-1] - began), dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--max-staleness", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.trials, args.steps = 1, 2
    torch.set_num_threads(1)
    load_before = uptime()
    print(load_before, file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus, samples_dir = build_corpus(root)
        build_index([corpus], root / "index", threads=1, shards=1, progress=False)
        retriever = LuceneRetriever(root / "index", threads=1)
        samples = [Sample.from_row(r) for r in pq.read_table(samples_dir).to_pylist()]
        warm_start_policy(
            root / "sft", [s for s in samples if s.num_masks == 1], SearchEnv(retriever, SEARCH), 150
        )
        retriever.close()

        def config(mode: str, trial: int) -> RLConfig:
            out = root / f"{mode}-{trial}"
            sets = {
                "policy.model": root / "sft",
                "retriever.index": root / "index",
                "data.samples": samples_dir,
                "data.prompts": root / "prompts.yaml",
                "search.top_k": SEARCH.top_k,
                "search.max_chars_per_doc": SEARCH.max_chars_per_doc,
                "rollout.n": args.n,
                "rollout.max_turns": 3,
                "rollout.max_new_tokens_per_turn": 24,
                "rollout.max_total_new_tokens": 48,
                "algorithm.overlong.buffer": 16,
                "algorithm.filter_groups": "false",
                "algorithm.policy_loss": "decoupled",
                "curriculum.stages": "[1]",
                "trainer.mode": mode,
                "trainer.max_staleness": args.max_staleness,
                "trainer.gen_batch_size": 4,
                "trainer.train_batch_size": 4,
                "trainer.mini_batches": 1,
                "trainer.micro_batch_size": 32,
                "trainer.total_steps": args.steps,
                "trainer.lr": 3e-4,
                "trainer.output_dir": out,
                "trainer.save_every": args.steps,
                "trainer.mlflow_uri": f"sqlite:///{root / 'mlflow.db'}",
                "trainer.progress": "false",
                "trainer.threads": 1,
            }
            return load_config(RLConfig, "configs/rl.yaml", [f"{k}={v}" for k, v in sets.items()])

        rates: dict[str, list[float]] = {"sync": [], "async": []}
        dropped = []
        for trial in range(args.trials):
            for mode in ("sync", "async") if trial % 2 == 0 else ("async", "sync"):
                rate, counts = run(config(mode, trial))
                rates[mode].append(rate)
                if mode == "async":
                    dropped.append(counts["dropped"])
                print(f"trial {trial} {mode}: {rate:.2f} trajectories/s {counts or ''}", file=sys.stderr)
    report = {
        "policy": "tiny random Qwen2 2x64 after 150 supervised steps, CPU, torch threads 1 per thread",
        "uptime": {"before": load_before, "after": uptime()},
        "settings": {
            "steps": args.steps,
            "trajectories_per_step": 4 * args.n,
            "max_staleness": args.max_staleness,
        },
        "sync_trajectories_per_s_median": round(statistics.median(rates["sync"]), 3),
        "async_trajectories_per_s_median": round(statistics.median(rates["async"]), 3),
        "async_over_sync_median": round(
            statistics.median(a / s for a, s in zip(rates["async"], rates["sync"], strict=True)), 3
        ),
        "async_dropped_stale_per_trial": dropped,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
