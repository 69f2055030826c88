"""DAPO on CPU with the tiny policy of tests/rl_task.py: where a step's time goes, what the rollout loop
adds to generation, and what computing the output layer only at sampled positions saves in the update.

1. ``ramp.finetune.dapo.train`` runs ``--steps`` steps; the shares of step time spent in rollout
   (generation inside the loop), retrieval, reward and update (old log-probs, PPO updates, weight sync)
   come from the per-step timings it logs.
2. The rollout loop against the sum of its parts: one rollout batch (every 1-mask task × ``--loop-n``) is
   run through the loop while recorders keep every batched request the loop sends to the hf backend
   (prompts, generated turns and inserted result blocks so far, same seeds) and every search it sends to
   the retriever; then exactly those requests go to the backend again, call by call, and those searches to
   the retriever, with no loop around them. The replay generates the same tokens and finds the same hits
   (both checked every trial) and prefills the same retrieved text through the same KV-cache reuse (the
   prefix cache cleared before each run), so ``loop / (generation + search) - 1`` is what the loop itself
   adds: parsing, cutting and formatting hits, result insertion and bookkeeping (target <= 10%); the
   search's own cost (Lucene, benchmarked against pyserini in bench_retrieval.py) is reported beside it.
   Trials alternate which runs first; there are at least 5 and enough for the loop to run ``--min-loop-s``
   CPU seconds in all (CPU, not wall: a loaded machine must not shorten the measurement); the figure is
   the median of the per-trial ratios.
3. The update phase (old log-probs, then ``ppo_epochs`` × ``mini_batches`` updates of the real
   :class:`ramp.rl.actor.Actor`) on the episodes of part 2, with the output layer at every position (the
   previous code: full logits, then the sampled positions picked) against only the sampled positions;
   policy and optimizer restored before each trial, trials interleaved, median of the per-trial ratios.

Ratios are of this process's CPU seconds (``time.process_time``: the JVM's searches included, one torch
thread), which other jobs on a shared machine disturb far less than wall time; wall-time ratios are
reported beside them, and the load average before and after.

    python bench/bench_rl.py              # 3 train steps; loop trials until >= 10 CPU-s; 5 update trials
    python bench/bench_rl.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny task shared with the tests

from ramp.finetune.dapo import train  # noqa: E402
from rl_task import SEARCH, build_corpus, warm_start_policy  # noqa: E402

import ramp.rl.actor as actor_module  # noqa: E402
from ramp.agent.backends.base import GenerationRequest, GenerationResult  # noqa: E402
from ramp.agent.rollout import Rollout, RolloutLoop  # noqa: E402
from ramp.config import load_config  # noqa: E402
from ramp.data.samples import Sample  # noqa: E402
from ramp.retrieval.base import Hit  # noqa: E402
from ramp.retrieval.env import SearchEnv  # noqa: E402
from ramp.retrieval.indexing import build_index  # noqa: E402
from ramp.retrieval.lucene import LuceneRetriever  # noqa: E402
from ramp.rl.actor import Actor  # noqa: E402
from ramp.rl.config import RLConfig  # noqa: E402
from ramp.rl.core_algos import grpo_advantages  # noqa: E402
from ramp.rl.distributed import Dist  # noqa: E402
from ramp.rl.episodes import Episode, load_tasks, score_rollouts  # noqa: E402
from ramp.rl.metrics import StepMetrics  # noqa: E402
from ramp.rl.rollout import build_rollout_backend  # noqa: E402
from ramp.train.health import HealthConfig, HealthMonitor  # noqa: E402


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


@dataclass(frozen=True)
class Took:
    wall: float
    cpu: float  # this process's CPU seconds (the JVM's searches included): robust to other jobs' load


def timed(fn: Callable[[], Any]) -> tuple[Took, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return Took(time.perf_counter() - wall, time.process_time() - cpu), out


def medians(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def step_shares(config: RLConfig, steps: int) -> dict[str, Any]:
    """Part 1: the share of step time in each phase, from the trainer's own timings."""
    history: list[dict[str, float]] = []
    train(config, on_step_end=lambda _, m: history.append(m))
    parts = ("rollout", "retrieval", "reward", "update")
    total = {p: sum(h[f"time/{p}_s"] for h in history) for p in parts}
    step_s = sum(h["time/step_s"] for h in history)
    return {
        "steps": steps,
        "step_s_mean": round(step_s / steps, 3),
        "shares": {p: round(total[p] / step_s, 4) for p in parts},
        "other_share": round(1 - sum(total.values()) / step_s, 4),
    }


class RecordingRetriever:
    """A retriever that records the searches it forwards (queries, k, exclusions) and their hits."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[list[str], int, list[Any] | None]] = []
        self.hits: list[list[Hit]] = []

    def search(self, queries: Any, k: int = 5, exclude_doc_ids: Any = None) -> list[list[Hit]]:
        self.calls.append((list(queries), k, list(exclude_doc_ids) if exclude_doc_ids is not None else None))
        found = self.inner.search(queries, k=k, exclude_doc_ids=exclude_doc_ids)
        self.hits += found
        return found

    def close(self) -> None:
        self.inner.close()


def loop_overhead(
    config: RLConfig, retriever: Any, min_loop_s: float
) -> tuple[dict[str, Any], list[Rollout]]:
    """Part 2: the loop against the sum of its parts (its own backend calls and searches replayed)."""
    backend = Recorder(build_rollout_backend(config, Dist()))
    searches = RecordingRetriever(retriever)
    tasks = [t for t in load_tasks(config) if t.num_masks == 1]
    loop = RolloutLoop(backend, SearchEnv(searches, SEARCH), config.rollout.model_copy(update={"seed": 7}))

    def run_loop() -> list[Rollout]:
        backend.calls.clear()
        backend.outputs.clear()
        searches.calls.clear()
        searches.hits.clear()
        backend.inner.clear_cache()
        return loop.run(tasks)

    def replay_generation() -> list[list[GenerationResult]]:
        backend.inner.clear_cache()
        return [backend.inner.generate(call) for call in backend.calls]

    def replay_searches() -> list[list[Hit]]:
        return [h for q, k, ex in searches.calls for h in retriever.search(q, k=k, exclude_doc_ids=ex)]

    first, rollouts = timed(run_loop)  # warm-up; also sizes the trials
    trials = max(5, math.ceil(min_loop_s / first.cpu))
    loops, generates, searches_replayed = [], [], []
    for trial in range(trials):
        loop_first = trial % 2 == 0
        if loop_first:
            took, rollouts = timed(run_loop)
        generate, replayed = timed(replay_generation)
        search, hits = timed(replay_searches)
        if not loop_first:
            took, rollouts = timed(run_loop)
        assert [r.token_ids for call in replayed for r in call] == backend.outputs, (
            "replay generated other tokens"
        )
        assert hits == searches.hits, "replayed searches found other hits"
        loops.append(took)
        generates.append(generate)
        searches_replayed.append(search)
    cpu = [lo.cpu / (g.cpu + s.cpu) - 1 for lo, g, s in zip(loops, generates, searches_replayed, strict=True)]
    wall = [
        lo.wall / (g.wall + s.wall) - 1 for lo, g, s in zip(loops, generates, searches_replayed, strict=True)
    ]
    return {
        "rollouts": len(rollouts),
        "backend_calls": len(backend.calls),
        "sampled_tokens": sum(r.num_sampled_tokens for r in rollouts),
        "env_tokens": sum(r.num_env_tokens for r in rollouts),
        "searches": sum(len(q) for q, _, _ in searches.calls),
        "trials": trials,
        "loop_cpu_s_total": round(sum(t.cpu for t in loops), 2),
        "loop_wall_s_total": round(sum(t.wall for t in loops), 2),
        "loop_cpu_s_median": medians([t.cpu for t in loops]),
        "replay_generate_cpu_s_median": medians([t.cpu for t in generates]),
        "replay_search_cpu_s_median": medians([t.cpu for t in searches_replayed]),
        "search_over_generate_cpu": medians(
            [s.cpu / g.cpu for s, g in zip(searches_replayed, generates, strict=True)]
        ),
        "loop_overhead_cpu_per_trial": [round(r, 4) for r in cpu],
        "loop_overhead_wall_per_trial": [round(r, 4) for r in wall],
        "loop_overhead_wall": medians(wall),
        "loop_overhead": medians(cpu),
    }, rollouts


@contextmanager
def output_layer_everywhere(everywhere: bool) -> Iterator[None]:
    """The actor's log-probs with the output layer at every position (the code before loss positions)."""
    original = actor_module.response_log_probs
    if everywhere:
        actor_module.response_log_probs = partial(original, loss_positions_only=False)
    try:
        yield
    finally:
        actor_module.response_log_probs = original


def update_phase(config: RLConfig, rollouts: list[Rollout], trials: int) -> dict[str, Any]:
    """Part 3: old log-probs + PPO updates of the same episodes, full logits vs sampled positions only."""
    episodes: list[Episode] = score_rollouts(rollouts, "bench", config)
    advantages = grpo_advantages(torch.tensor([e.score for e in episodes]), [e.group_id for e in episodes])
    for episode, advantage in zip(episodes, advantages.tolist(), strict=True):
        episode.advantage = advantage
    actor = Actor(config, Dist())
    start = copy.deepcopy(actor.state_dict())
    health = HealthMonitor(HealthConfig(), lambda: "")

    def run(everywhere: bool) -> Took:
        actor.load_state_dict(copy.deepcopy(start))
        with output_layer_everywhere(everywhere):
            took, _ = timed(
                lambda: (
                    actor.compute_log_probs(episodes, StepMetrics()),
                    actor.update(episodes, 0, StepMetrics(), health),
                )
            )
        return took

    run(False)  # warm-up
    full: list[Took] = []
    positions: list[Took] = []
    for trial in range(trials):
        order = (True, False) if trial % 2 == 0 else (False, True)
        for everywhere in order:
            (full if everywhere else positions).append(run(everywhere))
    cpu = [f.cpu / p.cpu for f, p in zip(full, positions, strict=True)]
    return {
        "episodes": len(episodes),
        "tokens": sum(len(e.rollout.token_ids) for e in episodes),
        "sampled_tokens": sum(e.num_sampled for e in episodes),
        "vocab": actor.policy.config.vocab_size,
        "trials": trials,
        "full_logits_cpu_s_median": medians([t.cpu for t in full]),
        "loss_positions_cpu_s_median": medians([t.cpu for t in positions]),
        "speedup_cpu_per_trial": [round(r, 3) for r in cpu],
        "speedup_wall": medians([f.wall / p.wall for f, p in zip(full, positions, strict=True)]),
        "speedup": medians(cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--n", type=int, default=8, help="rollouts per prompt in the train steps")
    parser.add_argument("--loop-n", type=int, default=16, help="rollouts per task in the loop trials")
    parser.add_argument("--min-loop-s", type=float, default=10.0, help="loop CPU seconds over all trials")
    parser.add_argument("--update-trials", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.loop_n, args.min_loop_s, args.update_trials = 1, 8, 0.0, 1
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

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
            "trainer.total_steps": args.steps,
            "trainer.lr": 3e-4,
            "trainer.output_dir": root / "rl",
            "trainer.mlflow_uri": f"sqlite:///{root / 'mlflow.db'}",
            "trainer.progress": "false",
            "trainer.threads": args.threads,
        }
        config = load_config(RLConfig, "configs/rl.yaml", [f"{k}={v}" for k, v in sets.items()])
        shares = step_shares(config, args.steps)
        loop_config = config.model_copy(
            update={"rollout": config.rollout.model_copy(update={"n": args.loop_n})}
        )
        loop, rollouts = loop_overhead(loop_config, retriever, args.min_loop_s)
        update = update_phase(config, rollouts, args.update_trials)
        retriever.close()

    report = {
        "policy": f"tiny random Qwen2 2x64 after 150 supervised steps, CPU, torch threads {args.threads}",
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before], "after": list(os.getloadavg())},
        "train": {"rollouts_per_step": config.trainer.gen_batch_size * args.n, **shares},
        "loop": loop,
        "update": update,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
