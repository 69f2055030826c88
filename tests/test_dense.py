"""Dense and hybrid retrieval: the encoder against sentence-transformers, the Beam encoding job, FAISS
index types, ``DenseRetriever``, reciprocal rank fusion, the config kinds and the server."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import kind_config
from ramp.pipelines.dense_index import RECORD_FILE, build_dense_index
from sentence_transformers import SentenceTransformer
from test_server import ServerThread

from ramp.config import ConfigError, load_config
from ramp.errors import UserError
from ramp.retrieval.base import Hit
from ramp.retrieval.config import (
    RetrievalSettings,
    RetrieverConfig,
    ServerConfig,
    build_retriever,
    check_retriever,
    retriever_location,
)
from ramp.retrieval.dense import DenseRetriever, FaissSpec, read_dense_manifest
from ramp.retrieval.encoder import Encoder, EncoderError, model_directory, resolve_spec
from ramp.retrieval.http import HttpRetriever
from ramp.retrieval.hybrid import reciprocal_rank_fusion
from ramp.retrieval.indexing import read_manifest
from ramp.retrieval.lucene import split_contents
from ramp.retrieval.server import create_app

TEXTS = ["Molly Badham founded Twycross Zoo.", "A lobbyist for Genentech.", "x", "Muscat " * 300]


def _docs(corpus: Path) -> dict[str, tuple[str, str]]:
    rows = map(json.loads, corpus.read_text(encoding="utf-8").splitlines())
    return {r["id"]: split_contents(r["contents"]) for r in rows}


def test_encoder_matches_sentence_transformers() -> None:
    spec = resolve_spec("minilm")
    assert (spec.pooling, spec.normalize, spec.max_length, spec.query_prefix) == ("mean", True, 256, "")
    ours = Encoder(spec, batch_size=2).encode(TEXTS)
    theirs = SentenceTransformer(str(model_directory("minilm")), device="cpu").encode(TEXTS, batch_size=2)
    assert ours.shape == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


def test_spec_defaults_explicit_values_and_e5_prefixes(tmp_path: Path) -> None:
    e5 = tmp_path / "e5-small-like"
    e5.mkdir()
    for item in model_directory("minilm").iterdir():  # the same files, under an e5 name, no ST configs
        if item.is_file() and item.name not in ("modules.json", "sentence_bert_config.json"):
            os.symlink(item, e5 / item.name)
    spec = resolve_spec(str(e5))
    assert (spec.query_prefix, spec.passage_prefix, spec.pooling, spec.normalize) == (
        "query: ",
        "passage: ",
        "mean",
        True,
    )
    assert spec.max_length == 512
    explicit = resolve_spec("minilm", pooling="cls", normalize=False, query_prefix="q: ", max_length=64)
    assert (explicit.pooling, explicit.normalize, explicit.query_prefix, explicit.max_length) == (
        "cls",
        False,
        "q: ",
        64,
    )
    with pytest.raises(EncoderError, match="not a model directory"):
        resolve_spec(str(tmp_path / "missing-dir/"))


def test_dense_index_manifest_and_search(small_indexes: dict[str, Path], small_corpus: Path) -> None:
    manifest = read_dense_manifest(small_indexes["dense"])
    lucene = read_manifest(small_indexes["lucene"])
    assert manifest["corpus_fingerprint"] == lucene["corpus_fingerprint"]  # one reader for both kinds
    assert manifest["documents"] == 29 and manifest["dim"] == 384
    assert manifest["encoder"]["name"] == "minilm" and len(manifest["encoder_weights_sha256"]) == 64
    assert manifest["faiss"]["type"] == "flat" and manifest["faiss"]["bytes"] >= 29 * 384 * 4
    docs = _docs(small_corpus)
    with DenseRetriever(small_indexes["dense"]) as retriever:
        queries = [" ".join(docs[d][1].split()[:30]) for d in ("747", "0", "500")]
        top = retriever.search([*queries, "", "   "], k=3)
        assert [hits[0].doc_id for hits in top[:3]] == ["747", "0", "500"]
        assert top[3] == [] and top[4] == []
        assert top[0][0].title == docs["747"][0] and top[0][0].text == docs["747"][1]
        assert all(a.score >= b.score for hits in top for a, b in itertools.pairwise(hits))
        everything = retriever.search(queries[:1], k=100)[0]
        assert len(everything) == 29  # k past the corpus: every passage once
        excluded = retriever.search(queries[:1], k=5, exclude_doc_ids=[{"747", "748"}])[0]
        assert len(excluded) == 5 and not {h.doc_id for h in excluded} & {"747", "748"}
        with pytest.raises(ValueError, match="k must be"):
            retriever.search(["x"], k=0)


def test_job_is_deterministic_and_embeddings_are_reused(
    small_indexes: dict[str, Path], small_corpus: Path, tmp_path: Path
) -> None:
    spec = resolve_spec("minilm")
    again = build_dense_index([small_corpus], tmp_path / "again", spec, FaissSpec(), num_shards=2)
    first, second = small_indexes["dense"] / "embeddings", tmp_path / "again" / "embeddings"
    shards = sorted(p.name for p in first.glob("embeddings-*.parquet"))
    assert shards == ["embeddings-00000-of-00002.parquet", "embeddings-00001-of-00002.parquet"]
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in shards)  # byte-identical
    assert (tmp_path / "again" / "docs.arrow").read_bytes() == (
        small_indexes["dense"] / "docs.arrow"
    ).read_bytes()
    assert not again["embeddings"]["reused"]
    # Another FAISS type over the same passages: no encoding, same vectors.
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_dense_index([small_corpus], tmp_path / "again", spec, FaissSpec(type="hnsw"), num_shards=2)
    hnsw = build_dense_index(
        [small_corpus], tmp_path / "again", spec, FaissSpec(type="hnsw"), num_shards=2, overwrite=True
    )
    assert hnsw["embeddings"]["reused"] and hnsw["faiss"]["type"] == "hnsw"
    # A changed encoder setting re-encodes.
    short = resolve_spec("minilm", max_length=16)
    other = build_dense_index(
        [small_corpus], tmp_path / "short", short, FaissSpec(), embeddings_dir=str(second)
    )
    assert not other["embeddings"]["reused"]
    assert json.loads((second / RECORD_FILE).read_text())["encoder"]["max_length"] == 16


def test_faiss_types_agree_with_flat(
    small_indexes: dict[str, Path], small_corpus: Path, tmp_path: Path
) -> None:
    spec, embeddings = resolve_spec("minilm"), str(small_indexes["dense"] / "embeddings")
    docs = _docs(small_corpus)
    queries = [" ".join(text.split()[5:25]) for _, text in list(docs.values())[:10]]
    with DenseRetriever(small_indexes["dense"]) as flat:
        truth = [[h.doc_id for h in hits] for hits in flat.search(queries, k=5)]
    pq = FaissSpec(type="ivfpq", nlist=2, m=96, nbits=4, nprobe=2, refine=2)
    for faiss_spec in (FaissSpec(type="hnsw"), pq):
        out = tmp_path / faiss_spec.type
        manifest = build_dense_index([small_corpus], out, spec, faiss_spec, embeddings_dir=embeddings)
        assert manifest["embeddings"]["reused"]
        with DenseRetriever(out) as retriever:
            found = [[h.doc_id for h in hits] for hits in retriever.search(queries, k=5)]
        overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, truth, strict=True)])
        assert overlap >= 0.99, (faiss_spec.type, overlap)  # hnsw; ivfpq re-scores 2 x 5 candidates exactly
    assert manifest["faiss"]["bytes"] < read_dense_manifest(small_indexes["dense"])["faiss"]["bytes"]
    assert (tmp_path / "ivfpq" / "vectors.f32").stat().st_size == 29 * 384 * 4
    with DenseRetriever(tmp_path / "ivfpq", refine=0) as codes_only:  # PQ scores alone: approximate
        found = [[h.doc_id for h in hits] for hits in codes_only.search(queries, k=5)]
    assert 0.4 <= np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, truth, strict=True)]) < 1.0
    with pytest.raises(UserError, match="no exact vectors"):
        DenseRetriever(tmp_path / "hnsw", refine=4)
    with pytest.raises(UserError, match="needs at least 256 passages"):
        build_dense_index(
            [small_corpus], tmp_path / "pq8", spec, FaissSpec(type="ivfpq"), embeddings_dir=embeddings
        )
    with pytest.raises(ValueError, match="ivfpq settings"):
        FaissSpec(type="flat", nlist=4)


def test_index_refuses_other_encoder_weights(small_indexes: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("index.faiss", "docs.arrow"):
        os.symlink(small_indexes["dense"] / name, copy / name)
    manifest = read_dense_manifest(small_indexes["dense"])
    manifest["encoder_weights_sha256"] = "0" * 64
    (copy / "ramp-manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EncoderError, match="other weights"):
        DenseRetriever(copy)


def test_reciprocal_rank_fusion() -> None:
    def hits(*ids: str) -> list[Hit]:
        return [Hit(d, f"T{d}", f"text {d}", 10.0 - i) for i, d in enumerate(ids)]

    fused = reciprocal_rank_fusion([hits("a", "b", "c"), hits("b", "d")], rrf_k=60, k=4)
    assert [h.doc_id for h in fused] == ["b", "a", "d", "c"]  # 1/62+1/61 > 1/61 > 1/62 > 1/63
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61) and fused[0].text == "text b"
    # a and c tie at 1/61 + 1/63 (above b's 2/62): ties by id, and k cuts.
    assert [h.doc_id for h in reciprocal_rank_fusion([hits("a", "b", "c"), hits("c", "b", "a")], 60, 2)] == [
        "a",
        "c",
    ]
    assert [h.doc_id for h in reciprocal_rank_fusion([hits("y"), hits("x")], 60, 5)] == ["x", "y"]  # tie: id
    assert reciprocal_rank_fusion([[], []], 60, 5) == []


def test_hybrid_fuses_both_kinds(small_indexes: dict[str, Path], small_corpus: Path) -> None:
    docs = _docs(small_corpus)
    query, excluded = ["Twycross Zoo founder chimpanzees"], [{"747"}]
    parts = {
        kind: build_retriever(kind_config(kind, small_indexes)) for kind in ("lucene", "dense", "hybrid")
    }
    try:
        hybrid = parts["hybrid"].search(query, k=5, exclude_doc_ids=excluded)[0]
        lists = [parts[kind].search(query, k=20, exclude_doc_ids=excluded)[0] for kind in ("lucene", "dense")]
    finally:
        for retriever in parts.values():
            retriever.close()
    assert hybrid == reciprocal_rank_fusion(lists, 60.0, 5)  # fusion_depth 20 from each side
    assert hybrid[0].doc_id == "748" and hybrid[0].text == docs["748"][1]
    assert "747" not in {h.doc_id for h in hybrid}


def test_config_kinds_and_errors(small_indexes: dict[str, Path], tmp_path: Path) -> None:
    assert retriever_location(str(small_indexes["dense"]), None)["kind"] == "dense"
    assert retriever_location(str(small_indexes["lucene"]), None)["kind"] == "lucene"
    with pytest.raises(ValueError, match="needs 'dense_index'"):
        RetrieverConfig(kind="hybrid", index=str(small_indexes["lucene"]))
    with pytest.raises(UserError, match="holds no dense index"):
        check_retriever(RetrieverConfig(kind="dense", index=str(small_indexes["lucene"])))
    check_retriever(kind_config("hybrid", small_indexes))
    other = tmp_path / "other-corpus"
    other.mkdir()
    manifest = read_dense_manifest(small_indexes["dense"])
    (other / "ramp-manifest.json").write_text(json.dumps({**manifest, "corpus_fingerprint": "1:00"}))
    bad = RetrieverConfig(kind="hybrid", index=str(small_indexes["lucene"]), dense_index=str(other))
    with pytest.raises(UserError, match="same corpus"):
        build_retriever(bad)
    with pytest.raises(ConfigError):
        load_config(RetrievalSettings, "retrieval", ["retriever.kind=dense", "retriever.index=null"])


def test_server_encodes_a_batched_request_as_one_batch(small_indexes: dict[str, Path]) -> None:
    retriever = DenseRetriever(small_indexes["dense"])
    calls: list[int] = []
    encode = retriever.encoder.encode

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return encode(texts)

    retriever.encoder.encode = counting  # type: ignore[method-assign]
    queries = ["Twycross Zoo", "Genentech lobbyist", "Muscat treaty", "Horatio Hale", ""]
    with (
        ServerThread(create_app(retriever, ServerConfig(), {"kind": "dense"})) as url,
        HttpRetriever(url) as client,
    ):
        served = client.search(queries, k=3, exclude_doc_ids=[["747"], [], [], [], []])
    assert calls == [4]  # one request of five queries (one empty): one encoder batch
    assert served == retriever.search(queries, k=3, exclude_doc_ids=[["747"], [], [], [], []])
    retriever.close()
