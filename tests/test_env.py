"""SearchEnv over a real Lucene index: exclusions, documents per search, shown characters, budgets."""

from __future__ import annotations

import pytest

from ramp.retrieval.base import Hit
from ramp.retrieval.env import ELLIPSIS, SearchConfig, SearchEnv, shown_hit


class CountingRetriever:
    """A real retriever that records every call it gets."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def search(self, queries, k=5, exclude_doc_ids=None):
        self.calls.append((list(queries), k))
        return self.inner.search(queries, k=k, exclude_doc_ids=exclude_doc_ids)

    def close(self):
        self.calls.append("closed")


def test_exclusions_top_k_and_shown_text(lucene_retriever):
    query = "Evan Morris lobbyist Genentech"
    [plain] = lucene_retriever.search([query], k=4)
    env = SearchEnv(lucene_retriever, SearchConfig(top_k=2, max_chars_per_doc=80))
    open_, closed = env.episode(), env.episode([plain[0].doc_id])
    first, second = env.search([(open_, query), (closed, f"  {query} ")])
    assert (first.status, second.status) == ("ok", "ok") and second.query == query
    assert [h.doc_id for h in first.hits] == [h.doc_id for h in plain[:2]]
    assert [h.doc_id for h in second.hits] == [h.doc_id for h in plain[1:3]]  # its own passage never shows
    for shown, hit in zip(first.hits, plain, strict=False):
        assert len(shown.text) <= 80 + len(ELLIPSIS) and shown.text.endswith(ELLIPSIS)
        assert " ".join(hit.text.split()).startswith(shown.text[: -len(ELLIPSIS)])


def test_budget_no_query_and_one_call_per_k(lucene_retriever):
    counting = CountingRetriever(lucene_retriever)
    env = SearchEnv(counting, SearchConfig(top_k=3, budget_docs=4), owns_retriever=True)
    a, b = env.episode(), env.episode()
    outcomes = env.search([(a, "history of the city"), (b, "Clinton White House intern"), (a, "")])
    assert [o.status for o in outcomes] == ["ok", "ok", "no_query"] and outcomes[2].hits == ()
    assert (a.docs_left, b.docs_left) == (1, 1) and counting.calls == [
        (["history of the city", "Clinton White House intern"], 3)
    ]
    second = env.search([(a, "history of the city"), (env.episode(), "history of the city")])
    assert [len(o.hits) for o in second] == [1, 3] and counting.calls[-2:] == [
        (["history of the city"], 1),
        (["history of the city"], 3),
    ]
    [spent] = env.search([(a, "history of the city")])
    assert spent.status == "no_budget" and spent.hits == () and a.docs_left == 0
    env.close()
    assert counting.calls[-1] == "closed"
    SearchEnv(counting).close()  # not built by the env: left open
    assert counting.calls[-1] == "closed" and counting.calls.count("closed") == 1


def test_shown_hit_collapses_whitespace_and_cuts_at_a_word():
    hit = Hit("1", " A \n title ", "one  two\nthree four", 1.0)
    assert shown_hit(hit, None) == Hit("1", "A title", "one two three four", 1.0)
    assert shown_hit(hit, 12).text == "one two…"
    with pytest.raises(ValueError):
        SearchConfig(top_k=0)
