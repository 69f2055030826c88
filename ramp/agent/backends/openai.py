"""Any OpenAI-compatible endpoint (``vllm serve``, hosted APIs) over HTTP with httpx.

Chat requests (``messages``) go to ``/chat/completions``, token/text requests (``prompt_ids``) to
``/completions`` (vLLM accepts token-id prompts). Requests run on a thread pool of ``max_concurrency``;
timeouts, connection errors, 408/409/429 and 5xx are retried with exponential backoff, other errors
raise :class:`BackendError` at once. OpenAI servers drop the stop string from the text; it is put back
(from vLLM's ``stop_reason``, or inferred from an unclosed ``<tag>`` when the server does not say) so
results read like the token-level backends'.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from ramp.agent.backends.base import GenerationRequest, GenerationResult, GenerationStop
from ramp.agent.config import OpenAIBackendConfig

_RETRY_STATUS = frozenset({408, 409, 429})


class BackendError(RuntimeError):
    """A request the endpoint rejected, or that kept failing after every retry."""


def _infer_stop(text: str, stops: Sequence[str]) -> str | None:
    """The ``</tag>`` stop that must have ended ``text``: its ``<tag>`` is open at the end."""
    for stop in stops:
        if stop.startswith("</") and text.rfind("<" + stop[2:]) > text.rfind(stop):
            return stop
    return None


class OpenAIBackend:
    """Text-level backend: ``GenerationResult.token_ids`` is empty; log-probs only if requested (they
    count the server's tokens, so a rollout needing them must use a local tokenizer identical to the
    server's; the loop checks the counts agree)."""

    eos_ids: frozenset[int] = frozenset()  # the server strips EOS: its ends read as finish_reason eos
    max_length: int | None = None

    def __init__(self, config: OpenAIBackendConfig) -> None:
        self.config = config
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(config.api_key_env, "")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=config.timeout_s,
            limits=httpx.Limits(max_connections=config.max_concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=config.max_concurrency, thread_name_prefix="openai")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return list(self._pool.map(self._generate_one, requests))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _body(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "n": 1,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if request.messages is not None:
            path = "/chat/completions"
            body["messages"] = request.messages
            if request.logprobs:
                body["logprobs"] = True
        else:
            path = "/completions"
            body["prompt"] = request.prompt_ids
            if request.logprobs:
                body["logprobs"] = 0
        body.update(self.config.extra_body)
        return path, body

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last_error = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last_error = f"{type(err).__name__}: {err}"
                continue
            if response.status_code == 200:
                data: dict[str, Any] = response.json()
                return data
            last_error = f"HTTP {response.status_code}: {response.text[:500]}"
            if response.status_code not in _RETRY_STATUS and response.status_code < 500:
                raise BackendError(f"{path} rejected the request: {last_error}")
        raise BackendError(f"{path} failed after {self.config.max_retries + 1} tries: {last_error}")

    def _generate_one(self, request: GenerationRequest) -> GenerationResult:
        path, body = self._body(request)
        data = self._post(path, body)
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{path} answered without choices: {str(data)[:500]}") from None
        if request.messages is not None:
            text = (choice.get("message") or {}).get("content") or ""
            content = (choice.get("logprobs") or {}).get("content")
            logprobs = [float(t["logprob"]) for t in content] if content else None
        else:
            text = choice.get("text") or ""
            token_logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
            logprobs = [float(x) for x in token_logprobs] if token_logprobs else None
        if request.logprobs and logprobs is None:
            raise BackendError(f"{path} returned no log-probs although they were requested")
        finish: GenerationStop = "length" if choice.get("finish_reason") == "length" else "eos"
        stop_string: str | None = None
        if choice.get("finish_reason") == "stop" and request.stop:
            if "stop_reason" in choice:  # vLLM: the matched string, or a token id / None for EOS
                reason = choice["stop_reason"]
                stop_string = reason if isinstance(reason, str) and reason in request.stop else None
            else:
                stop_string = next((s for s in request.stop if text.endswith(s)), None) or _infer_stop(
                    text, request.stop
                )
        if stop_string is not None:
            finish = "stop"
            if not text.endswith(stop_string):
                text += stop_string
        return GenerationResult(
            text=text, token_ids=[], logprobs=logprobs, finish_reason=finish, stop_string=stop_string
        )
