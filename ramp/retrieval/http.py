"""``HttpRetriever``: the :class:`~ramp.retrieval.base.Retriever` interface over a retrieval server.

Talks to ``ramp serve-retriever`` (or any Search-R1-style server that returns scores). Connection
errors, timeouts and 5xx answers are retried with exponential backoff; a 4xx is the caller's fault and
raises ``ValueError`` with the server's reason at once. Large batches are split into requests of at
most ``batch_size`` queries.

Exclusions are enforced on the client too: a plain Search-R1 server ignores ``exclude_doc_ids``, so each
request over-fetches ``k + len(exclusions)`` hits, and excluded ids are dropped before the top ``k`` are
returned. No excluded id ever leaves this class, whatever the server does. The over-fetch never asks for
more than ``max_fetch`` hits nor more than the server allows: the limit is read from ``max_topk`` in
``GET /health`` (``ramp serve-retriever`` reports it) before the first over-fetch, or learnt from a 4xx
refusal of an over-fetching request that names ``topk`` (``topk must be in [1, N]``; without a number, the
client falls back to plain ``k``), after which the request is sent again once at the cap. So a query whose
exclusions outnumber the spare hits may get fewer than ``k`` hits, never an excluded one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Sequence
from typing import Any

import httpx

from ramp.retrieval.base import Hit, check_search_args
from ramp.retrieval.lucene import split_contents


class RetrievalServerError(RuntimeError):
    """The server could not be reached or kept failing after all retries."""


class RequestRefused(ValueError):
    """The server answered 4xx: the request is at fault (``detail`` is the server's reason)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"retrieval server refused the request ({status}): {detail}")
        self.status, self.detail = status, detail


_TOPK_LIMIT = re.compile(r"topk must be in \[1, (\d+)\]")  # ramp.retrieval.server's refusal


class HttpRetriever:
    def __init__(
        self,
        url: str,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        batch_size: int = 256,
        max_fetch: int = 100,
    ) -> None:
        if retries < 0 or backoff_s < 0 or batch_size < 1 or max_fetch < 1:
            raise ValueError("retries and backoff_s must be >= 0, batch_size and max_fetch >= 1")
        self.max_fetch = max_fetch
        self._server_max_topk: int | None = None  # the server's topk limit, once known
        self._probed = False  # /health asked for the limit
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.batch_size = batch_size
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s)

    def search(
        self,
        queries: Sequence[str],
        k: int = 5,
        exclude_doc_ids: Sequence[Collection[str]] | None = None,
    ) -> list[list[Hit]]:
        """Top ``k`` hits per query without the query's excluded ids (fewer when the capped over-fetch
        cannot cover all of them; see the module docstring)."""
        check_search_args(queries, k, exclude_doc_ids)
        results: list[list[Hit]] = []
        for start in range(0, len(queries), self.batch_size):
            batch = list(queries[start : start + self.batch_size])
            excluded = (
                [set(ids) for ids in exclude_doc_ids[start : start + len(batch)]] if exclude_doc_ids else []
            )
            most = max((len(ids) for ids in excluded), default=0)
            payload: dict[str, Any] = {
                "queries": batch,
                "topk": max(k, min(k + most, self._fetch_limit())) if most else k,
                "return_scores": True,
            }
            if excluded:
                payload["exclude_doc_ids"] = [sorted(ids) for ids in excluded]
            answered = self._retrieve(payload, k)["result"]
            if len(answered) != len(batch):
                raise RetrievalServerError(f"{self.url}: {len(answered)} results for {len(batch)} queries")
            for i, hits in enumerate(answered):
                hidden = excluded[i] if excluded else set()
                results.append([hit for hit in map(_to_hit, hits) if hit.doc_id not in hidden][:k])
        return results

    def health(self) -> dict[str, Any]:
        response = self._client.get("/health")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def _fetch_limit(self) -> int:
        """The most hits one request may ask for: ``max_fetch``, capped by the server's limit once known."""
        if not self._probed:
            self._probed = True
            try:
                response = self._client.get("/health")
                limit = response.json().get("max_topk") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError, AttributeError):  # a plain Search-R1 server has no /health
                limit = None
            if isinstance(limit, int) and limit >= 1:
                self._server_max_topk = limit
        return min(self.max_fetch, self._server_max_topk or self.max_fetch)

    def _retrieve(self, payload: dict[str, Any], k: int) -> dict[str, Any]:
        """POST /retrieve; an over-fetch the server refuses is capped at its limit and sent again once."""
        try:
            return self._post("/retrieve", payload)
        except RequestRefused as err:
            stated = _TOPK_LIMIT.search(err.detail)
            if payload["topk"] <= k or not (stated or "topk" in err.detail.lower()):
                raise  # not about the over-fetch
            self._server_max_topk = max(1, int(stated.group(1))) if stated else k
            capped = max(k, min(payload["topk"], self._fetch_limit()))
            if capped == payload["topk"]:
                raise
            return self._post("/retrieve", {**payload, "topk": capped})

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                response = self._client.post(path, json=payload)
            except httpx.TransportError as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 400:
                    body: dict[str, Any] = response.json()
                    return body
                if response.status_code < 500:
                    raise RequestRefused(response.status_code, _detail(response))
                problem = f"HTTP {response.status_code}: {_detail(response)}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise RetrievalServerError(f"{self.url}{path} failed after {self.retries + 1} attempts: {problem}")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_hit(item: dict[str, Any]) -> Hit:
    doc = item["document"]
    if "title" in doc and "text" in doc:
        title, text = doc["title"], doc["text"]
    else:
        title, text = split_contents(doc["contents"])
    return Hit(doc_id=str(doc["id"]), title=title, text=text, score=float(item["score"]))


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))[:500]
    except ValueError:
        return response.text[:500]
