"""The retrieval server and HTTP client, over real HTTP on 127.0.0.1 against the real index."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from ramp.retrieval.config import RetrieverConfig, ServerConfig, build_retriever
from ramp.retrieval.http import HttpRetriever, RetrievalServerError
from ramp.retrieval.lucene import LuceneRetriever
from ramp.retrieval.server import create_app

QUERIES = [
    "Evan Morris lobbyist Genentech",
    "Twycross Zoo chimpanzees",
    "Horatio Hale Algonkin vocabulary",
    "treaty signed Muscat Portuguese",
    "",
]
LIMITS = ServerConfig(max_topk=20, max_queries_per_request=8, max_query_chars=500, max_body_bytes=20_000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become healthy")


class ServerThread:
    """uvicorn in a background thread on a free port, stopped on exit."""

    def __init__(self, app: FastAPI) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        _wait_healthy(self.url)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_url(lucene_retriever: LuceneRetriever) -> Iterator[str]:
    with ServerThread(create_app(lucene_retriever, LIMITS, {"documents": lucene_retriever.num_docs})) as url:
        yield url


def test_health(server_url: str) -> None:
    assert httpx.get(f"{server_url}/health").json() == {"status": "ok", "max_topk": 20, "documents": 1000}


def _excluding_top(retriever: LuceneRetriever, n: int) -> list[list[str]]:
    """Per query, the ids of its top ``n`` hits: a whole article's worth of exclusions."""
    return [[h.doc_id for h in hits] for hits in retriever.search(QUERIES, k=n)]


def test_over_fetch_stays_within_the_servers_max_topk(
    server_url: str, lucene_retriever: LuceneRetriever
) -> None:
    excludes = _excluding_top(lucene_retriever, 18)  # k + 18 = 23 > the server's max_topk of 20
    expected = lucene_retriever.search(QUERIES, k=5, exclude_doc_ids=excludes)
    with HttpRetriever(server_url, retries=0) as client:  # before the fix: 422, topk must be in [1, 20]
        hits = client.search(QUERIES, k=5, exclude_doc_ids=excludes)
        assert client._fetch_limit() == 20  # read from /health
    assert hits == expected and max(map(len, hits)) == 5
    assert all(not {h.doc_id for h in hs} & set(ids) for hs, ids in zip(hits, excludes, strict=True))


def test_over_fetch_learns_the_limit_from_a_4xx(lucene_retriever: LuceneRetriever) -> None:
    """A server that does not report its limit (no max_topk in /health) and ignores exclusions."""
    real = create_app(lucene_retriever, LIMITS)
    bare = FastAPI()
    topks: list[int] = []

    @bare.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @bare.post("/retrieve")
    async def retrieve(body: dict[str, Any]) -> Any:

        topks.append(body["topk"])
        body.pop("exclude_doc_ids", None)  # a plain Search-R1 server: the client must filter
        transport = httpx.ASGITransport(app=real)
        async with httpx.AsyncClient(transport=transport, base_url="http://real") as inner:
            answer = await inner.post("/retrieve", json=body)
        return JSONResponse(answer.json(), status_code=answer.status_code)

    excludes = _excluding_top(lucene_retriever, 30)
    unfiltered = lucene_retriever.search(QUERIES, k=20)
    with ServerThread(bare) as url, HttpRetriever(url, retries=0) as client:
        hits = client.search(QUERIES, k=5, exclude_doc_ids=excludes)
        # k + the most exclusions, refused with "topk must be in [1, 20]", then capped and sent again once
        assert topks == [5 + max(map(len, excludes)), 20] and topks[0] > 20
        again = client.search(QUERIES, k=5, exclude_doc_ids=excludes)
        assert topks[2:] == [20] and again == hits
        with pytest.raises(ValueError, match=r"\(422\).*topk"):  # k itself over the limit: the caller's fault
            client.search(["x"], k=21)
    for hs, ids, everything in zip(hits, excludes, unfiltered, strict=True):
        assert not {h.doc_id for h in hs} & set(ids)  # maybe fewer than k hits, never an excluded one
        assert hs == [h for h in everything if h.doc_id not in set(ids)][:5]


def test_client_agrees_with_in_process_search(server_url: str, lucene_retriever: LuceneRetriever) -> None:
    excludes = [["0"], [], ["747", "748"], [], []]
    expected = lucene_retriever.search(QUERIES, k=5, exclude_doc_ids=excludes)
    client = build_retriever(RetrieverConfig(kind="http", url=server_url))
    try:
        assert client.search(QUERIES, k=5, exclude_doc_ids=excludes) == expected
        assert client.search(QUERIES, k=5) == lucene_retriever.search(QUERIES, k=5)
    finally:
        client.close()
    assert expected[0][0].doc_id != "0" and expected[-1] == []


def test_client_splits_large_batches(server_url: str, lucene_retriever: LuceneRetriever) -> None:
    queries = QUERIES * 4  # 20 queries, over the server's limit of 8 per request
    with HttpRetriever(server_url, batch_size=8) as client:
        assert client.search(queries, k=3) == lucene_retriever.search(queries, k=3)


def test_search_r1_response_shapes(server_url: str, lucene_retriever: LuceneRetriever) -> None:
    body = {"queries": QUERIES[:2], "topk": 3, "return_scores": True}
    scored = httpx.post(f"{server_url}/retrieve", json=body).json()["result"]
    expected = lucene_retriever.search(QUERIES[:2], k=3)
    assert [[item["score"] for item in hits] for hits in scored] == [[h.score for h in hs] for hs in expected]
    first = scored[0][0]["document"]
    assert set(first) == {"id", "title", "text", "contents"}
    assert first["contents"] == f'"{first["title"]}"\n{first["text"]}'

    plain = httpx.post(f"{server_url}/retrieve", json={**body, "return_scores": False}).json()["result"]
    assert plain == [[item["document"] for item in hits] for hits in scored]
    default_topk = httpx.post(f"{server_url}/retrieve", json={"queries": QUERIES[:1]}).json()["result"]
    assert len(default_topk[0]) == LIMITS.default_topk


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"queries": ["x"], "topk": 0}, 422, "topk"),
        ({"queries": ["x"], "topk": 21}, 422, "topk"),
        ({"queries": ["x"] * 9}, 413, "limit of 8"),
        ({"queries": ["x" * 501]}, 413, "characters"),
        ({"queries": "just a string"}, 422, "queries"),
        ({"queries": [1, 2]}, 422, "queries"),
        ({"topk": 3}, 422, "queries"),
        ({"queries": ["x"], "topk": "3"}, 422, "topk"),
        ({"queries": ["x"], "unknown": 1}, 422, "unknown"),
        ({"queries": ["x", "y"], "exclude_doc_ids": [["0"]]}, 422, "exclude_doc_ids"),
        ({"queries": ["x"], "exclude_doc_ids": [[str(i) for i in range(1001)]]}, 413, "excludes 1001"),
    ],
)
def test_bad_requests_get_4xx(server_url: str, body: dict[str, Any], status: int, message: str) -> None:
    response = httpx.post(f"{server_url}/retrieve", json=body)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_body_limits_and_malformed_json(server_url: str) -> None:
    big = httpx.post(f"{server_url}/retrieve", content=b'{"queries": ["' + b"x" * 30_000 + b'"]}')
    assert big.status_code == 413
    chunked = httpx.post(f"{server_url}/retrieve", content=iter([b'{"queries": ["', b"x" * 30_000, b'"]}']))
    assert chunked.status_code == 413
    broken = httpx.post(f"{server_url}/retrieve", content=b'{"queries": [')
    assert broken.status_code == 422 and "invalid request" in broken.json()["detail"]


def test_client_raises_value_error_on_4xx(server_url: str) -> None:
    with HttpRetriever(server_url) as client, pytest.raises(ValueError, match=r"\(422\).*topk"):
        client.search(["x"], k=50)


def test_32_concurrent_clients(server_url: str, lucene_retriever: LuceneRetriever) -> None:
    """Concurrent requests (merged into shared searches by the server) each get exactly their own answer."""
    excludes = [["0"], [], ["747"], [], []]
    expected = {
        (k, excluded): lucene_retriever.search(QUERIES, k=k, exclude_doc_ids=excludes if excluded else None)
        for k in (2, 5)
        for excluded in (False, True)
    }

    def client_session(client_id: int) -> int:
        mismatches = 0
        with HttpRetriever(server_url, retries=0) as client:
            for round_ in range(6):
                k, excluded = (2, 5)[(client_id + round_) % 2], bool(client_id % 3 == round_ % 3)
                hits = client.search(QUERIES, k=k, exclude_doc_ids=excludes if excluded else None)
                mismatches += hits != expected[k, excluded]
        return mismatches

    with ThreadPoolExecutor(max_workers=32) as pool:
        assert sum(pool.map(client_session, range(32))) == 0


def test_client_retries_5xx_then_succeeds(lucene_retriever: LuceneRetriever) -> None:
    real = create_app(lucene_retriever, LIMITS)
    flaky = FastAPI()
    calls = {"n": 0}

    @flaky.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @flaky.post("/retrieve")
    async def retrieve(body: dict[str, Any]) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:
            return JSONResponse({"detail": "warming up"}, status_code=503)
        transport = httpx.ASGITransport(app=real)
        async with httpx.AsyncClient(transport=transport, base_url="http://real") as inner:
            return (await inner.post("/retrieve", json=body)).json()

    with ServerThread(flaky) as url:
        with HttpRetriever(url, retries=3, backoff_s=0.01) as client:
            assert client.search(QUERIES[:2], k=2) == lucene_retriever.search(QUERIES[:2], k=2)
        assert calls["n"] == 3
        calls["n"] = -10  # now it fails more often than the client retries
        with (
            HttpRetriever(url, retries=1, backoff_s=0.01) as client,
            pytest.raises(RetrievalServerError, match="503"),
        ):
            client.search(QUERIES[:1], k=2)


def test_client_gives_up_on_connection_errors() -> None:
    started = time.monotonic()
    url = f"http://127.0.0.1:{_free_port()}"
    with (
        HttpRetriever(url, retries=2, backoff_s=0.05) as client,
        pytest.raises(RetrievalServerError, match="3 att"),
    ):
        client.search(["x"], k=1)
    assert time.monotonic() - started >= 0.15  # backed off 0.05 + 0.1 s


def test_serve_retriever_command(wiki18_index: Path, lucene_retriever: LuceneRetriever) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "ramp", "serve-retriever", "--index", str(wiki18_index), "--port", str(port)]
    cmd += ["--set", "server.max_topk=8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url)
        assert httpx.get(f"{url}/health").json()["documents"] == 1000
        with HttpRetriever(url) as client:
            assert client.search(QUERIES, k=3) == lucene_retriever.search(QUERIES, k=3)
            excludes = _excluding_top(lucene_retriever, 10)  # over-fetch 13 > max_topk 8: capped at 8
            hits = client.search(QUERIES, k=3, exclude_doc_ids=excludes)
            assert hits == lucene_retriever.search(QUERIES, k=3, exclude_doc_ids=excludes)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
