"""Shared fixtures (the bundled wiki-18 sample and one real Lucene index of it per test session) and the
test tiers: the modules of :data:`HEAVY` are marked ``heavy``; ``make test-fast`` runs the others.

Java starts when a fixture first searches or indexes (:mod:`ramp.retrieval.jvm`), not at collection.
"""

from __future__ import annotations

import bz2
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ramp.pipelines.dense_index import build_dense_index

from ramp.retrieval.base import Retriever
from ramp.retrieval.config import RetrieverConfig, build_retriever
from ramp.retrieval.dense import FaissSpec
from ramp.retrieval.encoder import resolve_spec
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# Modules that start torch, Beam, Java or Megatron subprocesses (a `ramp` command, torchrun, Beam's
# worker processes, a server, a wheel install), or run every stage end to end.
HEAVY = frozenset(
    {
        "test_answerability.py",
        "test_chunking.py",
        "test_data_pipeline.py",
        "test_demo.py",
        "test_eval_run.py",
        "test_experiment.py",
        "test_gpu_check.py",
        "test_packaging.py",
        "test_pretrain_model.py",
        "test_pretrain_train.py",
        "test_recipe_comparison.py",
        "test_readme_commands.py",
        "test_retrieval_index.py",
        "test_rl_trainer.py",
        "test_server.py",
        "test_simulated_search.py",
    }
)
_unknown = HEAVY - {p.name for p in Path(__file__).parent.glob("test_*.py")}
assert not _unknown, f"HEAVY names modules that do not exist: {sorted(_unknown)}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in HEAVY:
            item.add_marker(pytest.mark.heavy)


@pytest.fixture(scope="session")
def wiki18_corpus() -> Path:
    """The bundled 1,000-passage DPR wiki-18 sample (``{"id", "contents": "\\"Title\\"\\ntext"}``)."""
    return DATA_DIR / "wiki18-sample-1000.jsonl"


@pytest.fixture(scope="session")
def wiki18_index(wiki18_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Lucene BM25 index of :func:`wiki18_corpus`, built once per session."""
    index_dir = tmp_path_factory.mktemp("wiki18-index")
    build_index([wiki18_corpus], index_dir, threads=2, shards=2, progress=False)
    return index_dir


@pytest.fixture(scope="session")
def lucene_retriever(wiki18_index: Path) -> Iterator[LuceneRetriever]:
    """A :class:`LuceneRetriever` over :func:`wiki18_index` (k1=0.9, b=0.4), closed at teardown."""
    retriever = LuceneRetriever(wiki18_index, threads=2)
    yield retriever
    retriever.close()


@pytest.fixture(scope="session")
def small_enwiki_dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 pages of the bundled enwiki export (a few articles, the rest redirects) as a valid
    ``.xml.bz2`` dump: the README's ``ramp data build`` input at a test's size."""
    out = tmp_path_factory.mktemp("enwiki-small") / "enwiki-sample-12-pages.xml.bz2"
    pages = 0
    with (
        bz2.open(DATA_DIR / "enwiki-sample-106-articles.xml.bz2", "rt", encoding="utf-8") as src,
        bz2.open(out, "wt", encoding="utf-8") as dst,
    ):
        for line in src:
            dst.write(line)
            pages += "</page>" in line
            if pages == 12:
                break
        dst.write("</mediawiki>\n")
    return out


# The ids the leak tests name, plus neighbours: a corpus small enough to encode in seconds.
SMALL_IDS = frozenset({*map(str, range(24)), "100", "306", "500", "747", "748"})
KINDS = ("lucene", "dense", "hybrid")


@pytest.fixture(scope="session")
def small_corpus(wiki18_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wiki-18 sample's passages with ids in :data:`SMALL_IDS` (29), as JSONL."""
    out = tmp_path_factory.mktemp("small-corpus") / "wiki18-small.jsonl"
    lines = wiki18_corpus.read_text(encoding="utf-8").splitlines()
    out.write_text("".join(f"{x}\n" for x in lines if json.loads(x)["id"] in SMALL_IDS), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def small_indexes(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A BM25 and a dense (all-MiniLM-L6-v2, flat; the real Beam job) index of :func:`small_corpus`."""
    root = tmp_path_factory.mktemp("small-indexes")
    build_index([small_corpus], root / "lucene", threads=1, shards=1, progress=False)
    build_dense_index([small_corpus], root / "dense", resolve_spec("minilm"), FaissSpec(), num_shards=2)
    return {"lucene": root / "lucene", "dense": root / "dense"}


def kind_config(kind: str, indexes: dict[str, Path]) -> RetrieverConfig:
    """The ``RetrieverConfig`` of ``kind`` over :func:`small_indexes`."""
    if kind == "hybrid":
        return RetrieverConfig(
            kind="hybrid", index=str(indexes["lucene"]), dense_index=str(indexes["dense"]), threads=1
        )
    return RetrieverConfig(kind=kind, index=str(indexes[kind]), threads=1)  # type: ignore[arg-type]


@pytest.fixture(scope="session", params=KINDS)
def any_retriever(request: pytest.FixtureRequest, small_indexes: dict[str, Path]) -> Iterator[Retriever]:
    """Each retriever kind over :func:`small_corpus` in turn (tests using it run once per kind)."""
    retriever = build_retriever(kind_config(request.param, small_indexes))
    yield retriever
    retriever.close()
