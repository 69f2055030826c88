"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for tests (shared by the agent and CoT tests), a
:class:`json_server.JsonServer`.

``responder(path, body)`` returns the full text the "model" would write (or a :class:`Reply`); the server
behaves like ``vllm serve``: it cuts the text before the first of ``body["stop"]`` and reports it in
``stop_reason`` (``vllm_stop_reason=False`` mimics plain OpenAI, which does not say which stop matched),
and ``finish_reason`` ``stop``/``length``. ``requests`` records every request body (thread-safe);
``fail_next(n, status)`` answers the next ``n`` requests with an error, ``delay_s`` slows every answer,
``max_in_flight`` records the most requests answered at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from json_server import JsonServer


@dataclass
class Reply:
    text: str
    finish_reason: str = "stop"  # "length" to simulate hitting max_tokens
    logprobs: list[float] | None = None


Responder = Callable[[str, dict[str, Any]], "Reply | str"]


class ScriptedOpenAIServer:
    def __init__(self, responder: Responder, *, vllm_stop_reason: bool = True) -> None:
        self.responder = responder
        self.vllm_stop_reason = vllm_stop_reason
        self.requests: list[dict[str, Any]] = []
        self.delay_s = 0.0
        self.max_in_flight = 0
        self._in_flight = 0
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server = JsonServer(self._answer)

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._failures += [status] * n

    def __enter__(self) -> ScriptedOpenAIServer:
        self._server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__(*exc)

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append({"path": path, "body": body})
            failure = self._failures.pop(0) if self._failures else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self._in_flight -= 1
        if failure is not None:
            return failure, {"error": {"message": "injected failure", "code": failure}}
        if path not in ("/v1/chat/completions", "/v1/completions"):
            return 404, {"error": {"message": f"no route {path}"}}
        reply = self.responder(path, body)
        reply = Reply(reply) if isinstance(reply, str) else reply
        text, finish, stop_reason = reply.text, reply.finish_reason, None
        stops = [s for s in body.get("stop") or [] if s in text]
        if stops and finish == "stop":
            stop_reason = min(stops, key=text.index)
            text = text[: text.index(stop_reason)]
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if self.vllm_stop_reason:
            choice["stop_reason"] = stop_reason
        if path.endswith("/chat/completions"):
            choice["message"] = {"role": "assistant", "content": text}
            if reply.logprobs is not None:
                choice["logprobs"] = {"content": [{"token": "?", "logprob": x} for x in reply.logprobs]}
        else:
            choice["text"] = text
            if reply.logprobs is not None:
                choice["logprobs"] = {"token_logprobs": reply.logprobs}
        return 200, {
            "id": "cmpl-test",
            "object": "completion",
            "model": body.get("model"),
            "choices": [choice],
        }
