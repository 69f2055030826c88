"""Dense and hybrid retrieval, each figure against a baseline measured in the same run (issue 24).

* ``recall``: recall@5 of the supporting passages (by title) of the 53 HotpotQA distractor questions
  against their own corpus (``ramp eval corpus``): BM25, dense (all-MiniLM-L6-v2, flat), hybrid (RRF,
  the default k = 60 and depth 20, tuned on nothing).
* ``throughput``: ``Encoder.encode_passages`` vs sentence-transformers' own ``encode`` of the same model on
  the same passages and batch size, interleaved trials (median of per-trial ratios); then the whole Beam
  encoding job (start-up, model load, shards written) once against one ``SentenceTransformer`` load +
  ``encode``.
* ``memory``: a corpus of ``--passages`` synthetic passages (``bench_retrieval.synthesise_corpus``: the title
  of sample passage i % 1000 and 6 seeded sample sentences, so no two passages are copies); ``flat`` and
  ``ivfpq`` built from the same embeddings: index bytes, recall@10 of ivfpq against flat's own top 10 (for
  200 queries, by nprobe), and the peak RSS (VmHWM) of ``ramp serve-retriever`` on each after serving them.
  ``--vectors encode`` runs the real encoding job (stored under ``--work``, reused by every later run);
  ``--vectors interpolate`` encodes only the first ``--base`` passages and makes the rest by seeded
  interpolation of two encoded vectors plus noise (for machines where encoding 100k passages takes hours).
* ``server``: 8 clients each sending 64-query requests to ``ramp serve-retriever`` vs the same 512 queries
  as 8 in-process 64-query ``search`` calls, for dense and hybrid (interleaved trials, median ratio).

    .venv/bin/python bench/bench_dense.py                                    # everything, real encoding
    .venv/bin/python bench/bench_dense.py --only memory --vectors interpolate   # 100k without encoding it
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_retrieval import _free_port, _listed, bench_queries, synthesise_corpus, trial_seconds
from ramp.pipelines.dense_index import EMBEDDINGS, RECORD_FILE, build_dense_index, encode_corpus

from ramp.qa.corpus import build_corpus
from ramp.retrieval.base import Retriever
from ramp.retrieval.config import RetrieverConfig, build_retriever
from ramp.retrieval.dense import EMBEDDING_SCHEMA, FaissSpec, embedding_batches, vectors
from ramp.retrieval.encoder import Encoder, model_directory, resolve_spec, weights_digest
from ramp.retrieval.indexing import CorpusFingerprint, build_index, iter_documents, resolve_corpus
from ramp.retrieval.lucene import split_contents

ROOT = Path(__file__).resolve().parent.parent
HOTPOT = ROOT / "data" / "hotpotqa-dev-distractor-53.json"
SAMPLE = ROOT / "data" / "wiki18-sample-1000.jsonl"


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def dense_index(corpus: Path, index: Path, faiss: FaissSpec, embeddings: Path | None = None) -> Path:
    """``index`` built from ``corpus`` (embeddings reused when already encoded); an index this bench built
    before is kept (delete ``--work`` to rebuild)."""
    spec = resolve_spec("minilm")
    manifest_path = index / "ramp-manifest.json"
    if manifest_path.exists() and json.loads(manifest_path.read_text())["faiss"]["type"] == faiss.type:
        print(f"  {index.name}: kept from an earlier run")
        return index
    manifest = build_dense_index(
        [corpus], index, spec, faiss, embeddings_dir=str(embeddings) if embeddings else None, overwrite=True
    )
    how = "reused" if manifest["embeddings"]["reused"] else f"{manifest['embeddings']['encode_seconds']} s"
    print(f"  {index.name}: {manifest['documents']:,} passages, {faiss.type}, embeddings {how}")
    return index


def hotpot_indexes(work: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    corpus = work / "hotpot-corpus"
    if not (corpus / "passages-00000.parquet").exists():
        build_corpus("hotpotqa", HOTPOT, corpus)
    lucene = work / "hotpot-bm25"
    if not (lucene / "ramp-manifest.json").exists():
        build_index([corpus], lucene, threads=2, overwrite=True, progress=False)
    dense = dense_index(corpus, work / "hotpot-dense", FaissSpec())
    return lucene, dense, json.loads(HOTPOT.read_text(encoding="utf-8"))


def kinds(lucene: Path, dense: Path) -> dict[str, RetrieverConfig]:
    return {
        "bm25": RetrieverConfig(kind="lucene", index=str(lucene)),
        "dense": RetrieverConfig(kind="dense", index=str(dense)),
        "hybrid": RetrieverConfig(kind="hybrid", index=str(lucene), dense_index=str(dense)),
    }


def recall(work: Path) -> None:
    lucene, dense, questions = hotpot_indexes(work)
    queries = [q["question"] for q in questions]
    gold = [{title for title, _ in q["supporting_facts"]} for q in questions]
    print(f"recall@5 of the supporting passages, {len(queries)} HotpotQA distractor questions:")
    for name, config in kinds(lucene, dense).items():
        with closing(build_retriever(config)) as retriever:
            found = retriever.search(queries, k=5)
        scores = [len(g & {h.title for h in hits}) / len(g) for g, hits in zip(gold, found, strict=True)]
        both = sum(s == 1.0 for s in scores)
        print(
            f"  {name:<7} {statistics.mean(scores):.3f}   (both passages in the top 5: {both}/{len(scores)})"
        )


def throughput(work: Path, passages: int, batch_size: int, trials: int) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [f"{t}\n{x}" for t, x in (split_contents(c) for _, c in iter_documents([SAMPLE]))][:passages]
    ours = Encoder(resolve_spec("minilm"), batch_size=batch_size)
    theirs = SentenceTransformer(str(model_directory("minilm")), device="cpu")
    print(
        f"encoding {len(texts)} wiki-18 passages, batch {batch_size}, {trials} interleaved trials ({load()}):"
    )
    runs: dict[str, Callable[[], object]] = {
        "ours": lambda: ours.encode_passages(texts),
        "sentence-transformers": lambda: theirs.encode(texts, batch_size=batch_size),
    }
    for clock, timings in zip(("wall", "CPU"), cpu_and_wall_seconds(runs, trials), strict=True):
        for name in runs:
            rates = [len(texts) / s[name] for s in timings]
            print(
                f"  {name:<22} {statistics.median(rates):6.1f} passages per {clock} second"
                f"  (trials: {_listed(rates, '.1f')})"
            )
        ratios = [s["sentence-transformers"] / s["ours"] for s in timings]
        print(
            f"  ratio ours / sentence-transformers by {clock} time = {statistics.median(ratios):.2f}  "
            f"(target >= 0.9; trials: {_listed(ratios, '.2f')})"
        )
    corpus = work / f"throughput-{passages}.jsonl"
    corpus.write_text("".join(f"{x}\n" for x in SAMPLE.read_text().splitlines()[:passages]), encoding="utf-8")
    fingerprint = CorpusFingerprint()
    for doc_id, contents in iter_documents([corpus]):
        fingerprint.add(doc_id, contents)
    with tempfile.TemporaryDirectory(dir=work) as out:
        started = time.perf_counter()
        encode_corpus(
            [str(corpus)],
            out,
            resolve_spec("minilm"),
            fingerprint=fingerprint.value,
            documents=passages,
            batch_size=batch_size,
        )
        job = time.perf_counter() - started
    started = time.perf_counter()
    SentenceTransformer(str(model_directory("minilm")), device="cpu").encode(texts, batch_size=batch_size)
    baseline = time.perf_counter() - started
    print(
        f"  the Beam job end to end (start-up, load, encode, shards): {passages / job:.1f} passages/s vs "
        f"sentence-transformers load + encode {passages / baseline:.1f}: ratio {baseline / job:.2f}"
        f" ({load()})"
    )


def cpu_and_wall_seconds(
    runs: dict[str, Callable[[], object]], trials: int
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Like ``trial_seconds`` (a warm-up, then interleaved trials in a rotating order), recording wall and
    process CPU time: on a shared machine CPU time is the steadier of the two."""
    for run in runs.values():
        run()
    names, walls, cpus = list(runs), [], []
    for trial in range(trials):
        wall, cpu = {}, {}
        for name in names[trial % len(names) :] + names[: trial % len(names)]:
            started, started_cpu = time.perf_counter(), time.process_time()
            runs[name]()
            wall[name], cpu[name] = time.perf_counter() - started, time.process_time() - started_cpu
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


def interpolated_embeddings(corpus: Path, out: Path, base: int, seed: int = 0) -> Path:
    """Embeddings of ``corpus`` where only the first ``base`` passages are encoded (the real job) and
    each other one is ``normalise(0.6 a + 0.4 b + noise)`` of two encoded vectors drawn with ``seed``."""
    spec = resolve_spec("minilm")
    documents = list(iter_documents(resolve_corpus([corpus])))
    fingerprint = CorpusFingerprint()
    for doc_id, contents in documents:
        fingerprint.add(doc_id, contents)
    record_path = out / RECORD_FILE
    if (
        record_path.exists()
        and json.loads(record_path.read_text())["corpus_fingerprint"] == fingerprint.value
    ):
        return out
    head = out.parent / f"{out.name}-base-{base}.jsonl"
    head.write_text("".join(json.dumps({"id": i, "contents": c}) + "\n" for i, c in documents[:base]))
    base_dir = out.parent / f"{out.name}-base-{base}"
    fp = CorpusFingerprint()
    for doc_id, contents in documents[:base]:
        fp.add(doc_id, contents)
    encode_corpus([str(head)], str(base_dir), spec, fingerprint=fp.value, documents=base)
    encoded = np.concatenate(
        [vectors(b, 384) for b in embedding_batches(sorted(map(str, base_dir.glob("*.parquet"))))]
    )
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, len(encoded), size=(len(documents), 2))
    mixed = 0.6 * encoded[pairs[:, 0]] + 0.4 * encoded[pairs[:, 1]]
    mixed += rng.normal(0, 0.02, size=mixed.shape)
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": doc_id,
            "title": split_contents(c)[0],
            "text": split_contents(c)[1],
            "embedding": v.astype("<f4").tobytes(),
        }
        for (doc_id, c), v in zip(documents, mixed.astype(np.float32), strict=True)
    ]
    shard = out / f"{EMBEDDINGS}-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=EMBEDDING_SCHEMA), shard, compression="zstd")
    record = {
        "corpus_fingerprint": fingerprint.value,
        "documents": len(documents),
        "encoder": spec.to_json(),
        "encoder_weights_sha256": weights_digest(spec.name),
        "num_shards": 1,
        "files": {shard.name: shard.stat().st_size},
        "encode_seconds": 0.0,
        "passages_per_second": 0.0,
        "vectors": f"interpolated from {base} encoded passages (bench_dense.py)",
    }
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return out


def serve(index: Path, extra: list[str] = ()) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "ramp",
        "serve-retriever",
        "--index",
        str(index),
        "--port",
        str(port),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server on {index} did not start") from None
            time.sleep(0.5)


def memory_mb(pid: int) -> dict[str, float]:
    """The process's peak RSS (VmHWM) and its resident anonymous and file-backed (page cache of memory
    maps, reclaimable) memory, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmHWM", "RssAnon", "RssFile")}


def memory(work: Path, passages: int, how: str, base: int) -> None:
    corpus = work / f"synthetic-{passages}.jsonl"
    if not corpus.exists():
        synthesise_corpus(corpus, passages)
    embeddings = work / f"embeddings-{passages}-{how}"
    if how == "interpolate":
        interpolated_embeddings(corpus, embeddings, base)
    print(f"memory, {passages:,} passages ({how}; {load()}):")
    flat = dense_index(corpus, work / f"dense-{passages}-{how}-flat", FaissSpec(), embeddings)
    ivfpq = dense_index(corpus, work / f"dense-{passages}-{how}-ivfpq", FaissSpec(type="ivfpq"), embeddings)
    queries = bench_queries(200)
    sizes = {}
    for index in (flat, ivfpq):
        manifest = json.loads((index / "ramp-manifest.json").read_text())
        sizes[index] = manifest["faiss"]["bytes"]
    settings = json.loads((ivfpq / "ramp-manifest.json").read_text())["faiss"]
    print(
        f"  flat {sizes[flat]:,} bytes; ivfpq (nlist {settings['nlist']}, m {settings['m']}, "
        f"nbits {settings['nbits']})"
        f" {sizes[ivfpq]:,} bytes = 1/{sizes[flat] / sizes[ivfpq]:.1f} of flat (target <= 1/8)"
    )
    with closing(build_retriever(RetrieverConfig(kind="dense", index=str(flat)))) as exact:
        truth = [{h.doc_id for h in hits} for hits in exact.search(queries, k=10)]
    for nprobe, refine in ((32, 0), (128, 0), (32, None), (64, None)):
        config = RetrieverConfig(kind="dense", index=str(ivfpq), nprobe=nprobe, refine=refine)
        with closing(build_retriever(config)) as approx:
            started = time.perf_counter()
            found = approx.search(queries, k=10)
            seconds = time.perf_counter() - started
        overlap = statistics.mean(
            len(t & {h.doc_id for h in f}) / 10 for t, f in zip(truth, found, strict=True)
        )
        how = f"refine {settings['refine']} (default)" if refine is None else "PQ scores only"
        print(
            f"  ivfpq nprobe {nprobe:>3}, {how}: recall@10 vs flat {overlap:.3f} (target >= 0.95), "
            f"{len(queries) / seconds:.0f} q/s with query encoding"
        )
    for index in (flat, ivfpq):
        proc, url = serve(index)
        try:
            with httpx.Client(base_url=url, timeout=120) as http:
                for start in range(0, len(queries), 64):
                    http.post(
                        "/retrieve", json={"queries": queries[start : start + 64], "topk": 10}
                    ).raise_for_status()
            used = memory_mb(proc.pid)
            print(
                f"  ramp serve-retriever, {index.name}: peak RSS {used['VmHWM']:,.0f} MB; now anonymous "
                f"{used['RssAnon']:,.0f} MB + file-backed {used['RssFile']:,.0f} MB"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def server(work: Path, trials: int, clients: int = 8, batch: int = 64) -> None:
    lucene, dense, questions = hotpot_indexes(work)
    pool = [q["question"] for q in questions] + bench_queries(clients * batch)
    queries = pool[: clients * batch]
    requests = [queries[i : i + batch] for i in range(0, len(queries), batch)]
    print(
        f"server: {clients} clients x {batch}-query requests vs in-process {batch}-query searches ({load()}):"
    )
    for name, config in list(kinds(lucene, dense).items())[1:]:
        extra = ["--set", "retriever.kind=hybrid", "--set", f"retriever.dense_index={dense}"]
        proc, url = serve(dense, []) if name == "dense" else serve(lucene, extra)
        retriever: Retriever = build_retriever(config)
        try:
            runs = {"in-process": _in_process(retriever, requests), "server": _over_http(url, requests)}
            timings = trial_seconds(runs, trials)
            rates = {k: [len(queries) / s[k] for s in timings] for k in runs}
            ratios = [s["in-process"] / s["server"] for s in timings]
            print(
                f"  {name:<7} in-process {statistics.median(rates['in-process']):6.0f} q/s, server "
                f"{statistics.median(rates['server']):6.0f} q/s: ratio {statistics.median(ratios):.2f} "
                f"(target >= 0.8; trials {_listed(ratios, '.2f')})"
            )
        finally:
            retriever.close()
            proc.terminate()
            proc.wait(timeout=30)


def _in_process(retriever: Retriever, requests: list[list[str]]) -> Callable[[], object]:
    def run() -> None:
        for request in requests:
            retriever.search(request, k=3)

    return run


def _over_http(url: str, requests: list[list[str]]) -> Callable[[], object]:
    def send(request: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            http.post("/retrieve", json={"queries": request, "topk": 3}).raise_for_status()

    def run() -> None:
        with ThreadPoolExecutor(max_workers=len(requests)) as executor:
            list(executor.map(send, requests))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="recall,throughput,memory,server")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-dense")
    parser.add_argument("--passages", type=int, default=100_000, help="memory: corpus size")
    parser.add_argument("--vectors", choices=["encode", "interpolate"], default="encode")
    parser.add_argument(
        "--base", type=int, default=1000, help="memory --vectors interpolate: passages encoded"
    )
    parser.add_argument("--encode-passages", type=int, default=256, help="throughput: passages per trial")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"bench_dense: {load()} on {os.cpu_count()} cores")
    parts = args.only.split(",")
    if "recall" in parts:
        recall(args.work)
    if "throughput" in parts:
        throughput(args.work, args.encode_passages, args.batch_size, args.trials)
    if "memory" in parts:
        memory(args.work, args.passages, args.vectors, args.base)
    if "server" in parts:
        server(args.work, args.trials)
    print(f"bench_dense: done, {load()}")


if __name__ == "__main__":
    main()
