"""Rollout-loop overhead: the full loop (generate, parse, retrieve, insert, continue) versus plain
``generate`` of the same number of model tokens, same model, same run.

A random-weight Qwen2 (default 4 layers, hidden 256) with the test tokenizer is forced to spell a
search-search-answer script (so the loop really retrieves from a local Lucene index of the bundled
wiki-18 sample); the baseline forces the same model tokens with plain transformers ``model.generate``
(greedy, left padding, one call per batch of ``--batch-size`` rollouts; no stop strings, no log-probs,
no retrieval). Overhead = loop time / baseline time - 1 (target <= 10%). The hf backend keeps its KV
cache across turns, so the loop prefills only the inserted result blocks; ``backend_generate_s`` is the
backend's own decode loop on the baseline's requests, for reference. The baseline never reads the
retrieved text, which the loop must prefill (``env_tokens``, usually several times ``model_tokens``); on a
CPU, prefill costs a large share of decode per token, so ``overhead_ratio`` is dominated by that prefill.
``loop_mechanics_ratio`` isolates the loop itself: (loop time - its generation time) / generation time.

    python bench/bench_rollout.py            # 32 tasks, 4 layers x 256
    python bench/bench_rollout.py --quick    # 4 small tasks, 2 layers x 128: a smoke run

The tokenizer is trained with an 8k vocabulary so retrieved text costs about as many tokens as with a
real model's tokenizer (the 2k test tokenizer splits words into ~2x more pieces).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny tokenizer/model helpers shared with the tests

from tiny_model import ForceTokens, ScriptedBackend, corpus_lines, tiny_model, tiny_tokenizer  # noqa: E402

from ramp.agent.backends.base import GenerationRequest  # noqa: E402
from ramp.agent.backends.hf import HFBackend  # noqa: E402
from ramp.agent.config import RolloutConfig  # noqa: E402
from ramp.agent.rollout import RolloutLoop  # noqa: E402
from ramp.agent.task import Task  # noqa: E402
from ramp.prompts import chat  # noqa: E402
from ramp.retrieval.env import SearchConfig, SearchEnv  # noqa: E402
from ramp.seeding import record_rng  # noqa: E402


def _words(rng: random.Random, words: list[str], low: int, high: int) -> str:
    n = rng.randint(low, high)
    start = rng.randrange(len(words) - n)
    return " ".join(words[start : start + n])


def scripts(num_tasks: int, think_words: int) -> dict[str, list[str]]:
    """Per task: two searches with query words from the corpus, then an answer; thinking of varied length."""
    words = " ".join(corpus_lines(200)).split()
    out = {}
    for t in range(num_tasks):
        rng = record_rng(0, str(t), "bench-rollout")
        think = [_words(rng, words, think_words // 2, think_words) for _ in range(3)]
        query = [_words(rng, words, 4, 4) for _ in range(3)]
        out[f" benchtask{t}"] = [
            f"<think>{think[0]}</think><search> {query[0]}</search>",
            f"<think>{think[1]}</think><search> {query[1]}</search>",
            f"<think>{think[2]}</think><answer>\n[1] {query[2]}\n</answer>",
        ]
    return out


def plain_generate(
    model: Any, tokenizer: Any, prompts: list[list[int]], forced: list[list[int]], batch_size: int
) -> list[list[int]]:
    """``model.generate`` (greedy, left padding) forced to spell ``forced[i]`` after ``prompts[i]``."""
    out: list[list[int]] = []
    for b in range(0, len(prompts), batch_size):
        batch, want = prompts[b : b + batch_size], forced[b : b + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        sequences = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max(len(w) for w in want),
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=LogitsProcessorList([ForceTokens(want, tokenizer.eos_token_id)]),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        out += [row[width : width + len(w)] for row, w in zip(sequences.tolist(), want, strict=True)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 small tasks on a 2x128 model, a smoke run")
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--think-words", type=int, default=40)
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.layers, args.hidden, args.think_words = 4, 2, 128, 20
    num_tasks = args.tasks

    from ramp.retrieval.indexing import build_index
    from ramp.retrieval.lucene import LuceneRetriever

    tokenizer = tiny_tokenizer(vocab_size=8000)
    backend = HFBackend(tiny_model(tokenizer, args.hidden, args.layers), tokenizer, args.batch_size, "cpu")
    task_scripts = scripts(num_tasks, args.think_words)
    tasks = [
        Task(
            task_id=key.strip(),
            kind="qa",
            messages=tuple(chat(f"Find the masked words for{key} .")),
            golds=(),
        )
        for key in task_scripts
    ]
    config = RolloutConfig(max_turns=4, max_new_tokens_per_turn=256, max_total_new_tokens=1024)
    with tempfile.TemporaryDirectory() as tmp:
        build_index([ROOT / "data" / "wiki18-sample-1000.jsonl"], tmp, threads=1, shards=1, progress=False)
        retriever = LuceneRetriever(tmp, threads=1)
        env = SearchEnv(retriever, SearchConfig(top_k=3))
        loop = RolloutLoop(ScriptedBackend(backend, task_scripts), env, config)
        loop.run(tasks[:2])  # warm-up: JVM, torch kernels
        loop_prefilled_before, loop_reused_before = (
            backend.stats.prefilled_tokens,
            backend.stats.reused_tokens,
        )
        start = time.perf_counter()
        rollouts = loop.run(tasks)
        loop_s = time.perf_counter() - start
        retriever.close()
    assert all(r.finish_reason == "answer" and len(r.queries) == 2 for r in rollouts), "script not followed"

    # Baseline: plain transformers generate of the same model tokens; then the backend on the same requests.
    forced = [[t for s in r.segments if s.role == "model" for t in s.token_ids] for r in rollouts]
    prompts = [r.prompt_ids for r in rollouts]
    start = time.perf_counter()
    plain = plain_generate(backend.model, tokenizer, prompts, forced, args.batch_size)
    base_s = time.perf_counter() - start
    assert plain == forced, "baseline did not spell the forced tokens"
    model_tokens = sum(len(ids) for ids in forced)
    by_prompt = {tuple(p): ids for p, ids in zip(prompts, forced, strict=True)}
    backend.clear_cache()
    start = time.perf_counter()
    results = backend.generate(
        [
            GenerationRequest(prompt_ids=p, max_new_tokens=len(ids))
            for p, ids in zip(prompts, forced, strict=True)
        ],
        processors_for_batch=lambda batch: [
            ForceTokens([by_prompt[tuple(q.prompt_ids or [])] for q in batch], tokenizer.eos_token_id)
        ],
    )
    backend_s = time.perf_counter() - start
    assert [r.token_ids for r in results] == forced

    stats = loop.stats
    report = {
        "tasks": num_tasks,
        "model": f"qwen2 random {args.layers}x{args.hidden}, vocab {len(tokenizer)}",
        "model_tokens": model_tokens,
        "env_tokens": sum(r.num_env_tokens for r in rollouts),
        "searches": stats.searches,
        "baseline_generate_s": round(base_s, 3),
        "backend_generate_s": round(backend_s, 3),
        "loop_s": round(loop_s, 3),
        "loop_generate_s": round(stats.generate_s, 3),
        "loop_retrieve_s": round(stats.retrieve_s, 3),
        "loop_other_s": round(stats.total_s - stats.generate_s - stats.retrieve_s, 3),
        "loop_prefilled_tokens": backend.stats.prefilled_tokens - loop_prefilled_before,
        "loop_reused_tokens": backend.stats.reused_tokens - loop_reused_before,
        "overhead_ratio": round(loop_s / base_s - 1, 4),
        # the loop's own work (parse, retrieve, insert, bookkeeping) next to its generation time
        "loop_mechanics_ratio": round((loop_s - stats.generate_s) / stats.generate_s, 4),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
