"""Hybrid retrieval: BM25 and dense hits fused by reciprocal rank (RRF, Cormack et al. 2009).

A document's fused score is ``Σ 1 / (rrf_k + rank)`` over the lists it appears in (rank from 1). Each
retriever is asked for ``max(k, depth)`` hits *with the query's exclusions*, so an excluded id can never
enter the fusion; both indexes must hold the same corpus (their manifests' fingerprints are compared).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ramp.retrieval.base import Hit, Retriever, check_search_args


def reciprocal_rank_fusion(lists: Sequence[Sequence[Hit]], rrf_k: float, k: int) -> list[Hit]:
    """The top ``k`` of ``lists`` by RRF score (ties by doc id); a hit keeps its first list's text."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for hits in lists:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.doc_id] = scores.get(hit.doc_id, 0.0) + 1.0 / (rrf_k + rank)
            first.setdefault(hit.doc_id, hit)
    ranked = sorted(scores, key=lambda doc_id: (-scores[doc_id], doc_id))[:k]
    return [Hit(d, first[d].title, first[d].text, scores[d]) for d in ranked]


class HybridRetriever:
    """BM25 + dense by reciprocal rank; owns (and closes) both retrievers."""

    def __init__(self, sparse: Retriever, dense: Retriever, rrf_k: float = 60.0, depth: int = 20) -> None:
        if rrf_k < 0 or depth < 1:
            raise ValueError(f"rrf_k must be >= 0 and depth >= 1, got {rrf_k} and {depth}")
        self.sparse, self.dense, self.rrf_k, self.depth = sparse, dense, rrf_k, depth

    def search(
        self,
        queries: Sequence[str],
        k: int = 5,
        exclude_doc_ids: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        check_search_args(queries, k, exclude_doc_ids)
        fetch = max(k, self.depth)
        sparse = self.sparse.search(queries, fetch, exclude_doc_ids)
        dense = self.dense.search(queries, fetch, exclude_doc_ids)
        return [reciprocal_rank_fusion([s, d], self.rrf_k, k) for s, d in zip(sparse, dense, strict=True)]

    def close(self) -> None:
        self.sparse.close()
        self.dense.close()

    def __enter__(self) -> HybridRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
