"""``ramp index build``: a Lucene BM25 index from wiki-18 JSONL or the data pipeline's passage Parquet.

The corpus is rewritten as an Anserini ``JsonCollection`` (``{"id", "contents": title + "\\n" + text}``)
split into ``shards`` files, so Anserini's indexing threads work in parallel, then indexed with
``IndexCollection`` (Porter-stemmed English analyzer, ``-storeRaw`` so hits carry their text).
The build is verified (indexed documents == corpus documents == distinct ids) and described in
``DIR/ramp-manifest.json``, which records the corpus fingerprint (:class:`CorpusFingerprint`, order-free)
and id scheme, so a stage can tell whether its samples were cut from this corpus.
"""

from __future__ import annotations

import glob
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ramp.errors import UserError
from ramp.retrieval.jvm import anserini_jar, autoclass, java_log_level

MANIFEST_NAME = "ramp-manifest.json"
PASSAGE_COLUMNS = ["passage_id", "title", "text"]


class CorpusError(UserError, ValueError):
    """A corpus file that cannot be indexed; the message names the file (and line)."""


class IndexBuildError(RuntimeError):
    """The built index does not match its corpus."""


def resolve_corpus(inputs: Sequence[str | Path]) -> list[Path]:
    """Corpus files from files, directories (their ``*.parquet``, else ``*.jsonl``) and glob patterns."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(path.glob("passages-*.parquet")) or sorted(path.glob("*.parquet"))
            found = found or sorted(path.glob("*.jsonl"))
            if not found:
                raise CorpusError(f"{path}: no passages-*.parquet, *.parquet or *.jsonl files")
            files += found
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item)) if Path(m).is_file())
            if not matches:
                raise CorpusError(f"corpus not found: {item}")
            files += matches
    for file in files:
        if file.suffix not in {".jsonl", ".parquet"}:
            raise CorpusError(f"{file}: expected a .jsonl (wiki-18) or .parquet (passages) file")
    return files


def iter_documents(files: Sequence[Path]) -> Iterator[tuple[str, str]]:
    """``(id, contents)`` for every document, in file order."""
    for file in files:
        yield from (_iter_parquet(file) if file.suffix == ".parquet" else _iter_jsonl(file))


def _iter_jsonl(file: Path) -> Iterator[tuple[str, str]]:
    with open(file, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{file}:{line_no}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("contents"), str):
                raise CorpusError(f"{file}:{line_no}: expected an object with a string 'contents'")
            doc_id = row.get("id")
            if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or str(doc_id) == "":
                raise CorpusError(f"{file}:{line_no}: expected a non-empty string or integer 'id'")
            yield _checked(str(doc_id), row["contents"], f"{file}:{line_no}")


def _iter_parquet(file: Path) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    missing = set(PASSAGE_COLUMNS) - set(parquet.schema_arrow.names)
    if missing:
        raise CorpusError(
            f"{file}: missing passage columns {sorted(missing)} (see ramp.data.passages.PASSAGE_SCHEMA)"
        )
    row_no = 0
    for batch in parquet.iter_batches(columns=PASSAGE_COLUMNS, batch_size=8192):
        columns = batch.to_pydict()
        for doc_id, title, text in zip(columns["passage_id"], columns["title"], columns["text"], strict=True):
            row_no += 1
            if doc_id is None or title is None or text is None:
                raise CorpusError(f"{file}: row {row_no} has a null passage_id, title or text")
            yield _checked(doc_id, f"{title}\n{text}", f"{file}: row {row_no}")


def _checked(doc_id: str, contents: str, where: str) -> tuple[str, str]:
    if not doc_id.strip():
        raise CorpusError(f"{where}: empty document id")
    if not contents.strip():
        raise CorpusError(f"{where}: document {doc_id!r} has no text")
    return doc_id, contents


ID_SCHEMES = {
    ".parquet": "passage_id (<article id>#<n>, ramp data build)",
    ".jsonl": "jsonl id (wiki-18 DPR)",
}


class CorpusFingerprint:
    """An order-free fingerprint of ``(id, contents)`` documents: the count and the sum of their
    64-bit blake2b hashes, so shards and workers may add documents in any order."""

    def __init__(self) -> None:
        self.documents = 0
        self._sum = 0

    def add(self, doc_id: str, contents: str) -> None:
        digest = hashlib.blake2b(f"{doc_id}\x1f{contents}".encode(), digest_size=8).digest()
        self._sum = (self._sum + int.from_bytes(digest, "little")) % 2**64
        self.documents += 1

    @property
    def value(self) -> str:
        return f"{self.documents}:{self._sum:016x}"


def corpus_fingerprint(files: Sequence[Path]) -> str:
    """The :class:`CorpusFingerprint` of corpus files (passages Parquet or wiki-18 JSONL)."""
    fingerprint = CorpusFingerprint()
    for doc_id, contents in iter_documents(files):
        fingerprint.add(doc_id, contents)
    return fingerprint.value


def _fingerprinted(
    documents: Iterator[tuple[str, str]], fingerprint: CorpusFingerprint
) -> Iterator[tuple[str, str]]:
    for doc_id, contents in documents:
        fingerprint.add(doc_id, contents)
        yield doc_id, contents


def write_collection(documents: Iterator[tuple[str, str]], out_dir: Path, shards: int, progress: bool) -> int:
    """Write ``documents`` round-robin into ``shards`` JsonCollection files; returns the count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with ExitStack() as stack:
        outs = [
            stack.enter_context(open(out_dir / f"part-{i:05d}.jsonl", "w", encoding="utf-8"))
            for i in range(shards)
        ]
        for doc_id, contents in tqdm(documents, desc="convert", unit="doc", disable=not progress):
            outs[count % shards].write(
                json.dumps({"id": doc_id, "contents": contents}, ensure_ascii=False) + "\n"
            )
            count += 1
    return count


def build_index(
    corpus: Sequence[str | Path],
    index_dir: str | Path,
    threads: int = 4,
    shards: int | None = None,
    optimize: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build and verify a BM25 index of ``corpus`` in ``index_dir``; returns the manifest."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    shards = shards or threads
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    files = resolve_corpus(corpus)
    index_path = Path(index_dir)
    if index_path.exists() and any(index_path.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{index_path} is not empty (pass overwrite=True / --overwrite to replace it)"
            )
        shutil.rmtree(index_path)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    collection = Path(tempfile.mkdtemp(prefix=".ramp-collection-", dir=index_path.parent))
    fingerprint = CorpusFingerprint()
    try:
        count = write_collection(
            _fingerprinted(iter_documents(files), fingerprint), collection, shards, progress
        )
        if count == 0:
            raise CorpusError(f"no documents in {[str(f) for f in files]}")
        args = ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator"]
        args += ["-input", str(collection), "-index", str(index_path), "-threads", str(threads), "-storeRaw"]
        if optimize:
            args.append("-optimize")
        if not progress or java_log_level() in ("WARN", "ERROR"):
            args.append("-quiet")  # without it, Anserini resets Java's log level to INFO
        autoclass("io.anserini.index.IndexCollection").main(args)
    finally:
        shutil.rmtree(collection, ignore_errors=True)

    indexed, distinct_ids = _index_counts(index_path)
    if indexed != count:
        raise IndexBuildError(f"{index_path}: {indexed} documents indexed but the corpus has {count}")
    if distinct_ids != count:
        raise IndexBuildError(
            f"{index_path}: {count} documents but {distinct_ids} distinct ids (duplicate ids)"
        )
    manifest = {
        "corpus": [str(f.resolve()) for f in files],
        "documents": count,
        "corpus_fingerprint": fingerprint.value,
        "id_scheme": sorted({ID_SCHEMES[f.suffix] for f in files}),
        "build": {
            "collection": "JsonCollection",
            "generator": "DefaultLuceneDocumentGenerator",
            "analyzer": "English, Porter stemmer, stopwords removed (Anserini default)",
            "store_raw": True,
            "threads": threads,
            "shards": shards,
            "optimize": optimize,
        },
        "versions": {
            "ramp": version("ramp"),
            "pyserini": version("pyserini"),
            "anserini": anserini_jar().name,
            "java": str(autoclass("java.lang.System").getProperty("java.version")),
        },
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (index_path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    path = Path(index_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: was this index built with `ramp index build`?")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def _index_counts(index_path: Path) -> tuple[int, int]:
    """``(documents, distinct ids)`` read back from the Lucene index."""
    paths = autoclass("java.nio.file.Paths")
    directory = autoclass("org.apache.lucene.store.FSDirectory").open(paths.get(str(index_path)))
    reader = autoclass("org.apache.lucene.index.DirectoryReader").open(directory)
    try:
        from jnius import cast

        # The cast picks MultiTerms.getTerms(IndexReader, String) over the inherited LeafReader overload.
        terms = autoclass("org.apache.lucene.index.MultiTerms").getTerms(
            cast("org.apache.lucene.index.IndexReader", reader), "id"
        )
        distinct = int(terms.size()) if terms is not None else 0
        if distinct < 0:  # size unknown across several segments: count the merged terms
            distinct, term_iterator = 0, terms.iterator()
            while term_iterator.next() is not None:
                distinct += 1
        return int(reader.numDocs()), distinct
    finally:
        reader.close()
        directory.close()
