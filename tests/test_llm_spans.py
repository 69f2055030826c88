"""The optional LLM span extractor against a local OpenAI-compatible fake endpoint."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from openai_server import ScriptedOpenAIServer
from ramp.pipelines.ramp_data import load_data_config, run_build

from ramp.data.config import LlmSpanConfig, SpanConfig
from ramp.data.llm_spans import LlmSpanExtractor, parse_spans
from ramp.retrieval.lucene import split_contents

PASSAGE = "Ada Lovelace met Charles Babbage in London in 1833, and wrote the first program in 1843."
ANSWER = json.dumps(
    [
        {"text": "Charles Babbage", "type": "entity"},
        {"text": "London", "type": "entity"},
        {"text": "1843", "type": "date"},
        {"text": "Isaac Newton", "type": "entity"},  # invented: not in the passage
        {"text": "1833", "type": "year"},  # unknown type
        {"text": "the first", "type": "number"},  # in the passage, but not a fact (no digit)
    ]
)


def _config(server: ScriptedOpenAIServer, **llm: Any) -> SpanConfig:
    settings = {"base_url": server.base_url, "model": "fake", "retries": 2, "backoff_s": 0.0, **llm}
    return SpanConfig(extractor="llm", llm=LlmSpanConfig(**settings))


def test_parse_spans_is_lenient_and_never_evaluates() -> None:
    assert parse_spans('Sure! [{"text": "Paris", "type": "Entity"}] done') == [("Paris", "entity")]
    assert parse_spans("no list here") is None
    assert parse_spans("[not json]") is None
    assert parse_spans('[{"text": 3}, "x", {"text": "Rome"}]') == [("Rome", "")]


def test_spans_are_located_cleaned_and_inventions_counted() -> None:
    with ScriptedOpenAIServer(lambda path, body: f"Here you go:\n{ANSWER}") as server:
        extractor = LlmSpanExtractor(_config(server))
        try:
            [spans] = extractor([PASSAGE])
            counts = extractor.drain_counts()
            assert isinstance(spans, list)
        finally:
            extractor.close()
    assert [(s.text, s.type, PASSAGE[s.start : s.end]) for s in spans] == [
        ("Charles Babbage", "entity", "Charles Babbage"),
        ("London", "entity", "London"),
        ("1843", "date", "1843"),
    ]
    assert counts == {
        "llm_spans_invented": 1,
        "llm_spans_bad_type": 1,
        "llm_spans_not_salient": 1,
        "llm_spans_located": 3,
    }
    body = server.requests[0]["body"]
    assert body["model"] == "fake" and body["messages"][-1]["content"] == PASSAGE


def test_retries_then_a_clear_failure_per_passage() -> None:
    with ScriptedOpenAIServer(lambda path, body: ANSWER) as server:
        extractor = LlmSpanExtractor(_config(server))
        try:
            server.fail_next(2, 503)  # retried: the third attempt answers
            [spans] = extractor([PASSAGE])
            assert len(spans) == 3
            server.fail_next(3, 500)  # retries exhausted: the passage gets a reason, not spans
            [failed] = extractor([PASSAGE])
            server.fail_next(1, 400)  # a 4xx is not retried
            [refused] = extractor([PASSAGE])
            assert extractor.drain_counts()["llm_requests_failed"] == 2
        finally:
            extractor.close()
    assert isinstance(failed, str) and "after 3 attempts" in failed and "HTTP 500" in failed
    assert isinstance(refused, str) and "after 1 attempts" in refused and "HTTP 400" in refused


def test_concurrency_is_bounded() -> None:
    lock, active, peak = threading.Lock(), [0], [0]

    def responder(path: str, body: dict[str, Any]) -> str:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return ANSWER

    with ScriptedOpenAIServer(responder) as server:
        extractor = LlmSpanExtractor(_config(server, max_concurrency=3))
        try:
            results = extractor([PASSAGE] * 12)
        finally:
            extractor.close()
    assert all(isinstance(r, list) and len(r) == 3 for r in results)
    assert peak[0] == 3


def test_build_with_the_llm_extractor(tmp_path: Path, wiki18_corpus: Path) -> None:
    lines = wiki18_corpus.read_text(encoding="utf-8").splitlines()[:12]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refused = split_contents(json.loads(lines[3])["contents"])[1]

    def responder(path: str, body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        if text == refused:
            return "I cannot help with that."  # no JSON list: this passage is rejected, with the reason
        years = [w for w in (t.strip(".,()") for t in text.split()) if w.isdigit() and len(w) == 4]
        words = [w for w in text.split()[4:] if w[:1].isupper() and w.isalpha()]
        spans = [{"text": y, "type": "date"} for y in years] + [{"text": w, "type": "entity"} for w in words]
        return json.dumps([*spans, {"text": "Atlantis Prime", "type": "entity"}])

    out = tmp_path / "out"
    with ScriptedOpenAIServer(responder) as server:
        overrides = [f"spans.llm.base_url={server.base_url}", "spans.extractor=llm", "spans.llm.backoff_s=0"]
        stats = run_build([str(corpus)], str(out), load_data_config(None, "dpr", overrides))
    assert stats["input_records"] == 12 == stats["samples"] + stats["rejected"]
    assert stats["samples"] >= 6
    assert stats["rejected_by_reason"].get("extractor_failed") == 1
    rows = [r for f in sorted(out.glob("samples-*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert {m["label"] for r in rows for m in r["masks"]} == {"LLM"}
    assert all(r["passage"][m["char_start"] : m["char_end"]] == m["text"] for r in rows for m in r["masks"])
