"""LuceneRetriever over a real index of the wiki-18 sample: relevance, exclusions, hostile queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramp.retrieval.config import RetrieverConfig, build_retriever
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever, split_contents
from ramp.retrieval.query import LUCENE_MAX_CLAUSES, sanitize_query


def _docs(corpus: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]


def _long_sentence(text: str) -> str:
    sentences = [s for s in re.split(r"(?<=\.)\s+", text) if len(s.split()) >= 12]
    return sentences[1] if len(sentences) > 1 else sentences[0]


def test_split_contents_strips_wiki18_quotes() -> None:
    assert split_contents('"Evan Morris"\nEvan Morris was a lobbyist.') == (
        "Evan Morris",
        "Evan Morris was a lobbyist.",
    )
    assert split_contents("Al-Qaeda\ntext\nmore") == ("Al-Qaeda", "text\nmore")
    assert split_contents('"\ntext') == ('"', "text")


def test_passages_come_back_for_their_titles(lucene_retriever: LuceneRetriever, wiki18_corpus: Path) -> None:
    sample = _docs(wiki18_corpus)[::50]
    titles = [split_contents(d["contents"])[0] for d in sample]
    results = lucene_retriever.search(titles, k=10)
    for doc, title, hits in zip(sample, titles, results, strict=True):
        assert hits[0].title == title
        assert doc["id"] in [h.doc_id for h in hits]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_passages_come_back_for_their_sentences(
    lucene_retriever: LuceneRetriever, wiki18_corpus: Path
) -> None:
    sample = _docs(wiki18_corpus)[::50]
    sentences = [_long_sentence(split_contents(d["contents"])[1]) for d in sample]
    results = lucene_retriever.search(sentences, k=3)
    assert all(d["id"] in [h.doc_id for h in hits] for d, hits in zip(sample, results, strict=True))
    assert sum(hits[0].doc_id == d["id"] for d, hits in zip(sample, results, strict=True)) >= 18
    top = results[0][[h.doc_id for h in results[0]].index(sample[0]["id"])]
    assert (top.title, top.text) == split_contents(sample[0]["contents"])


def test_excluded_docs_never_come_back(lucene_retriever: LuceneRetriever, wiki18_corpus: Path) -> None:
    docs = _docs(wiki18_corpus)[3:300:37]
    queries = [_long_sentence(split_contents(d["contents"])[1]) for d in docs]
    plain = lucene_retriever.search(queries, k=5)
    excluded = lucene_retriever.search(queries, k=5, exclude_doc_ids=[[h[0].doc_id] for h in plain])
    for before, after in zip(plain, excluded, strict=True):
        assert before[0].doc_id not in [h.doc_id for h in after]
        assert len(after) == 5  # over-fetched, so still k hits
        assert after[:4] == before[1:]
    # Excluding the whole top 5 of one query, alongside a query with no exclusions, in one batch.
    mixed = lucene_retriever.search(queries[:2], k=5, exclude_doc_ids=[[h.doc_id for h in plain[0]], []])
    assert not {h.doc_id for h in mixed[0]} & {h.doc_id for h in plain[0]}
    assert mixed[1] == plain[1]


def test_ties_are_ordered_by_doc_id(tmp_path: Path) -> None:
    corpus = tmp_path / "dupes.jsonl"
    rows = [{"id": i, "contents": '"Twin"\nidentical twin passage about zebras'} for i in ("b", "c", "a")]
    rows.append({"id": "z", "contents": '"Other"\nsomething unrelated'})
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    build_index([corpus], tmp_path / "index", threads=1, progress=False)
    with LuceneRetriever(tmp_path / "index") as retriever:
        hits = retriever.search(["zebras"], k=3)[0]
        assert [h.doc_id for h in hits] == ["a", "b", "c"]
        assert [h.doc_id for h in retriever.search(["zebras"], k=2, exclude_doc_ids=[{"a"}])[0]] == ["b", "c"]


HOSTILE_QUERIES = [
    '"unbalanced quote',
    "title:Evan contents:Morris",
    "(bracket] {brace} [x TO y]",
    "AND OR NOT",
    "Morris AND NOT lobbyist OR",
    "Mor*s ?vans",
    "lobbyist~2 Morris^10",
    "back\\slash \\",
    "/regex.*/",
    "+-&&||!^:",
    "Ünïcödé 東京 Москва 🙂🙃",
    "a " * 5000,
    " ".join(f"term{i}" for i in range(3000)),
    "x" * 20000,
    "東" * 3000,
    "🙂" * 3000,
    "\x00\x01 control \x7f chars \u200b",
    "lone \ud800 surrogate",
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES, ids=lambda q: repr(q[:20]))
def test_hostile_queries_do_not_crash(lucene_retriever: LuceneRetriever, query: str) -> None:
    [hits] = lucene_retriever.search([query], k=3)
    assert len(hits) <= 3


def test_query_syntax_is_plain_text(lucene_retriever: LuceneRetriever) -> None:
    as_text = lucene_retriever.search(["Evan Morris lobbyist"], k=3)[0]
    with_syntax = lucene_retriever.search(['"Evan" AND (Morris) OR lobbyist:'], k=3)[0]
    assert [h.doc_id for h in with_syntax] == [h.doc_id for h in as_text]


@pytest.mark.parametrize("query", ["", "   ", "\n\t", "\x00"])
def test_empty_queries_get_no_hits(lucene_retriever: LuceneRetriever, query: str) -> None:
    assert lucene_retriever.search([query, "Evan Morris"], k=3)[0] == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=300), min_size=1, max_size=4))
def test_arbitrary_text_is_searchable(lucene_retriever: LuceneRetriever, queries: list[str]) -> None:
    results = lucene_retriever.search(queries, k=2)
    assert len(results) == len(queries)
    assert all(len(hits) <= 2 for hits in results)


def test_bad_arguments_are_value_errors(lucene_retriever: LuceneRetriever) -> None:
    with pytest.raises(ValueError, match="k must"):
        lucene_retriever.search(["x"], k=0)
    with pytest.raises(ValueError, match="exclusion lists"):
        lucene_retriever.search(["x", "y"], k=1, exclude_doc_ids=[["0"]])
    with pytest.raises(ValueError, match="not one string"):
        lucene_retriever.search("Evan Morris", k=1)  # type: ignore[arg-type]
    assert lucene_retriever.search([], k=3) == []


def test_sanitize_query_bounds_terms() -> None:
    assert sanitize_query("  a\tb\n\nc  ") == "a b c"
    assert sanitize_query("one two three four", max_terms=2) == "one two"
    assert sanitize_query("ab東京cd", max_terms=3) == "ab東京"
    assert sanitize_query("x" * 600, max_terms=2) == "x" * 510
    long_query = " ".join(f"w{i}" for i in range(5000))
    assert len(sanitize_query(long_query).split()) == 256
    with pytest.raises(ValueError, match="max_terms"):
        sanitize_query("x", max_terms=LUCENE_MAX_CLAUSES + 1)


def test_bm25_parameters_change_scores(wiki18_index: Path, lucene_retriever: LuceneRetriever) -> None:
    other = build_retriever(RetrieverConfig(index=str(wiki18_index), k1=1.5, b=0.9, threads=1))
    try:
        query = ["Twycross Zoo chimpanzees"]
        assert other.search(query, k=1)[0][0].score != lucene_retriever.search(query, k=1)[0][0].score
    finally:
        other.close()


def test_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no Lucene index"):
        LuceneRetriever(tmp_path)
