"""``ramp index build``: wiki-18 JSONL and passage Parquet in, a verified index and manifest out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ramp.cli import app
from ramp.data.passages import PASSAGE_SCHEMA, Passage
from ramp.retrieval.indexing import (
    MANIFEST_NAME,
    CorpusError,
    IndexBuildError,
    build_index,
    read_manifest,
    resolve_corpus,
)
from ramp.retrieval.jvm import JavaError, check_java, java_home
from ramp.retrieval.lucene import LuceneRetriever


def test_manifest_counts_the_corpus(wiki18_index: Path, wiki18_corpus: Path) -> None:
    manifest = read_manifest(wiki18_index)
    assert manifest == json.loads((wiki18_index / MANIFEST_NAME).read_text())
    assert manifest["documents"] == 1000 == len(wiki18_corpus.read_text().splitlines())
    assert manifest["corpus"] == [str(wiki18_corpus.resolve())]
    assert manifest["build"]["threads"] == 2 and manifest["build"]["shards"] == 2
    assert manifest["versions"]["java"].startswith("21")
    assert manifest["versions"]["anserini"].startswith("anserini-")


def _write_passages(path: Path, passages: list[Passage]) -> None:
    table = pa.Table.from_pylist([p.to_row() for p in passages], schema=PASSAGE_SCHEMA)
    pq.write_table(table, path)


PASSAGES = [
    Passage(
        "Aardvark#0", "Aardvark", "Aardvark", "The aardvark is a nocturnal burrowing mammal of Africa.", 0
    ),
    Passage("Aardvark#1", "Aardvark", "Aardvark", "Aardvarks eat ants and termites with a sticky tongue.", 1),
    Passage("Zebu#0", "Zebu", "Zebu", "The zebu is a humped cattle breed from South Asia.", 0),
]


def test_build_from_passage_parquet(tmp_path: Path) -> None:
    corpus = tmp_path / "passages"
    corpus.mkdir()
    _write_passages(corpus / "passages-00000-of-00002.parquet", PASSAGES[:2])
    _write_passages(corpus / "passages-00001-of-00002.parquet", PASSAGES[2:])
    manifest = build_index([corpus], tmp_path / "index", threads=2, shards=3, optimize=False, progress=False)
    assert manifest["documents"] == 3
    assert len(manifest["corpus"]) == 2
    with LuceneRetriever(tmp_path / "index") as retriever:
        [hits] = retriever.search(["termites sticky tongue"], k=2)
        assert hits[0].doc_id == "Aardvark#1"
        assert (hits[0].title, hits[0].text) == ("Aardvark", PASSAGES[1].text)
        assert retriever.search(["humped cattle"], k=3, exclude_doc_ids=[["Zebu#0"]])[0] == []


def test_glob_and_refusing_to_overwrite(tmp_path: Path) -> None:
    _write_passages(tmp_path / "passages-0.parquet", PASSAGES)
    assert resolve_corpus([str(tmp_path / "passages-*.parquet")]) == [tmp_path / "passages-0.parquet"]
    build_index([str(tmp_path / "passages-*.parquet")], tmp_path / "index", threads=1, progress=False)
    with pytest.raises(FileExistsError, match="not empty"):
        build_index([tmp_path / "passages-0.parquet"], tmp_path / "index", threads=1, progress=False)
    again = build_index([tmp_path / "passages-0.parquet"], tmp_path / "index", overwrite=True, progress=False)
    assert again["documents"] == 3


def test_duplicate_ids_fail_verification(tmp_path: Path) -> None:
    _write_passages(tmp_path / "passages-0.parquet", [*PASSAGES, PASSAGES[0]])
    with pytest.raises(IndexBuildError, match="3 distinct ids"):
        build_index([tmp_path / "passages-0.parquet"], tmp_path / "index", threads=1, progress=False)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('{"id": "1"}', "string 'contents'"),
        ('{"id": null, "contents": "x"}', "'id'"),
        ('{"id": "2", "contents": "  "}', "no text"),
    ],
)
def test_bad_corpus_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": "0", "contents": "\\"T\\"\\nfine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=message) as err:
        build_index([corpus], tmp_path / "index", progress=False)
    assert f"{corpus}:2" in str(err.value)


def test_missing_corpus_and_columns(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not found"):
        resolve_corpus([tmp_path / "nope-*.jsonl"])
    pq.write_table(pa.table({"passage_id": ["a"], "text": ["t"]}), tmp_path / "p.parquet")
    with pytest.raises(CorpusError, match="missing passage columns"):
        build_index([tmp_path / "p.parquet"], tmp_path / "index", progress=False)


def test_java_version_is_checked(tmp_path: Path) -> None:
    check_java(java_home())  # the runtime in use
    (tmp_path / "release").write_text('JAVA_VERSION="17.0.12"\n')
    with pytest.raises(JavaError, match=r"Java 17.*needs Java 21"):
        check_java(tmp_path)
    (tmp_path / "release").write_text('JAVA_VERSION="1.8.0_402"\n')
    with pytest.raises(JavaError, match="Java 8"):
        check_java(tmp_path)
    with pytest.raises(JavaError, match="no 'release' file"):
        check_java(tmp_path / "missing")


def test_index_cli_build_and_info(tmp_path: Path) -> None:
    _write_passages(tmp_path / "passages-0.parquet", PASSAGES)
    runner = CliRunner()
    args = ["index", "build", "--corpus", str(tmp_path), "--index", str(tmp_path / "idx"), "--threads", "1"]
    built = runner.invoke(app, args)
    assert built.exit_code == 0, built.output
    assert "indexed 3 documents" in built.output
    info = runner.invoke(app, ["index", "info", str(tmp_path / "idx")])
    assert info.exit_code == 0 and json.loads(info.output)["documents"] == 3
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and isinstance(again.exception, FileExistsError)


@pytest.mark.slow  # imports pyserini's Python layer (torch): ~10-30 s
def test_pyserini_imports_on_our_jvm_without_leaking_a_key() -> None:
    """pyserini's own JVM set-up and its OpenAI client at import must not break (fresh process, no key)."""
    code = (
        "import os\n"
        "from ramp.retrieval.jvm import import_pyserini_lucene\n"
        "lucene = import_pyserini_lucene()\n"
        "assert 'OPENAI_API_KEY' not in os.environ\n"
        "print(lucene.LuceneSearcher.__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "JAVA_HOME"}}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("LuceneSearcher")
