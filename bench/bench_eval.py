"""Evaluation-harness overhead: ``ramp eval run`` (hf backend, local Lucene index) versus the sum of its
parts, same model, same run.

The 53 HotpotQA distractor questions, over a Lucene index of their own context paragraphs (``ramp eval
corpus`` + ``ramp index build``). A random-weight Qwen2 (default 4 layers, hidden 256, 8k-vocabulary test
tokenizer) is forced to spell, per question, a think + search(question) turn, a think + search(first
supporting title) turn and an answer turn, so the harness really retrieves and prefills retrieved text.

- harness: :func:`ramp.eval.run.run_eval` answering every question (rollout loop, retrieval, scoring,
  Parquet parts; its ``answer_seconds``), and the whole call (plus the MLflow logging and plots);
- generation: the same backend calls replayed on the same hf backend (the same requests: prompts with
  the retrieved text, prefix-cache reuse across turns, the same forced tokens);
- retrieval: the same searches (per chunk and turn, one batched call each) on the same index.

Overhead = harness / (generation + retrieval) - 1 (target <= 10%); each side is measured ``--repeats``
times, alternating, and the best time of each is kept (the machine may be shared).

    python bench/bench_eval.py            # 53 questions, 4 layers x 256
    python bench/bench_eval.py --quick    # 8 questions, 2 x 128: a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tiny tokenizer/model helpers shared with the tests

from tiny_model import ForceTokens, ScriptedBackend, tiny_model, tiny_tokenizer  # noqa: E402

from ramp.agent.backends.base import GenerationRequest, GenerationResult  # noqa: E402
from ramp.agent.backends.hf import HFBackend  # noqa: E402
from ramp.config import load_config  # noqa: E402
from ramp.qa import load_qa  # noqa: E402
from ramp.qa.config import EvalConfig  # noqa: E402

DISTRACTOR = ROOT / "data" / "hotpotqa-dev-distractor-53.json"


Calls = list[tuple[list[GenerationRequest], list[list[int]]]]  # requests and generated ids per call


class Recorder:
    """Forwards to a backend and records every call's requests and generated ids."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.tokenizer = inner, inner.tokenizer
        self.calls: Calls = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        # copies: the loop extends its context lists after the call
        copies = [dataclasses.replace(r, prompt_ids=list(r.prompt_ids or [])) for r in requests]
        results = self.inner.generate(requests)
        self.calls.append((copies, [list(r.token_ids) for r in results]))
        return results


def forcing(
    requests: list[GenerationRequest], outputs: list[list[int]], eos: int
) -> Callable[[list[GenerationRequest]], list[ForceTokens]]:
    """Logits processors that make each request spell its recorded output."""
    forced = {id(r): ids for r, ids in zip(requests, outputs, strict=True)}
    return lambda batch: [ForceTokens([forced[id(r)] for r in batch], eos)]


class ForcedReplay:
    """The hf backend forced to the recorded ids of each call, in call order (the same forcing cost as
    :func:`replay_generation`, none of the scripted backend's prompt lookups)."""

    def __init__(self, inner: HFBackend, calls: Calls):
        self.inner, self.tokenizer, self.calls, self.next = inner, inner.tokenizer, calls, 0

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        recorded, outputs = self.calls[self.next]
        self.next += 1
        assert [r.prompt_ids for r in requests] == [r.prompt_ids for r in recorded], "a different call"
        return self.inner.generate(requests, forcing(requests, outputs, self.tokenizer.eos_token_id))


def replay_generation(backend: HFBackend, calls: Calls) -> float:
    """The recorded calls again, each forced to the recorded ids; returns seconds."""
    backend.clear_cache()
    eos = backend.tokenizer.eos_token_id
    start = time.perf_counter()
    for requests, outputs in calls:
        results = backend.generate(requests, forcing(requests, outputs, eos))
        assert [r.token_ids for r in results] == outputs, "replay did not spell the recorded tokens"
    return time.perf_counter() - start


def replay_retrieval(index: Path, rows: list[dict[str, Any]], chunk_size: int, k: int) -> float:
    """The harness's searches, batched as the loop batches them (per chunk, per turn); returns seconds."""
    from ramp.retrieval.lucene import LuceneRetriever

    retriever = LuceneRetriever(index, threads=2)
    start = time.perf_counter()
    for c in range(0, len(rows), chunk_size):
        chunk = rows[c : c + chunk_size]
        for turn in range(max(len(r["queries"]) for r in chunk)):
            queries = [r["queries"][turn] for r in chunk if len(r["queries"]) > turn]
            hits = retriever.search(queries, k=k, exclude_doc_ids=[()] * len(queries))
            expected = [r["retrieved_ids"][turn] for r in chunk if len(r["queries"]) > turn]
            assert [[h.doc_id for h in found] for found in hits] == expected, "different hits"
    seconds = time.perf_counter() - start
    retriever.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8 questions on a 2x128 model, a smoke run")
    parser.add_argument("--questions", type=int, default=53)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="measure each side this often; keep the best")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.questions, args.layers, args.hidden = 8, 2, 128

    from ramp.eval.run import run_eval

    from ramp.qa.corpus import build_corpus
    from ramp.retrieval.indexing import build_index

    records = load_qa("hotpotqa", DISTRACTOR, limit=args.questions)
    scripts = {
        " " + " ".join(r.question.split()[1:5]): [
            f"<think>I need facts for: {r.question}</think>\n<search>{r.question}</search>",
            f"<think>Now the page of {r.metadata['supporting_titles'][0]}.</think>\n"
            f"<search>{r.metadata['supporting_titles'][0]}</search>",
            f"<think>The hits answer it.</think>\n<answer>{r.golden_answers[0]}</answer>",
        ]
        for r in records
    }
    tokenizer = tiny_tokenizer(vocab_size=8000)
    hf = HFBackend(tiny_model(tokenizer, args.hidden, args.layers), tokenizer, args.batch_size, "cpu")
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        build_corpus("hotpotqa", DISTRACTOR, tmp / "corpus")
        build_index([tmp / "corpus"], tmp / "index", threads=2, shards=2, progress=False)

        def config(name: str, limit: int) -> EvalConfig:
            return load_config(
                EvalConfig,
                values={
                    "experiment": "bench-eval",
                    "run_name": name,
                    "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
                    "output_dir": str(tmp / name),
                    "chunk_size": args.chunk_size,
                    "retriever": {"kind": "lucene", "index": str(tmp / "index")},
                    "datasets": [{"name": "hotpotqa", "path": str(DISTRACTOR), "limit": limit}],
                    "agent": {
                        "rollout": {
                            "max_turns": 4,
                            "max_new_tokens_per_turn": 256,
                            "max_total_new_tokens": 1024,
                        },
                        "search": {"top_k": 3},
                    },
                },
            )

        # Recording run (also the warm-up: JVM, MLflow store, torch): the scripted backend's calls.
        recorder = Recorder(ScriptedBackend(hf, scripts))
        recorded = run_eval(config("record", args.questions), progress=False, backend=recorder)
        rows = pq.read_table(recorded.predictions).to_pylist()
        followed = all(r["finish_reason"] == "answer" and r["num_searches"] == 2 for r in rows)
        assert followed, "script not followed"
        harness_s, totals, generation, retrieval = [], [], [], []
        for repeat in range(args.repeats):  # alternate the sides so both see the same machine load
            hf.clear_cache()
            before = dict(vars(hf.stats))
            start = time.perf_counter()
            result = run_eval(
                config(f"bench-{repeat}", args.questions),
                progress=False,
                backend=ForcedReplay(hf, recorder.calls),
            )
            totals.append(time.perf_counter() - start)
            harness_s.append(result.answer_seconds)
            assert pq.read_table(result.predictions).to_pylist() == rows, "different rows"
            middle = dict(vars(hf.stats))
            generation.append(replay_generation(hf, recorder.calls))
            after = dict(vars(hf.stats))
            same = all(middle[k] - before[k] == after[k] - middle[k] for k in before)
            assert same, "the replay did not prefill, reuse and generate the same tokens"
            retrieval.append(replay_retrieval(tmp / "index", rows, args.chunk_size, 3))
    answer_s, total_s, generate_s, retrieve_s = min(harness_s), min(totals), min(generation), min(retrieval)
    parts_s = generate_s + retrieve_s
    report = {
        "questions": len(rows),
        "model": f"qwen2 random {args.layers}x{args.hidden}, vocab {len(tokenizer)}",
        "model_tokens": sum(r["model_tokens"] for r in rows),
        "searches": sum(r["num_searches"] for r in rows),
        "exact_match": result.summary["exact_match/hotpotqa"],
        "threads": args.threads,
        "repeats": args.repeats,
        "harness_answer_s": round(answer_s, 3),
        "harness_total_s": round(total_s, 3),
        "generation_s": round(generate_s, 3),
        "retrieval_s": round(retrieve_s, 3),
        "questions_per_s_harness": round(len(rows) / answer_s, 2),
        "questions_per_s_parts": round(len(rows) / parts_s, 2),
        "overhead_ratio": round(answer_s / parts_s - 1, 4),
        "overhead_ratio_with_mlflow_logging": round(total_s / parts_s - 1, 4),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
