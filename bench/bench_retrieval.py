"""Retrieval speed: ramp's LuceneRetriever vs plain pyserini, and the HTTP server under concurrency.

The bench corpus is synthesised from the bundled 1,000-passage wiki-18 sample: document i keeps the
title of sample passage ``i % 1000`` and gets 6 sentences drawn (seeded per document) from the pool of
all sample sentences, so the index has ``--docs`` distinct documents rather than exact copies, with
realistic vocabulary and length. Queries are the first 4-12 words of seeded random pool sentences.
The corpus and index are cached in ``--cache-dir`` and reused between runs.

Reports, in one run on one index: queries/s through ``LuceneRetriever.search`` (hits with text),
through pyserini's ``LuceneSearcher.batch_search`` alone (Java hit objects only) and with the same
hit extraction ramp does (the like-for-like baseline; ratio target >= 0.9). The three run interleaved,
in a rotating order, for ``--trials`` trials of ``--queries`` queries each; the ratios are taken per trial
and their median is the figure (one short trial swings by 15% on a busy machine). Then server q/s with 1,
8 and 32 concurrent clients sending one query per request (agent-style) to ``ramp serve-retriever``.

    .venv/bin/python bench/bench_retrieval.py             # 200,000 docs, 5 trials of 5,000 queries
    .venv/bin/python bench/bench_retrieval.py --docs 20000 --queries 500 --trials 3
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ramp.retrieval.indexing import MANIFEST_NAME, build_index, read_manifest
from ramp.retrieval.jvm import import_pyserini_lucene
from ramp.retrieval.lucene import LuceneRetriever, split_contents
from ramp.seeding import record_rng

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "wiki18-sample-1000.jsonl"
SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")


def sample_pool() -> tuple[list[str], list[str]]:
    """Titles of the sample passages, and all their sentences of at least 5 words."""
    titles, sentences = [], []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        title, text = split_contents(json.loads(line)["contents"])
        titles.append(title)
        sentences += [s for s in SENTENCE_SPLIT.split(text) if len(s.split()) >= 5]
    return titles, sentences


def synthesise_corpus(path: Path, docs: int) -> None:
    titles, sentences = sample_pool()
    with open(path, "w", encoding="utf-8") as out:
        for i in range(docs):
            rng = record_rng(0, f"bench-doc-{i}", "bench")
            text = " ".join(rng.sample(sentences, 6))
            row = {"id": f"syn-{i}", "contents": f'"{titles[i % len(titles)]}"\n{text}'}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def bench_queries(count: int) -> list[str]:
    _, sentences = sample_pool()
    queries = []
    for i in range(count):
        rng = record_rng(0, f"bench-query-{i}", "bench")
        words = rng.choice(sentences).split()
        queries.append(" ".join(words[: rng.randint(4, 12)]))
    return queries


def cached_index(cache_dir: Path, docs: int, threads: int) -> Path:
    index = cache_dir / f"index-{docs}"
    if (index / MANIFEST_NAME).exists() and read_manifest(index)["documents"] == docs:
        return index
    cache_dir.mkdir(parents=True, exist_ok=True)
    corpus = cache_dir / f"corpus-{docs}.jsonl"
    print(f"synthesising {docs} documents -> {corpus}")
    synthesise_corpus(corpus, docs)
    build_index([corpus], index, threads=threads, overwrite=True)
    return index


def trial_seconds(runs: dict[str, Callable[[], object]], trials: int) -> list[dict[str, float]]:
    """Wall time of each run in each trial; runs are interleaved (the order rotates every trial) so
    machine noise hits them alike."""
    for run in runs.values():
        run()  # warm-up
    names = list(runs)
    timings = []
    for trial in range(trials):
        seconds = {}
        for name in names[trial % len(names) :] + names[: trial % len(names)]:
            started = time.perf_counter()
            runs[name]()
            seconds[name] = time.perf_counter() - started
        timings.append(seconds)
    return timings


def in_process(index: Path, queries: list[str], k: int, threads: int, trials: int) -> None:
    print(f"in-process batch search, k={k}, {threads} threads:")
    retriever = LuceneRetriever(index, threads=threads)
    lucene = import_pyserini_lucene()
    searcher = lucene.LuceneSearcher(str(index))
    searcher.set_bm25(0.9, 0.4)
    qids = [str(i) for i in range(len(queries))]

    def pyserini_raw() -> None:
        searcher.batch_search(queries, qids, k=k, threads=threads)

    def pyserini_with_text() -> None:
        results = searcher.batch_search(queries, qids, k=k, threads=threads)
        for qid in qids:
            for hit in results[qid]:
                split_contents(json.loads(hit.lucene_document.get("raw"))["contents"])
                _ = (hit.docid, hit.score)

    def ramp_search() -> None:
        retriever.search(queries, k=k)

    runs: dict[str, Callable[[], object]] = {
        "ramp LuceneRetriever.search (hits with text)": ramp_search,
        "pyserini batch_search (Java objects only)": pyserini_raw,
        "pyserini batch_search + hit text": pyserini_with_text,
    }
    ours, raw, fair = runs
    timings = trial_seconds(runs, trials)
    for name in runs:
        rates = [len(queries) / seconds[name] for seconds in timings]
        print(f"  {name:<46} {statistics.median(rates):>8,.0f} q/s median  (trials: {_listed(rates, '.0f')})")
    for baseline, label in ((fair, "pyserini+text"), (raw, "pyserini raw ")):
        ratios = [seconds[baseline] / seconds[ours] for seconds in timings]
        target = "   (target >= 0.9)" if baseline == fair else ""
        print(
            f"  ratio ramp / {label} = {statistics.median(ratios):.2f} median of {trials}{target}"
            f"  (trials: {_listed(ratios, '.2f')})"
        )
    searcher.close()
    retriever.close()


def _listed(values: list[float], spec: str) -> str:
    return " ".join(format(v, spec) for v in values)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server(index: Path, queries: list[str], k: int, threads: int) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "ramp", "serve-retriever", "--index", str(index), "--port", str(port)]
    cmd += ["--set", f"retriever.threads={threads}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("retrieval server did not start") from None
                time.sleep(0.2)
        print(f"server, one query per request, k={k}:")
        for clients in (1, 8, 32):
            chunks = [queries[i::clients] for i in range(clients)]

            def client(chunk: list[str]) -> int:
                errors = 0
                with httpx.Client(base_url=url, timeout=60) as http:
                    for query in chunk:
                        response = http.post(
                            "/retrieve", json={"queries": [query], "topk": k, "return_scores": True}
                        )
                        errors += response.status_code != 200
                return errors

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                errors = sum(pool.map(client, chunks))
            elapsed = time.perf_counter() - started
            print(f"  {clients:>2} clients: {len(queries) / elapsed:>8,.0f} q/s  errors={errors}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=5_000, help="queries per in-process trial")
    parser.add_argument("--trials", type=int, default=5, help="interleaved in-process trials")
    parser.add_argument("--server-queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "bench-retrieval-cache")
    args = parser.parse_args()

    index = cached_index(args.cache_dir, args.docs, args.threads)
    queries = bench_queries(max(args.queries, args.server_queries))
    print(f"index: {index} ({args.docs:,} documents), {args.queries:,} queries per trial")
    in_process(index, queries[: args.queries], args.k, args.threads, args.trials)
    server(index, queries[: args.server_queries], args.k, args.threads)


if __name__ == "__main__":
    main()
