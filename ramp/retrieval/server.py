"""A Search-R1-compatible retrieval server over any :class:`~ramp.retrieval.base.Retriever`.

``POST /retrieve`` takes ``{"queries": [...], "topk": k, "return_scores": bool}`` plus RAMP's optional
``exclude_doc_ids`` (one list per query) and answers like Search-R1's ``retrieval_server.py``:
``{"result": [[{"document": doc, "score": s}, ...], ...]}`` with scores, and ``{"result": [[doc, ...], ...]}``
without. ``doc`` is ``{"id", "title", "text", "contents"}`` with ``contents`` in the wiki-18 form
``"Title"\\ntext`` that Search-R1 agents format. ``GET /health`` reports the index and ``max_topk``.

Requests over the configured limits get a 4xx with the reason. Searches run in a worker thread (the
event loop stays free), one at a time (the JVM bridge is serialised anyway), and requests that arrive
while a search runs are merged into the next one (micro-batching, up to ``max_batch_queries``), so
many concurrent agents share one multi-threaded Lucene batch search instead of queueing one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool

from ramp.retrieval.base import Hit, Retriever
from ramp.retrieval.config import ServerConfig
from ramp.retrieval.lucene import RetrievalError, search_r1_contents


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    queries: list[str]
    topk: int | None = None
    return_scores: bool = False
    exclude_doc_ids: list[list[str]] | None = None


class RequestError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def document(hit: Hit) -> dict[str, str]:
    return {"id": hit.doc_id, "title": hit.title, "text": hit.text, "contents": search_r1_contents(hit)}


@dataclass
class _Pending:
    queries: list[str]
    topk: int
    exclude_doc_ids: Sequence[Sequence[str]] | None
    done: asyncio.Future[list[list[Hit]]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher:
    """Merges the searches of concurrent requests: whoever holds the lock searches for everyone waiting."""

    def __init__(self, retriever: Retriever, max_batch_queries: int) -> None:
        self.retriever = retriever
        self.max_batch_queries = max_batch_queries
        self._waiting: list[_Pending] = []
        self._lock = asyncio.Lock()

    async def search(
        self, queries: list[str], topk: int, exclude_doc_ids: Sequence[Sequence[str]] | None
    ) -> list[list[Hit]]:
        pending = _Pending(queries, topk, exclude_doc_ids)
        self._waiting.append(pending)
        async with self._lock:
            while not pending.done.done():  # FIFO: earlier requests first, then ours
                # Shielded: a cancelled leader must not strand the requests it is searching for.
                await asyncio.shield(asyncio.ensure_future(self._run(self._take_batch())))
        return await pending.done

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        while self._waiting and (not batch or size + len(self._waiting[0].queries) <= self.max_batch_queries):
            size += len(self._waiting[0].queries)
            batch.append(self._waiting.pop(0))
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        """Search for ``batch`` and settle every future in it, with its hits or its own error."""
        try:
            results = await run_in_threadpool(_search_merged, self.retriever, batch)
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0].done, error=err)
                return
            for pending in batch:  # one request's bad query must not fail the others
                await self._run([pending])
            return
        for pending, hits in zip(batch, results, strict=True):
            _settle(pending.done, hits)


def _settle(
    future: asyncio.Future[list[list[Hit]]],
    hits: list[list[Hit]] | None = None,
    error: Exception | None = None,
) -> None:
    if future.done():  # its request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(hits or [])


def _search_merged(retriever: Retriever, batch: list[_Pending]) -> list[list[list[Hit]]]:
    """One search for every request in ``batch`` (at the largest topk), split back and cut per request."""
    queries = [q for p in batch for q in p.queries]
    excludes = [ids for p in batch for ids in (p.exclude_doc_ids or [()] * len(p.queries))]
    hits = retriever.search(queries, max(p.topk for p in batch), excludes)
    results, start = [], 0
    for pending in batch:
        results.append([h[: pending.topk] for h in hits[start : start + len(pending.queries)]])
        start += len(pending.queries)
    return results


def create_app(retriever: Retriever, config: ServerConfig, info: dict[str, Any] | None = None) -> FastAPI:
    """The FastAPI app serving ``retriever``; ``info`` (e.g. the index manifest summary) goes to /health."""
    app = FastAPI(title="RAMP retrieval server", docs_url=None, redoc_url=None)
    batcher = MicroBatcher(retriever, config.max_batch_queries)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "max_topk": config.max_topk, **(info or {})}

    @app.post("/retrieve")
    async def retrieve(request: Request) -> dict[str, Any]:
        body = await _read_body(request, config.max_body_bytes)
        try:
            req = RetrieveRequest.model_validate_json(body)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors()
            )
            raise RequestError(422, f"invalid request: {problems}") from None
        topk = _check_limits(req, config)
        try:
            results = await batcher.search(req.queries, topk, req.exclude_doc_ids)
        except ValueError as err:
            raise RequestError(400, str(err)) from None
        except RetrievalError as err:
            raise RequestError(500, str(err)) from None
        if req.return_scores:
            return {
                "result": [[{"document": document(h), "score": h.score} for h in hits] for hits in results]
            }
        return {"result": [[document(h) for h in hits] for hits in results]}

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_limits(req: RetrieveRequest, config: ServerConfig) -> int:
    """The effective topk, after checking the request against the server's limits."""
    topk = config.default_topk if req.topk is None else req.topk
    if not 1 <= topk <= config.max_topk:
        raise RequestError(422, f"topk must be in [1, {config.max_topk}], got {topk}")
    if len(req.queries) > config.max_queries_per_request:
        raise RequestError(
            413,
            f"{len(req.queries)} queries exceed the limit of {config.max_queries_per_request} per request",
        )
    for i, query in enumerate(req.queries):
        if len(query) > config.max_query_chars:
            raise RequestError(413, f"query {i} has {len(query)} characters (limit {config.max_query_chars})")
    if req.exclude_doc_ids is not None:
        if len(req.exclude_doc_ids) != len(req.queries):
            raise RequestError(
                422, f"{len(req.exclude_doc_ids)} exclude_doc_ids lists for {len(req.queries)} queries"
            )
        for i, ids in enumerate(req.exclude_doc_ids):
            if len(ids) > config.max_exclude_ids_per_query:
                raise RequestError(
                    413, f"query {i} excludes {len(ids)} ids (limit {config.max_exclude_ids_per_query})"
                )
    return topk
