"""Training data of the simulated search engine (``ramp sim prepare``): (query -> real documents) pairs.

Queries and what they look for come from verified trajectories (each search query, with the trajectory's
gold fills or answers and its exclusions) or from a QA set (``{id, question, golden_answers}``: the question
is the query). Each distinct query is searched in the real index (``pool`` hits, its exclusions applied):
hits that contain an answer are its *useful* documents, the others its *noisy* ones (on the query's words,
without what it looks for), as ZeroSearch labels documents by whether they led to the answer. A query gives
a ``useful`` pair (its first ``docs`` useful hits) and, when it has noisy hits, a ``noisy`` pair; a query
with no useful hit, an empty or repeated query and a bad row are rejected with their reason, so
``queries in = kept + rejected``. Each pair carries the simulator's chat messages (its prompt, then the
documents in the simulator's output format), which ``ramp sim train`` turns into SFT conversations::

    OUT/pairs.jsonl      id, query, kind, answers, exclude_doc_ids, documents [{id, title, text}], messages
    OUT/documents.jsonl  every document of the pairs (the trained simulator's leak guard)
    OUT/rejected.jsonl   Rejection rows (bad_row, no_query, duplicate_query, answer_not_retrieved)
    OUT/stats.json
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from ramp.config import StrictModel
from ramp.cot.trajectories import Trajectory, read_trajectories
from ramp.data.rejections import Rejection
from ramp.data.synthesis import seed_from_row
from ramp.retrieval.base import Hit, Retriever
from ramp.retrieval.config import RetrieverConfig
from ramp.retrieval.env import shown_text
from ramp.retrieval.simulated import Kind, format_documents, simulator_messages
from ramp.text import contains, normalize

STAGE = "sim_prepare"
PAIRS, DOCUMENTS, REJECTED, STATS = "pairs.jsonl", "documents.jsonl", "rejected.jsonl", "stats.json"


class SimPrepareConfig(StrictModel):
    pool: int = Field(default=10, ge=1)  # real hits searched per query, sorted into useful and noisy
    docs: int = Field(default=3, ge=1)  # documents per pair (the simulator's k in training)
    max_chars_per_doc: int | None = Field(default=600, ge=1)  # a document cut at a word boundary
    doc_words: int = Field(default=30, ge=1)  # the length the prompt asks for (retriever.simulator's)
    batch_size: int = Field(default=256, ge=1)  # queries per retriever call


class SimSettings(StrictModel):
    """The whole ``configs/sim.yaml``."""

    retriever: RetrieverConfig = RetrieverConfig(kind="lucene", index="runs/index")
    prepare: SimPrepareConfig = SimPrepareConfig()


@dataclass(frozen=True)
class Query:
    id: str
    query: str
    answers: tuple[str, ...]
    exclude_doc_ids: tuple[str, ...] = ()


def queries_from_trajectories(directory: str | Path) -> list[Query]:
    """Every search query of the trajectories in ``directory``, with their golds and exclusions."""
    trajectories = read_trajectories(directory)
    if not trajectories:
        raise FileNotFoundError(f"no trajectories-*.parquet in {directory} (make them with `ramp data cot`)")
    return [
        Query(f"{t.sample_id}#q{i}", q, tuple(g for g in t.golds if g.strip()), t.exclude_doc_ids)
        for t in trajectories
        for i, q in enumerate(t.queries)
    ]


def queries_from_questions(path: str | Path) -> tuple[list[Query], list[Rejection]]:
    """A QA JSONL's questions as queries (a row that is not ``{id, question, golden_answers}`` rejected)."""
    queries, rejected = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
                seed = seed_from_row(row) if isinstance(row, dict) else None
            except (json.JSONDecodeError, ValueError) as err:
                rejected.append(Rejection(where, STAGE, "bad_row", str(err), line[:500]))
                continue
            if seed is None:
                rejected.append(Rejection(where, STAGE, "bad_row", "not a JSON object", line[:500]))
                continue
            queries.append(Query(seed.id, seed.question, seed.answers))
    return queries, rejected


def _holds_answer(hit: Hit, answers: Sequence[str]) -> bool:
    text = normalize(f"{hit.title} {hit.text}", "ramp")
    return any(contains(text, normalize(a, "ramp")) for a in answers)


def _pair(query: Query, kind: Kind, hits: Sequence[Hit], config: SimPrepareConfig) -> dict[str, Any]:
    documents = [
        {"id": h.doc_id, "title": h.title, "text": shown_text(h.text, config.max_chars_per_doc)} for h in hits
    ]
    messages = simulator_messages(query.query, len(documents), kind, config.doc_words)
    answer = format_documents([(d["title"], d["text"]) for d in documents])
    return {
        "id": f"{query.id}/{kind}",
        "query": query.query,
        "kind": kind,
        "answers": list(query.answers),
        "exclude_doc_ids": list(query.exclude_doc_ids),
        "documents": documents,
        "messages": [*messages, {"role": "assistant", "content": answer}],
    }


def collect_pairs(
    queries: Iterable[Query], retriever: Retriever, config: SimPrepareConfig
) -> tuple[list[dict[str, Any]], list[Rejection]]:
    """Useful and noisy pairs of every distinct query (in input order), and the rejected queries."""
    rejected: list[Rejection] = []
    distinct: list[Query] = []
    seen: set[str] = set()
    for query in queries:
        key = " ".join(query.query.lower().split())
        if not key or not query.answers:
            what = "an empty query" if not key else "nothing to look for (no answer)"
            rejected.append(Rejection(query.id, STAGE, "no_query", what, query.query))
        elif key in seen:
            rejected.append(
                Rejection(query.id, STAGE, "duplicate_query", "an earlier row asks it", query.query)
            )
        else:
            seen.add(key)
            distinct.append(query)
    pairs: list[dict[str, Any]] = []
    for start in range(0, len(distinct), config.batch_size):
        batch = distinct[start : start + config.batch_size]
        found = retriever.search(
            [q.query for q in batch], k=config.pool, exclude_doc_ids=[q.exclude_doc_ids for q in batch]
        )
        for query, hits in zip(batch, found, strict=True):
            useful = [h for h in hits if _holds_answer(h, query.answers)][: config.docs]
            noisy = [h for h in hits if not _holds_answer(h, query.answers)][: config.docs]
            if not useful:
                detail = f"no answer in the top {config.pool} hits"
                rejected.append(Rejection(query.id, STAGE, "answer_not_retrieved", detail, query.query))
                continue
            pairs.append(_pair(query, "useful", useful, config))
            if noisy:
                pairs.append(_pair(query, "noisy", noisy, config))
    return pairs, rejected


def write_pairs(
    output: str | Path, pairs: Sequence[dict[str, Any]], rejected: Sequence[Rejection], queries_in: int
) -> dict[str, Any]:
    """Write the pairs, their documents, the rejections and ``stats.json``; returns the stats."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    documents = {d["id"]: d for pair in pairs for d in pair["documents"]}
    _write_jsonl(out / PAIRS, (json.dumps(p, ensure_ascii=False, sort_keys=True) for p in pairs))
    _write_jsonl(
        out / DOCUMENTS,
        (json.dumps(documents[i], ensure_ascii=False, sort_keys=True) for i in sorted(documents)),
    )
    _write_jsonl(out / REJECTED, (r.to_json() for r in rejected))
    kinds = Counter(p["kind"] for p in pairs)
    kept = len({p["id"].rsplit("/", 1)[0] for p in pairs})
    stats = {
        "queries_in": queries_in,
        "kept": kept,
        "rejected": len(rejected),
        "accounted": queries_in == kept + len(rejected),
        "pairs_useful": kinds["useful"],
        "pairs_noisy": kinds["noisy"],
        "documents": len(documents),
        "rejected_by_reason": dict(sorted(Counter(r.reason for r in rejected).items())),
    }
    (out / STATS).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return stats


def _write_jsonl(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(f"{line}\n" for line in lines)


def read_pairs(directory: str | Path) -> list[dict[str, Any]]:
    path = Path(directory) / PAIRS
    if not path.is_file():
        raise FileNotFoundError(f"no {PAIRS} in {directory} (make the pairs with `ramp sim prepare`)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pair_trajectories(pairs: Iterable[dict[str, Any]]) -> list[Trajectory]:
    """The pairs as SFT conversations in the trajectory format (the prompt, then the documents as the
    assistant's turn: the only tokens with loss), for the project's SFT trainer."""
    return [
        Trajectory(
            sample_id=pair["id"],
            kind="sim",
            teacher="search",
            teacher_model="",
            round=0,
            messages=tuple(pair["messages"]),
            answer="",
            fills=(),
            golds=tuple(pair["answers"]),
            score=1.0,
            reward=1.0,
            verified=True,
            num_masks=0,
            queries=(pair["query"],),
            retrieved_doc_ids=(tuple(d["id"] for d in pair["documents"]),),
            exclude_doc_ids=tuple(pair["exclude_doc_ids"]),
        )
        for pair in pairs
    ]


def format_prepare_stats(stats: dict[str, Any]) -> str:
    reasons = ", ".join(f"{r} {n}" for r, n in stats["rejected_by_reason"].items()) or "none"
    check = "ok" if stats["accounted"] else "MISMATCH"
    return (
        f"{stats['queries_in']} queries -> {stats['pairs_useful']} useful + {stats['pairs_noisy']} noisy "
        f"pairs ({stats['documents']} documents); {stats['rejected']} rejected ({reasons}); "
        f"queries in = kept + rejected ({check})"
    )
