"""DAPO step profile on CPU with the tiny policy of tests/rl_task.py, and the rollout loop's own cost.

1. ``ramp.finetune.dapo.train`` runs ``--steps`` steps; the shares of step time spent in rollout
   (generation inside the loop), retrieval, reward and update (old log-probs, PPO updates, weight sync)
   come from the per-step timings it logs.
2. The rollout phase against plain generation of the same token sequences: one rollout batch is run
   through the loop while a recorder keeps every batched request the loop sends to the hf backend (the
   prompts, generated turns and inserted result blocks so far, with the same seeds); then, with the
   prefix cache cleared, exactly those requests are sent to the backend again, call by call, with no
   loop around them. The replay generates the same tokens (checked) and prefills the same retrieved text
   through the same KV-cache reuse, so ``loop_overhead = loop time / replay time - 1`` is what the loop
   adds: parsing, search, result insertion and bookkeeping (target <= 10%).

    python bench/bench_rl.py              # 3 train steps, 10 prompts x 8 rollouts
    python bench/bench_rl.py --quick      # 1 step: a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny task shared with the tests

from rl_task import SEARCH, build_corpus, warm_start_policy  # noqa: E402

from ramp.agent.backends.base import GenerationRequest, GenerationResult  # noqa: E402
from ramp.agent.rollout import RolloutLoop  # noqa: E402
from ramp.config import load_config  # noqa: E402
from ramp.rl.config import RLConfig  # noqa: E402


class Recorder:
    """A backend that records the batched requests it forwards (the loop sees the inner backend)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.eos_ids = inner.eos_ids
        self.max_length = inner.max_length
        self.calls: list[list[GenerationRequest]] = []
        self.outputs: list[list[int]] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        # copies: the loop extends its context lists in place after the call
        self.calls.append([replace(r, prompt_ids=list(r.prompt_ids or [])) for r in requests])
        results = self.inner.generate(requests)
        self.outputs += [r.token_ids for r in results]
        return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    steps = 1 if args.quick else args.steps
    torch.set_num_threads(args.threads)

    import pyarrow.parquet as pq
    from ramp.finetune.dapo import build_rollout_backend, load_tasks, train

    from ramp.data.samples import Sample
    from ramp.retrieval.env import SearchEnv
    from ramp.retrieval.indexing import build_index
    from ramp.retrieval.lucene import LuceneRetriever

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus, samples_dir = build_corpus(root)
        build_index([corpus], root / "index", threads=1, shards=1, progress=False)
        retriever = LuceneRetriever(root / "index", threads=1)
        env = SearchEnv(retriever, SEARCH)
        samples = [Sample.from_row(r) for r in pq.read_table(samples_dir).to_pylist()]
        warm_start_policy(root / "sft", [s for s in samples if s.num_masks == 1], env, 150)
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
            "algorithm.max_num_gen_batches": 0,
            "curriculum.stages": "[1]",
            "trainer.gen_batch_size": 8,
            "trainer.train_batch_size": 2,
            "trainer.total_steps": steps,
            "trainer.lr": 3e-4,
            "trainer.output_dir": root / "rl",
            "trainer.mlflow_uri": f"sqlite:///{root / 'mlflow.db'}",
            "trainer.progress": "false",
            "trainer.threads": args.threads,
        }
        config = load_config(RLConfig, "configs/rl.yaml", [f"{k}={v}" for k, v in sets.items()])

        # 1. Per-step time shares.
        history: list[dict[str, float]] = []
        train(config, on_step_end=lambda _, m: history.append(m))
        parts = ("rollout", "retrieval", "reward", "update")
        total = {p: sum(h[f"time/{p}_s"] for h in history) for p in parts}
        step_s = sum(h["time/step_s"] for h in history)

        # 2. The loop against a replay of its own backend calls.
        backend = Recorder(build_rollout_backend(config, _single()))
        tasks = [t for t in load_tasks(config) if t.num_masks == 1]
        rollout_config = config.rollout.model_copy(update={"seed": 7})
        loop = RolloutLoop(backend, env, rollout_config)
        loop.run(tasks[:2])  # warm-up
        backend.calls.clear()
        backend.outputs.clear()
        backend.inner.clear_cache()
        start = time.perf_counter()
        rollouts = loop.run(tasks)
        loop_s = time.perf_counter() - start
        backend.inner.clear_cache()
        start = time.perf_counter()
        replay = [backend.inner.generate(call) for call in backend.calls]
        replay_s = time.perf_counter() - start
        assert [r.token_ids for call in replay for r in call] == backend.outputs, (
            "replay generated other tokens"
        )
        retriever.close()

    report = {
        "steps": steps,
        "policy": f"tiny random Qwen2 2x64 after 150 supervised steps, CPU, torch threads {args.threads}",
        "rollouts_per_step": config.trainer.gen_batch_size * args.n,
        "step_s_mean": round(step_s / steps, 3),
        "shares": {p: round(total[p] / step_s, 4) for p in parts},
        "other_share": round(1 - sum(total.values()) / step_s, 4),
        "loop": {
            "rollouts": len(rollouts),
            "backend_calls": len(backend.calls),
            "sampled_tokens": sum(r.num_sampled_tokens for r in rollouts),
            "env_tokens": sum(r.num_env_tokens for r in rollouts),
            "searches": loop.stats.searches,
            "loop_s": round(loop_s, 3),
            "replay_generate_s": round(replay_s, 3),
            "loop_overhead": round(loop_s / replay_s - 1, 4),
        },
    }
    print(json.dumps(report, indent=2))


def _single() -> Any:
    from ramp.finetune.dapo import Dist

    return Dist()


if __name__ == "__main__":
    main()
