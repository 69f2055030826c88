"""Dense retrieval: a FAISS index over passage embeddings, and ``DenseRetriever`` behind the one interface.

A dense index directory (``ramp index build --kind dense``, built by ``ramp.pipelines.dense_index``)::

    IDX/ramp-manifest.json   kind "dense", corpus fingerprint, encoder spec + weights hash, FAISS settings
    IDX/index.faiss          flat | hnsw | ivfpq, inner product (cosine on normalised vectors)
    IDX/docs.arrow           id, title, text in FAISS order (Arrow IPC, memory-mapped when searching)
    IDX/vectors.f32          ivfpq with refine: the exact vectors (float32 rows, memory-mapped, read per
                             candidate) that re-score ``refine`` × k PQ candidates
    IDX/embeddings/          the encoding job's shards (reusable: other FAISS types, no re-encoding)

Memory is bounded on both sides: :func:`write_faiss_index` streams the embedding shards (``ivfpq`` trains
on a seeded sample of at most ``train_size`` vectors, then adds shard by shard), and a searcher holds the
FAISS index in RAM while the passages stay in the memory-mapped ``docs.arrow``, read per hit. ``ivfpq``
keeps ``m`` bytes per vector (``nbits`` 8) against ``4 × dim`` for ``flat``; PQ distances alone lose
neighbours (recall@10 about 0.7 of flat's at 4 dimensions per byte), so by default ``refine`` × k candidates
are re-scored exactly from ``vectors.f32`` on disk: only the candidates' rows are read into memory.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from ramp import engines
from ramp.config import StrictModel
from ramp.errors import UserError
from ramp.retrieval.base import Hit, check_search_args
from ramp.retrieval.encoder import Encoder, EncoderError, EncoderSpec, weights_digest

MANIFEST_NAME = "ramp-manifest.json"
FAISS_FILE = "index.faiss"
VECTORS_FILE = "vectors.f32"
DOCS_FILE = "docs.arrow"
EMBEDDINGS_DIR = "embeddings"
DOCS_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])
# One row per passage as the encoding job writes it: the vector as little-endian float32 bytes.
EMBEDDING_SCHEMA = pa.schema(
    [("id", pa.string()), ("title", pa.string()), ("text", pa.string()), ("embedding", pa.binary())]
)


class FaissSpec(StrictModel):
    """Which FAISS index to build (``--faiss``, ``--nlist``, ``--m``, ``--nbits``, ``--hnsw-m``)."""

    type: Literal["flat", "hnsw", "ivfpq"] = "flat"
    nlist: int | None = Field(default=None, ge=1)  # ivfpq lists (default: about 4 sqrt(N), at most N / 39)
    m: int | None = Field(default=None, ge=1)  # ivfpq sub-quantizers = bytes per vector (default dim / 4)
    nbits: int = Field(default=8, ge=1, le=16)  # bits per sub-quantizer code
    nprobe: int = Field(default=64, ge=1)  # ivfpq lists searched per query (search time; settable there)
    refine: int = Field(default=8, ge=0)  # ivfpq: re-score refine × k candidates exactly from disk (0: off)
    hnsw_m: int = Field(default=32, ge=2)  # hnsw neighbours per node
    ef_construction: int = Field(default=200, ge=1)
    ef_search: int = Field(default=128, ge=1)  # hnsw search breadth (search time; settable there)
    train_size: int = Field(default=200_000, ge=1)  # ivfpq training sample (seeded)
    seed: int = 0

    @model_validator(mode="after")
    def _sizes(self) -> FaissSpec:
        if self.type != "ivfpq" and (self.nlist or self.m):
            raise ValueError("nlist and m are ivfpq settings (give --faiss ivfpq)")
        return self


def embedding_batches(
    files: Sequence[str], open_file: Callable[[str], IO[bytes]] | None = None
) -> Iterator[pa.RecordBatch]:
    """The encoding job's rows, shard after shard, in the index's order."""
    for path in files:
        with (open_file or (lambda p: open(p, "rb")))(path) as raw:
            yield from pq.ParquetFile(raw).iter_batches(batch_size=8192)


def vectors(batch: pa.RecordBatch, dim: int) -> np.ndarray:
    """A batch's embeddings as a ``(rows, dim)`` float32 array."""
    data = b"".join(batch.column("embedding").to_pylist())
    return np.frombuffer(data, dtype="<f4").reshape(-1, dim)


def ivfpq_shape(spec: FaissSpec, count: int, dim: int) -> tuple[int, int]:
    """``(nlist, m)``: the given ones, else about 4 sqrt(N) lists (≥ 39 training points each) and dim / 4
    sub-quantizers (4 dimensions per byte)."""
    nlist = spec.nlist or max(1, min(int(4 * math.sqrt(count)), count // 39))
    m = spec.m or max(1, dim // 4)
    if dim % m:
        raise UserError(f"--m {m} must divide the embedding dimension {dim}")
    if count < max(nlist, 2**spec.nbits):
        raise UserError(
            f"ivfpq trains {nlist} lists and {2**spec.nbits} codes per sub-quantizer: it needs at least "
            f"{max(nlist, 2**spec.nbits)} passages, the corpus has {count} (lower --nlist/--nbits, or flat)"
        )
    return nlist, m


def write_faiss_index(
    batches: Callable[[], Iterator[pa.RecordBatch]], count: int, dim: int, spec: FaissSpec, path: Path
) -> dict[str, Any]:
    """Build the FAISS index ``spec`` describes from ``batches()`` (called once per pass) into ``path``;
    returns its settings for the manifest."""
    faiss = engines.faiss()
    metric = faiss.METRIC_INNER_PRODUCT
    settings: dict[str, Any] = {"type": spec.type, "metric": "inner_product"}
    if spec.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, metric)
        index.hnsw.efConstruction = spec.ef_construction
        settings.update(hnsw_m=spec.hnsw_m, ef_construction=spec.ef_construction, ef_search=spec.ef_search)
    else:
        nlist, m = ivfpq_shape(spec, count, dim)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, m, spec.nbits, metric)
        index.cp.seed = spec.seed
        index.pq.cp.seed = spec.seed
        index.train(_training_sample(batches, count, dim, spec))
        settings.update(nlist=nlist, m=m, nbits=spec.nbits, nprobe=spec.nprobe, train_size=spec.train_size)
        settings.update(seed=spec.seed, refine=spec.refine)
    added = 0
    with open(path.parent / VECTORS_FILE, "wb") if settings.get("refine") else nullcontext() as raw:
        for batch in batches():
            block = np.ascontiguousarray(vectors(batch, dim))
            index.add(block)
            if raw is not None:
                raw.write(block.astype("<f4").tobytes())
            added += len(block)
    if added != count:
        raise RuntimeError(f"{added} vectors added for {count} passages")
    faiss.write_index(index, str(path))
    settings["bytes"] = path.stat().st_size
    return settings


def _training_sample(
    batches: Callable[[], Iterator[pa.RecordBatch]], count: int, dim: int, spec: FaissSpec
) -> np.ndarray:
    """A seeded sample of at most ``train_size`` vectors, read in one streaming pass."""
    chosen = sorted(random.Random(spec.seed).sample(range(count), min(spec.train_size, count)))
    sample = np.empty((len(chosen), dim), dtype=np.float32)
    taken, start = 0, 0
    for batch in batches():
        block = vectors(batch, dim)
        end = start + len(block)
        picks: list[int] = []
        while taken + len(picks) < len(chosen) and chosen[taken + len(picks)] < end:
            picks.append(chosen[taken + len(picks)] - start)
        sample[taken : taken + len(picks)] = block[picks]
        taken += len(picks)
        start = end
    return sample


def write_docs(batches: Iterator[pa.RecordBatch], path: Path) -> tuple[int, int]:
    """``docs.arrow`` (id, title, text in FAISS order); returns ``(rows, distinct ids)``."""
    rows, ids = 0, set()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, DOCS_SCHEMA) as writer:
        for batch in batches:
            docs = pa.record_batch([batch.column(n) for n in DOCS_SCHEMA.names], schema=DOCS_SCHEMA)
            writer.write_batch(docs)
            rows += docs.num_rows
            ids.update(docs.column("id").to_pylist())
    return rows, len(ids)


def read_dense_manifest(index_dir: str | Path) -> dict[str, Any]:
    path = Path(index_dir) / MANIFEST_NAME
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if manifest.get("kind") != "dense":
        raise UserError(f"{index_dir} is not a dense index: build one with `ramp index build --kind dense`")
    return manifest


def index_kind(index_dir: str | Path) -> str:
    """``dense`` for a dense index directory, else ``lucene`` (its manifest has no kind)."""
    path = Path(index_dir) / MANIFEST_NAME
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind", "lucene")
    except (OSError, ValueError, AttributeError):
        return "lucene"
    return str(kind)


class DenseRetriever:
    """Top-k by inner product over a dense index; queries encoded as the index's manifest says.

    Exclusions over-fetch (``k`` + the query's exclusions, one FAISS call per fetch size) and filter, as
    for BM25. A batch of queries is encoded as one batch. ``nprobe``, ``refine`` (ivfpq) and ``ef_search``
    (hnsw) default to the manifest's; ``threads`` sets FAISS's OpenMP threads."""

    def __init__(
        self,
        index_dir: str | Path,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine: int | None = None,
        threads: int | None = None,
        device: str = "cpu",
        query_batch_size: int = 64,
        check_weights: bool = True,
    ) -> None:
        faiss = engines.faiss()
        self.index_dir = Path(index_dir)
        self.manifest = read_dense_manifest(self.index_dir)
        spec = EncoderSpec.from_json(self.manifest["encoder"])
        if check_weights and weights_digest(spec.name) != self.manifest["encoder_weights_sha256"]:
            raise EncoderError(
                f"encoder {spec.name!r} here has other weights than the ones {self.index_dir} was built with:"
                " queries would not match the passages (rebuild the index or install the same model)"
            )
        self.encoder = Encoder(spec, device=device, batch_size=query_batch_size)
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        self._index = faiss.read_index(str(self.index_dir / FAISS_FILE))
        settings = self.manifest["faiss"]
        self.refine = int(settings.get("refine", 0) if refine is None else refine)
        if self.refine and not settings.get("refine"):
            raise UserError(f"{self.index_dir} keeps no exact vectors to refine with (built without refine)")
        self._vectors: np.ndarray | None = None
        if settings["type"] == "ivfpq":
            self._index.nprobe = nprobe or settings["nprobe"]
        if self.refine:
            shape = (int(self._index.ntotal), int(self.manifest["dim"]))
            self._vectors = np.memmap(self.index_dir / VECTORS_FILE, dtype="<f4", mode="r", shape=shape)
        elif settings["type"] == "hnsw":
            self._index.hnsw.efSearch = ef_search or settings["ef_search"]
        self._docs = pa.ipc.open_file(pa.memory_map(str(self.index_dir / DOCS_FILE))).read_all()
        self.num_docs = self._docs.num_rows
        if self.num_docs != self._index.ntotal:
            raise UserError(f"{self.index_dir}: {self._index.ntotal} vectors for {self.num_docs} passages")

    def search(
        self,
        queries: Sequence[str],
        k: int = 5,
        exclude_doc_ids: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query, best first (ties by doc id); an empty query gets no hits."""
        check_search_args(queries, k, exclude_doc_ids)
        if self._index is None:
            raise RuntimeError(f"the retriever over {self.index_dir} is closed")
        excludes = (
            [frozenset(e) for e in exclude_doc_ids] if exclude_doc_ids else [frozenset()] * len(queries)
        )
        live = [i for i, q in enumerate(queries) if q.strip()]
        results: list[list[Hit]] = [[] for _ in queries]
        if not live:
            return results
        embedded = self.encoder.encode_queries([queries[i].strip() for i in live])
        groups: dict[int, list[int]] = {}
        for row, i in enumerate(live):
            groups.setdefault(min(k + len(excludes[i]), self.num_docs), []).append(row)
        for fetch_k, rows in sorted(groups.items()):
            scores, positions = self._search(np.ascontiguousarray(embedded[rows]), fetch_k)
            wanted = sorted({int(p) for p in positions.ravel() if p >= 0})
            docs = dict(zip(wanted, self._docs.take(pa.array(wanted, pa.int64())).to_pylist(), strict=True))
            for row, row_scores, row_positions in zip(rows, scores, positions, strict=True):
                i = live[row]
                hits = [
                    Hit(docs[p]["id"], docs[p]["title"], docs[p]["text"], float(s))
                    for s, p in zip(row_scores, row_positions, strict=True)
                    if p >= 0 and docs[p]["id"] not in excludes[i]
                ]
                hits.sort(key=lambda h: (-h.score, h.doc_id))
                results[i] = hits[:k]
        return results

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top ``k``; with ``refine``, ``refine × k`` candidates re-scored with the exact vectors."""
        if self._vectors is None:
            scores, positions = self._index.search(queries, k)
            return scores, positions
        _, candidates = self._index.search(queries, min(k * self.refine, self.num_docs))
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates, strict=True)):
            found = np.unique(found[found >= 0])  # sorted: the memory map is read in file order
            exact = self._vectors[found] @ query
            best = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(best)], positions[row, : len(best)] = exact[best], found[best]
        return scores, positions

    def close(self) -> None:
        self._index = None
        self._vectors = None

    def __enter__(self) -> DenseRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
