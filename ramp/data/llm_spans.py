"""The optional LLM span extractor (``spans.extractor: llm``), as MaskSearch does it.

Each passage is sent to an OpenAI-compatible chat endpoint (``vllm serve``, any hosted API) asking for
its salient spans as a JSON list of ``{"text", "type"}`` (type ``entity``, ``date`` or ``number``). A
batch of passages is sent with at most ``spans.llm.max_concurrency`` requests in flight; every request
has a timeout, and connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff.
The answer is parsed leniently (the first JSON array in the text; never evaluated) and every span is
located in the passage (exact, then case-insensitive; the first occurrence not already taken). Spans the
model invents (not in the passage) or gives an unknown type are dropped and counted
(``llm_spans_invented``, ``llm_spans_bad_type``); located spans go through the same cleaning rules as
spaCy's (:func:`ramp.data.spans.salient_span`) and then the same eligibility rules.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, get_args

import httpx

from ramp.data.config import MaskType, SpanConfig
from ramp.data.salience import Span, salient_span

LABEL = "LLM"
SYSTEM_PROMPT = (
    "You extract the salient facts of a passage for a fill-in-the-blank task: named entities (people, "
    "places, organisations, works, events), dates and numbers. Answer with a JSON list only, e.g. "
    '[{"text": "Ada Lovelace", "type": "entity"}, {"text": "1843", "type": "date"}]. Copy each span '
    'exactly as it appears in the passage. "type" is one of entity, date, number.'
)
_ARRAY = re.compile(r"\[.*\]", re.DOTALL)
_TYPES = frozenset(get_args(MaskType))


def parse_spans(answer: str) -> list[tuple[str, str]] | None:
    """``(text, type)`` pairs from the model's answer, or None when it holds no JSON list of objects."""
    found = _ARRAY.search(answer)
    if found is None:
        return None
    try:
        items = json.loads(found.group())
    except json.JSONDecodeError:
        return None
    if not isinstance(items, list):
        return None
    pairs = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            pairs.append((item["text"].strip(), str(item.get("type", "")).strip().lower()))
    return pairs


def locate(
    text: str, pairs: Sequence[tuple[str, str]], config: SpanConfig
) -> tuple[list[Span], Counter[str]]:
    """The spans of ``pairs`` found in ``text`` (cleaned), and counts of those dropped, by reason."""
    taken: list[tuple[int, int]] = []
    spans: list[Span] = []
    dropped = Counter[str]()
    lowered = text.lower()
    for needle, kind in pairs:
        if kind not in _TYPES:
            dropped["llm_spans_bad_type"] += 1
            continue
        start = _first_free(text, needle, taken)
        if start is None:
            start = _first_free(lowered, needle.lower(), taken)
        if not needle or start is None:
            dropped["llm_spans_invented"] += 1
            continue
        taken.append((start, start + len(needle)))
        span = salient_span(text, start, start + len(needle), LABEL, kind, config)
        if span is None:
            dropped["llm_spans_not_salient"] += 1
        else:
            spans.append(span)
    return sorted(spans, key=lambda s: (s.start, s.end)), dropped


def _first_free(haystack: str, needle: str, taken: Sequence[tuple[int, int]]) -> int | None:
    start = haystack.find(needle) if needle else -1
    while start >= 0:
        end = start + len(needle)
        if not any(a < end and start < b for a, b in taken):
            return start
        start = haystack.find(needle, start + 1)
    return None


class SpanEndpointError(RuntimeError):
    """The endpoint gave no usable completion for a passage (after the retries)."""


class LlmSpanExtractor:
    """Passages -> salient spans from an OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(self, config: SpanConfig) -> None:
        self.config = config
        llm = config.llm
        key = os.environ.get(llm.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=llm.base_url.rstrip("/"), timeout=llm.timeout_s, headers=headers)
        self._pool = ThreadPoolExecutor(max_workers=llm.max_concurrency)
        self._counts = Counter[str]()

    def __call__(self, texts: Sequence[str]) -> list[list[Span] | str]:
        results = list(self._pool.map(self._extract, texts))
        out: list[list[Span] | str] = []
        for result in results:
            if isinstance(result, str):
                self._counts["llm_requests_failed"] += 1
                out.append(result)
            else:
                spans, dropped = result
                self._counts.update(dropped)
                self._counts["llm_spans_located"] += len(spans)
                out.append(spans)
        return out

    def _extract(self, text: str) -> tuple[list[Span], Counter[str]] | str:
        try:
            answer = self._complete(text)
        except SpanEndpointError as err:
            return str(err)
        pairs = parse_spans(answer)
        if pairs is None:
            return f"the model's answer holds no JSON list of spans: {answer[:200]!r}"
        return locate(text, pairs, self.config)

    def _complete(self, text: str) -> str:
        llm = self.config.llm
        body: dict[str, Any] = {
            "model": llm.model,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
            "max_tokens": llm.max_tokens,
            "temperature": llm.temperature,
        }
        problem = ""
        for attempt in range(llm.retries + 1):
            try:
                response = self._client.post("/chat/completions", json=body)
            except httpx.TransportError as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 400:
                    try:
                        return str(response.json()["choices"][0]["message"]["content"] or "")
                    except (ValueError, KeyError, IndexError, TypeError) as err:
                        raise SpanEndpointError(f"malformed completion: {err!r}") from None
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500 and response.status_code != 429:
                    break
            if attempt < llm.retries:
                time.sleep(llm.backoff_s * 2**attempt)
        raise SpanEndpointError(f"span endpoint failed after {attempt + 1} attempts: {problem}")

    def drain_counts(self) -> dict[str, int]:
        counts, self._counts = dict(self._counts), Counter()
        return counts

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
