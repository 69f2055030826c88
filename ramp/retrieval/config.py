"""Retrieval configuration (``configs/retrieval.yaml``) and the retriever factory.

Stages pick a local BM25 index (``kind: lucene`` + ``index``), a dense index (``kind: dense`` + ``index``:
an encoder + FAISS, ``ramp.retrieval.dense``), both fused by reciprocal rank (``kind: hybrid`` + ``index``
+ ``dense_index``), a shared server (``kind: http`` + ``url``) or a simulated search engine
(``kind: simulated`` + ``simulator``: a model writes the documents) by config alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ramp.config import ConfigError, StrictModel
from ramp.errors import UserError
from ramp.retrieval.base import Retriever
from ramp.retrieval.dense import FAISS_FILE, MANIFEST_NAME, index_kind
from ramp.retrieval.env import SearchConfig
from ramp.retrieval.query import DEFAULT_MAX_TERMS, LUCENE_MAX_CLAUSES
from ramp.retrieval.simulated import SimulatorConfig, check_simulator


class RetrieverConfig(StrictModel):
    kind: Literal["lucene", "dense", "hybrid", "http", "simulated"] = "lucene"
    # kind: lucene (and hybrid's BM25 side); kind: dense: the dense index directory
    index: str | None = None
    k1: float = Field(default=0.9, gt=0)
    b: float = Field(default=0.4, ge=0, le=1)
    threads: int = Field(default=2, ge=1)
    max_query_terms: int = Field(default=DEFAULT_MAX_TERMS, ge=1, le=LUCENE_MAX_CLAUSES)
    # kind: dense (and hybrid's dense side)
    nprobe: int | None = Field(default=None, ge=1)  # ivfpq lists searched (default: the index manifest's)
    ef_search: int | None = Field(default=None, ge=1)  # hnsw search breadth (default: the manifest's)
    refine: int | None = Field(default=None, ge=0)  # ivfpq exact re-scoring factor (default: the manifest's)
    device: str = "cpu"  # where queries are encoded (cpu, cuda)
    query_batch_size: int = Field(default=64, ge=1)
    # kind: hybrid
    dense_index: str | None = None
    rrf_k: float = Field(default=60.0, ge=0)  # reciprocal rank fusion: sum of 1 / (rrf_k + rank)
    fusion_depth: int = Field(default=20, ge=1)  # hits taken from each retriever (at least k)
    # kind: http
    url: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    # kind: simulated (ZeroSearch)
    simulator: SimulatorConfig = SimulatorConfig()

    @model_validator(mode="after")
    def _location_given(self) -> RetrieverConfig:
        if self.kind in ("lucene", "dense", "hybrid") and not self.index:
            raise ValueError(f"kind {self.kind!r} needs 'index' (an index directory)")
        if self.kind == "hybrid" and not self.dense_index:
            raise ValueError("kind 'hybrid' needs 'dense_index' (a dense index directory) beside 'index'")
        if self.kind == "http" and not self.url:
            raise ValueError("kind 'http' needs 'url' (e.g. http://127.0.0.1:8000)")
        return self


class ServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    default_topk: int = Field(default=3, ge=1)
    max_topk: int = Field(default=100, ge=1)
    max_queries_per_request: int = Field(default=512, ge=1)
    max_query_chars: int = Field(default=4096, ge=1)
    max_exclude_ids_per_query: int = Field(default=1000, ge=0)
    max_body_bytes: int = Field(default=4_000_000, ge=1024)
    max_batch_queries: int = Field(default=1024, ge=1)  # concurrent requests merged into one search


class AnswerabilityConfig(StrictModel):
    """``ramp data answerability`` (see ``ramp.data.answerability``): ``keep: redraw`` checks every eligible
    span, then draws the masks among the answerable ones; the other policies check the drawn masks.

    It searches through :class:`~ramp.retrieval.env.SearchEnv` with its own ``search`` section: a span is
    answerable if one of ``search.top_k`` hits (5, not the agent's 3; full texts) holds it."""

    search: SearchConfig = SearchConfig(top_k=5, max_chars_per_doc=None)
    keep: Literal["redraw", "all_answerable", "any_answerable", "record_only"] = "redraw"
    # Content words the hit sentence holding the span must share with the mask's sentence (agreeing context).
    min_context_words: int = Field(default=2, ge=0)
    batch_size: int = Field(default=64, ge=1)


class RetrievalSettings(StrictModel):
    """The whole ``configs/retrieval.yaml``."""

    retriever: RetrieverConfig
    server: ServerConfig = ServerConfig()
    answerability: AnswerabilityConfig = AnswerabilityConfig()


def build_retriever(config: RetrieverConfig) -> Retriever:
    """The retriever ``config`` describes; engines are imported only here."""
    if config.kind == "lucene":
        from ramp.retrieval.lucene import LuceneRetriever

        assert config.index is not None  # checked by the model
        return LuceneRetriever(
            config.index,
            k1=config.k1,
            b=config.b,
            threads=config.threads,
            max_query_terms=config.max_query_terms,
        )
    if config.kind == "dense":
        assert config.index is not None
        return _dense(config, config.index)
    if config.kind == "hybrid":
        from ramp.retrieval.hybrid import HybridRetriever

        assert config.dense_index is not None
        _check_same_corpus(config)
        sparse = build_retriever(config.model_copy(update={"kind": "lucene"}))
        try:
            dense = _dense(config, config.dense_index)
        except BaseException:
            sparse.close()
            raise
        return HybridRetriever(sparse, dense, rrf_k=config.rrf_k, depth=config.fusion_depth)
    if config.kind == "simulated":
        from ramp.retrieval.simulated import SimulatedRetriever

        return SimulatedRetriever(config.simulator)
    from ramp.retrieval.http import HttpRetriever

    assert config.url is not None
    return HttpRetriever(
        config.url, timeout_s=config.timeout_s, retries=config.retries, backoff_s=config.backoff_s
    )


def _dense(config: RetrieverConfig, index: str) -> Retriever:
    from ramp.retrieval.dense import DenseRetriever

    return DenseRetriever(
        index,
        nprobe=config.nprobe,
        ef_search=config.ef_search,
        refine=config.refine,
        threads=config.threads,
        device=config.device,
        query_batch_size=config.query_batch_size,
    )


def _check_same_corpus(config: RetrieverConfig) -> None:
    """``UserError`` unless hybrid's two indexes hold the same corpus (their manifests' fingerprints)."""
    fingerprints = []
    for index in (config.index, config.dense_index):
        try:
            manifest = json.loads((Path(index or "") / MANIFEST_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = {}
        fingerprints.append(manifest.get("corpus_fingerprint"))
    if None in fingerprints or fingerprints[0] != fingerprints[1]:
        raise UserError(
            f"hybrid needs a BM25 index and a dense index of the same corpus: {config.index} and "
            f"{config.dense_index} have corpus fingerprints {fingerprints[0]} and {fingerprints[1]}"
        )


def retriever_location(index: str | Path | None, url: str | None) -> dict[str, Any]:
    """The retriever fields that a command's ``--index`` or ``--retriever-url`` sets (empty: neither).

    ``--index`` of a dense index means ``kind: dense``; hybrid is ``--index BM25 --set retriever.kind=hybrid
    --set retriever.dense_index=DENSE``. Set them before validation (``load_config(..., values=...)``):
    ``kind: http`` is only valid with its ``url``, so a kind switched by an override and a url added
    afterwards would never validate."""
    if index is not None and url is not None:
        raise ConfigError("give exactly one of --index and --retriever-url, not both")
    if index is not None:
        return {"kind": index_kind(index), "index": str(index)}
    if url is not None:
        return {"kind": "http", "url": url}
    return {}


def check_retriever(config: RetrieverConfig, health_timeout_s: float = 5.0) -> None:
    """``UserError`` unless the retriever is there: a Lucene index directory, or a server that answers.

    Run before a job starts, so a wrong path or URL is one clear line, not a worker's traceback."""
    if config.kind in ("lucene", "hybrid"):
        index = Path(config.index or "")
        if not any(index.glob("segments_*")):
            problem = "does not exist" if not index.exists() else "holds no Lucene index"
            raise UserError(
                f"index {index} {problem}: build it with `ramp index build --corpus CORPUS --index {index}`"
                " or give the right --index"
            )
    if config.kind in ("dense", "hybrid"):
        dense = Path((config.dense_index if config.kind == "hybrid" else config.index) or "")
        if index_kind(dense) != "dense" or not (dense / FAISS_FILE).is_file():
            problem = "does not exist" if not dense.exists() else "holds no dense index"
            raise UserError(
                f"dense index {dense} {problem}: build it with `ramp index build --kind dense "
                f"--encoder minilm --corpus CORPUS --index {dense}`"
            )
    if config.kind == "simulated":
        simulator_problem = check_simulator(config.simulator)
        if simulator_problem:
            raise UserError(simulator_problem)
    if config.kind != "http":
        return
    import httpx

    try:  # any HTTP answer means a server is listening (a plain Search-R1 server has no /health)
        httpx.get(f"{(config.url or '').rstrip('/')}/health", timeout=health_timeout_s)
    except (httpx.HTTPError, httpx.InvalidURL) as err:
        raise UserError(
            f"retriever at {config.url} is not reachable ({type(err).__name__}): start one with "
            "`ramp serve-retriever --index IDX --port PORT` or give the right --retriever-url"
        ) from None
