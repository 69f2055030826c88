"""The leakage guard, one test per leak path: a foreign index stops the stage with a clear error, and a
plain Search-R1 server (which ignores ``exclude_doc_ids``) never gets an excluded id past the client.

The paths every retriever kind shares run once per kind (``any_retriever``: lucene, dense, hybrid over a
small slice of the wiki-18 sample)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from json_server import JsonServer
from ramp.pipelines.answerability import run_answerability
from ramp.pipelines.cot_builder import run_cot

from ramp.cli import run
from ramp.config import load_config
from ramp.cot.builder import TrajectoryBuilder
from ramp.cot.config import CotConfig
from ramp.cot.trajectories import Trajectory
from ramp.data.answerability import check_answerability
from ramp.data.samples import SAMPLE_SCHEMA, Mask, Sample, mask_text
from ramp.retrieval.base import Retriever
from ramp.retrieval.config import AnswerabilityConfig, RetrieverConfig
from ramp.retrieval.env import SearchConfig, SearchEnv
from ramp.retrieval.http import HttpRetriever
from ramp.retrieval.indexing import corpus_fingerprint, read_manifest
from ramp.retrieval.leakage import (
    ALLOW_FLAG,
    ForeignIndexError,
    check_index_covers_samples,
    write_samples_manifest,
)
from ramp.retrieval.lucene import LuceneRetriever, split_contents


def _docs(corpus: Path) -> dict[str, tuple[str, str]]:
    rows = map(json.loads, corpus.read_text(encoding="utf-8").splitlines())
    return {r["id"]: split_contents(r["contents"]) for r in rows}


def _sample(doc_id: str, title: str, text: str, span: str, passage_id: str | None = None) -> Sample:
    start = text.index(span)
    mask = Mask(span, "entity", "ORG", start, start + len(span))
    pid = passage_id or doc_id
    return Sample(
        pid,
        pid,
        title,
        title,
        text,
        mask_text(text, [(start, start + len(span))]),
        (mask,),
        (pid,),
        "p",
        (span,),
    )


def _write(directory: Path, samples: list[Sample]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([s.to_row() for s in samples], schema=SAMPLE_SCHEMA)
    pq.write_table(table, directory / "samples-00000-of-00001.parquet")
    return directory


@pytest.fixture(scope="module")
def docs(wiki18_corpus: Path) -> dict[str, tuple[str, str]]:
    return _docs(wiki18_corpus)


def test_index_manifest_records_fingerprint_and_id_scheme(wiki18_index: Path, wiki18_corpus: Path) -> None:
    manifest = read_manifest(wiki18_index)
    assert manifest["corpus_fingerprint"] == corpus_fingerprint([wiki18_corpus])
    assert manifest["corpus_fingerprint"].startswith("1000:")
    assert manifest["id_scheme"] == ["jsonl id (wiki-18 DPR)"]


def test_foreign_index_stops_with_a_clear_error(
    tmp_path: Path, docs: dict[str, tuple[str, str]], lucene_retriever: LuceneRetriever, wiki18_index: Path
) -> None:
    # The same wiki-18 texts under other ids (as if cut from another dump): excluding "Molly#0" hides
    # nothing, and the search would return the source passage "747".
    foreign = [
        _sample(doc_id, *docs[doc_id], docs[doc_id][1].split()[3], passage_id=f"{doc_id}-other#0")
        for doc_id in ("747", "748", "0", "12", "100", "500")
    ]
    samples_dir = _write(tmp_path / "foreign", foreign)
    with pytest.raises(ForeignIndexError, match=ALLOW_FLAG) as err:
        check_index_covers_samples(str(samples_dir), lucene_retriever)
    assert "0 of 6 sampled source passages" in str(err.value) and "ramp index build --corpus" in str(
        err.value
    )
    allowed = check_index_covers_samples(str(samples_dir), lucene_retriever, allow_foreign_index=True)
    assert allowed == {"method": "search", "found": 0.0, "checked": 6}
    # The stage refuses on start, before any search.
    config = RetrieverConfig(index=str(wiki18_index), threads=1)
    with pytest.raises(ForeignIndexError):
        run_answerability(str(samples_dir), str(tmp_path / "out"), config, AnswerabilityConfig())

    own = _write(tmp_path / "own", [_sample(d, *docs[d], docs[d][1].split()[3]) for d in ("747", "0", "500")])
    assert check_index_covers_samples(str(own), lucene_retriever)["found"] == 1.0
    manifest = read_manifest(wiki18_index)
    write_samples_manifest(str(own), {"corpus_fingerprint": manifest["corpus_fingerprint"]})
    assert check_index_covers_samples(str(own), lucene_retriever, manifest)["method"] == "fingerprint"


def test_cot_stage_runs_the_leakage_guard(
    tmp_path: Path, docs: dict[str, tuple[str, str]], wiki18_index: Path
) -> None:

    foreign = [
        _sample(doc_id, *docs[doc_id], docs[doc_id][1].split()[3], passage_id=f"{doc_id}-other#0")
        for doc_id in ("747", "748", "0", "12", "100", "500")
    ]
    samples_dir = _write(tmp_path / "foreign", foreign)
    config = load_config(CotConfig, "cot", [f"retriever.index={wiki18_index}", "retriever.threads=1"])
    out = tmp_path / "out"
    with pytest.raises(ForeignIndexError, match=ALLOW_FLAG):
        run_cot(samples_dir, out, config)
    assert not out.exists()  # refused on start, before any search or output
    # The CLI flag lets it through: the job runs and accounts for every sample.
    args = ["data", "cot", "--samples", str(samples_dir), "--output", str(out), "--index", str(wiki18_index)]
    code = run([*args, "--set", "retriever.threads=1", "--allow-foreign-index"])
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples_in"] == len(foreign) and stats["accounted"]


def test_excluded_sources_never_come_back_from_any_kind(
    any_retriever: Retriever, small_corpus: Path, docs: dict[str, tuple[str, str]]
) -> None:
    ids = sorted(_docs(small_corpus))
    queries = [" ".join(docs[d][1].split()[:30]) for d in ids]
    found = any_retriever.search(queries, k=1)
    assert sum(hits[0].doc_id == d for d, hits in zip(ids, found, strict=True)) >= 0.9 * len(ids)  # can leak
    env = SearchEnv(any_retriever, SearchConfig(top_k=10, max_chars_per_doc=None))
    episodes = [env.episode([d, ids[(i + 1) % len(ids)]]) for i, d in enumerate(ids)]
    outcomes = env.search(list(zip(episodes, queries, strict=True)))
    for episode, outcome in zip(episodes, outcomes, strict=True):
        assert outcome.hits and not {h.doc_id for h in outcome.hits} & episode.exclude_doc_ids
    every = any_retriever.search(queries[:3], k=50, exclude_doc_ids=[ids[:20], ids[5:], set(ids)])
    assert every[0] and every[1] and every[2] == []  # all excluded: nothing comes back
    assert not {h.doc_id for h in every[0]} & set(ids[:20]) and not {h.doc_id for h in every[1]} & set(
        ids[5:]
    )


def test_foreign_index_is_refused_by_every_kind(
    tmp_path: Path, docs: dict[str, tuple[str, str]], any_retriever: Retriever
) -> None:
    foreign = [
        _sample(d, *docs[d], docs[d][1].split()[3], passage_id=f"{d}-other#0") for d in ("747", "0", "12")
    ]
    with pytest.raises(ForeignIndexError, match=ALLOW_FLAG):
        check_index_covers_samples(str(_write(tmp_path / "foreign", foreign)), any_retriever)
    own = _write(tmp_path / "own", [_sample(d, *docs[d], docs[d][1].split()[3]) for d in ("747", "0", "500")])
    assert check_index_covers_samples(str(own), any_retriever)["found"] == 1.0


def test_cot_stage_searches_a_hybrid_index_without_leaks(
    tmp_path: Path, docs: dict[str, tuple[str, str]], small_indexes: dict[str, Path]
) -> None:
    excluded = ("747", "748", "12", "500")
    samples = [
        replace(_sample(d, *docs[d], docs[d][1].split()[3]), exclude_doc_ids=excluded) for d in excluded
    ]
    samples_dir = _write(tmp_path / "own", samples)
    fingerprint = read_manifest(small_indexes["dense"])["corpus_fingerprint"]
    write_samples_manifest(str(samples_dir), {"corpus_fingerprint": fingerprint})
    out = tmp_path / "out"
    args = ["data", "cot", "--samples", str(samples_dir), "--output", str(out)]
    args += ["--index", str(small_indexes["lucene"]), "--set", "retriever.kind=hybrid"]
    args += ["--set", f"retriever.dense_index={small_indexes['dense']}", "--set", "verify.threshold=0"]
    assert run(args) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples_in"] == 4 and stats["accounted"] and stats["kept"] == 4
    rows = pq.read_table(sorted(out.glob("trajectories-*.parquet"))).to_pylist()
    retrieved = {doc_id for row in rows for ids in row["retrieved_doc_ids"] for doc_id in ids}
    assert retrieved and not retrieved & set(excluded)


class _PlainSearchR1:
    """A Search-R1 ``/retrieve`` server that ignores ``exclude_doc_ids`` (a real search behind it)."""

    def __init__(self, retriever: Retriever) -> None:
        self.retriever = retriever
        self.topks: list[int] = []
        self.http = JsonServer(self._answer)

    @property
    def url(self) -> str:
        return self.http.url

    def _answer(self, path: str, body: Any) -> tuple[int, Any]:
        self.topks.append(body["topk"])
        results = self.retriever.search(body["queries"], k=body["topk"])
        documents = [
            [
                {"document": {"id": h.doc_id, "contents": f'"{h.title}"\n{h.text}'}, "score": h.score}
                for h in hits
            ]
            for hits in results
        ]
        return 200, {"result": documents}


@pytest.fixture
def plain_server(any_retriever: Retriever) -> Iterator[_PlainSearchR1]:
    server = _PlainSearchR1(any_retriever)
    with server.http:
        yield server


def test_plain_search_r1_server_never_returns_an_excluded_id(
    plain_server: _PlainSearchR1, any_retriever: Retriever, docs: dict[str, tuple[str, str]]
) -> None:
    title, text = docs["747"]
    query = " ".join(text.split()[:25])
    assert any_retriever.search([query], k=3)[0][0].doc_id == "747"  # the server would leak it
    with HttpRetriever(plain_server.url, retries=0) as client:
        plain = client.search([query, query], k=3, exclude_doc_ids=[["747", "748"], []])
        assert [h.doc_id for h in plain[0]] and not {h.doc_id for h in plain[0]} & {"747", "748"}
        assert len(plain[0]) == 3 and plain[1][0].doc_id == "747"
        assert plain_server.topks[-1] == 5  # over-fetched k + the most exclusions of the batch

        # The answerability check through it: "Twycross Zoo" of 747 is also in 748, so excluding both
        # leaves nothing; excluding 747 alone finds it in 748 -- never in an excluded passage.
        sample = _sample("747", title, text, "Twycross Zoo")
        both = replace(sample, exclude_doc_ids=("747", "748"))
        checked = check_answerability(
            [sample, both], SearchEnv(client, AnswerabilityConfig().search), min_context_words=0
        )
        assert checked[0].masks[0].answer_doc_id == "748"
        assert checked[1].masks[0].answerable is False


def test_builtin_teacher_through_a_plain_server_sees_no_excluded_id(
    plain_server: _PlainSearchR1, docs: dict[str, tuple[str, str]], wiki18_index: Path
) -> None:

    excluded = ("747", "748", "12", "500")
    samples = [
        replace(_sample(d, *docs[d], docs[d][1].split()[3]), exclude_doc_ids=excluded) for d in excluded
    ]
    # Every trajectory kept (threshold 0), so every rollout's retrieved ids are there to inspect.
    overrides = [f"retriever.index={wiki18_index}", "verify.threshold=0"]
    config = load_config(CotConfig, "cot", overrides)
    with HttpRetriever(plain_server.url, retries=0) as client:
        builder = TrajectoryBuilder.from_config(config, retriever=client)
        try:
            outputs = builder.build([s.to_row() for s in samples])
        finally:
            builder.close()
    kept = [o.to_row() for o in outputs if isinstance(o, Trajectory)]
    assert kept and all(row["num_searches"] > 0 for row in kept)
    retrieved = {doc_id for row in kept for ids in row["retrieved_doc_ids"] for doc_id in ids}
    assert retrieved and not retrieved & set(excluded)
