"""The dense index job: passages -> embeddings in shards (Apache Beam, any runner) -> a FAISS index.

    corpus files --ReadCorpus--> (id, title, text) --EncodePassages--> rows with the passage's vector
    rows --WriteEmbeddings--> EMB/embeddings-SSSSS-of-NNNNN.parquet (zstd, sorted by id) + EMB/embeddings.json

then, on this machine, the shards in order -> ``IDX/docs.arrow`` and ``IDX/index.faiss``
(:func:`ramp.retrieval.dense.write_faiss_index`) and ``IDX/ramp-manifest.json``. The corpus is read with
the BM25 index's own reader (:func:`ramp.retrieval.indexing.iter_documents`: wiki-18 JSONL, passage
Parquet), so both indexes of one corpus carry the same fingerprint (what ``kind: hybrid`` checks). A bad
corpus line stops the build before any encoding, naming the file and line.

``EMB`` (``--embeddings``, default ``IDX/embeddings``) is reused when its ``embeddings.json`` names the
same corpus fingerprint, encoder spec and weights, and its files are all there: another FAISS type
over the same passages costs no encoding.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from ramp.pipelines.io import WriteParquetShards, clear_outputs
from ramp.pipelines.runner import counter_totals, pipeline_options
from tqdm import tqdm

from ramp.errors import UserError
from ramp.retrieval.dense import (
    DOCS_FILE,
    EMBEDDING_SCHEMA,
    EMBEDDINGS_DIR,
    FAISS_FILE,
    MANIFEST_NAME,
    FaissSpec,
    embedding_batches,
    write_docs,
    write_faiss_index,
)
from ramp.retrieval.encoder import Encoder, EncoderSpec, weights_digest
from ramp.retrieval.indexing import ID_SCHEMES, CorpusFingerprint, iter_documents, resolve_corpus
from ramp.retrieval.lucene import split_contents

EMBEDDINGS = "embeddings"
RECORD_FILE = "embeddings.json"  # written last: the shards are complete
METRICS_NAMESPACE = "ramp.dense"


class ReadCorpusFn(beam.DoFn):
    """A corpus file -> its passages as ``(id, title, text)``."""

    def process(self, path: str) -> Iterator[tuple[str, str, str]]:
        for doc_id, contents in iter_documents([Path(path)]):
            yield (doc_id, *split_contents(contents))


class ReadCorpus(beam.PTransform):
    """Corpus files -> passages, one read task per file."""

    def __init__(self, files: Sequence[str]) -> None:
        super().__init__()
        self.files = list(files)

    def expand(self, pipeline: Any) -> Any:
        return (
            pipeline
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Passages" >> beam.ParDo(ReadCorpusFn())
        )


class EncodeFn(beam.DoFn):
    """A batch of passages -> rows of :data:`EMBEDDING_SCHEMA`; the encoder loads once per worker."""

    def __init__(self, spec: EncoderSpec, batch_size: int, device: str, total: int | None) -> None:
        self.spec, self.batch_size, self.device, self.total = spec, batch_size, device, total
        self._encoder: Encoder | None = None
        self._progress: Any = None

    def setup(self) -> None:
        self._encoder = Encoder(self.spec, device=self.device, batch_size=self.batch_size)
        self._progress = tqdm(total=self.total, desc="encode", unit="passage", mininterval=2)

    def process(self, passages: list[tuple[str, str, str]]) -> Iterator[dict[str, Any]]:
        assert self._encoder is not None, "setup() loads the encoder"
        embedded = self._encoder.encode_passages([f"{title}\n{text}" for _, title, text in passages])
        Metrics.counter(METRICS_NAMESPACE, "passages").inc(len(passages))
        self._progress.update(len(passages))
        for (doc_id, title, text), vector in zip(passages, embedded, strict=True):
            yield {"id": doc_id, "title": title, "text": text, "embedding": vector.astype("<f4").tobytes()}

    def teardown(self) -> None:
        if self._progress is not None:
            self._progress.close()


class EncodePassages(beam.PTransform):
    """Passages -> embedding rows, in batches of a few hundred (sorted by length inside the encoder)."""

    def __init__(self, spec: EncoderSpec, batch_size: int, device: str, total: int | None = None) -> None:
        super().__init__()
        self.spec, self.batch_size, self.device, self.total = spec, batch_size, device, total

    def expand(self, passages: Any) -> Any:
        return (
            passages
            | "Spread" >> beam.Reshuffle()
            | "Batch" >> beam.BatchElements(min_batch_size=8 * self.batch_size, max_batch_size=1024)
            | "Encode" >> beam.ParDo(EncodeFn(self.spec, self.batch_size, self.device, self.total))
        )


def build(
    pipeline: beam.Pipeline,
    files: Sequence[str],
    output_dir: str,
    spec: EncoderSpec,
    num_shards: int,
    batch_size: int,
    device: str,
    total: int | None = None,
) -> None:
    """The job: read the corpus, encode it, write sorted embedding shards."""
    passages = pipeline | "ReadCorpus" >> ReadCorpus(files)
    rows = passages | "EncodePassages" >> EncodePassages(spec, batch_size, device, total)
    _ = rows | "WriteEmbeddings" >> WriteParquetShards(
        f"{output_dir}/{EMBEDDINGS}", EMBEDDING_SCHEMA, num_shards, lambda row: row["id"], row_group_rows=2048
    )


def _open(path: str) -> Any:
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _shard_files(directory: str) -> list[str]:
    matches = FileSystems.match([f"{directory}/{EMBEDDINGS}-*.parquet"])[0].metadata_list
    return sorted(m.path for m in matches)


def _read_record(directory: str) -> dict[str, Any] | None:
    try:
        with _open(f"{directory}/{RECORD_FILE}") as raw:
            record: dict[str, Any] = json.loads(raw.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    sizes = {m.path.rsplit("/", 1)[-1]: m.size_in_bytes for m in _matched(_shard_files(directory))}
    return record if sizes == record.get("files") else None


def _matched(paths: list[str]) -> list[Any]:
    return [m for r in FileSystems.match(paths) for m in r.metadata_list] if paths else []


def encode_corpus(
    files: Sequence[str],
    embeddings_dir: str,
    spec: EncoderSpec,
    *,
    fingerprint: str,
    documents: int,
    workers: int = 1,
    pipeline_args: Sequence[str] = (),
    num_shards: int = 4,
    batch_size: int = 32,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run the encoding job into ``embeddings_dir`` unless it already holds these passages' embeddings;
    returns its ``embeddings.json`` (with ``"reused": True`` when nothing was encoded)."""
    out = embeddings_dir.rstrip("/")
    wanted = {
        "corpus_fingerprint": fingerprint,
        "documents": documents,
        "encoder": spec.to_json(),
        "encoder_weights_sha256": weights_digest(spec.name),
    }
    record = _read_record(out)
    if record is not None and {k: record.get(k) for k in wanted} == wanted:
        return {**record, "reused": True}
    clear_outputs(out, [f"{EMBEDDINGS}-*.parquet", RECORD_FILE])
    started = time.monotonic()
    pipeline = beam.Pipeline(options=pipeline_options(workers, pipeline_args))
    build(pipeline, files, out, spec, num_shards, batch_size, device, documents)
    result = pipeline.run()
    result.wait_until_finish()
    encoded = counter_totals(result, METRICS_NAMESPACE).get("passages", 0)
    if encoded != documents:
        raise RuntimeError(f"the encoding job encoded {encoded} passages of {documents}")
    seconds = time.monotonic() - started
    shards = _shard_files(out)
    record = {
        **wanted,
        "num_shards": num_shards,
        "files": {m.path.rsplit("/", 1)[-1]: m.size_in_bytes for m in _matched(shards)},
        "encode_seconds": round(seconds, 1),
        "passages_per_second": round(documents / seconds, 1),
    }
    with FileSystems.create(f"{out}/{RECORD_FILE}") as raw:
        raw.write((json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return {**record, "reused": False}


def build_dense_index(
    corpus: Sequence[str | Path],
    index_dir: str | Path,
    spec: EncoderSpec,
    faiss_spec: FaissSpec,
    *,
    embeddings_dir: str | None = None,
    workers: int = 1,
    pipeline_args: Sequence[str] = (),
    num_shards: int = 4,
    batch_size: int = 32,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Encode ``corpus`` (or reuse its embeddings) and build the dense index in ``index_dir``; returns the
    manifest. ``overwrite`` replaces an index but keeps ``IDX/embeddings`` for reuse."""
    files = resolve_corpus(corpus)
    fingerprint = CorpusFingerprint()
    for doc_id, contents in tqdm(iter_documents(files), desc="read corpus", unit="doc", mininterval=2):
        fingerprint.add(doc_id, contents)
    if fingerprint.documents == 0:
        raise UserError(f"no documents in {[str(f) for f in files]}")
    index_path = Path(index_dir)
    embeddings = embeddings_dir or str(index_path / EMBEDDINGS_DIR)
    _clear_index(index_path, overwrite, keep=Path(embeddings))
    started = time.monotonic()
    record = encode_corpus(
        [str(f) for f in files],
        embeddings,
        spec,
        fingerprint=fingerprint.value,
        documents=fingerprint.documents,
        workers=workers,
        pipeline_args=pipeline_args,
        num_shards=num_shards,
        batch_size=batch_size,
        device=device,
    )
    shards = _shard_files(embeddings.rstrip("/"))
    rows, distinct = write_docs(embedding_batches(shards, _open), index_path / DOCS_FILE)
    if rows != fingerprint.documents or distinct != rows:
        raise UserError(
            f"{index_path}: {rows} embedded passages with {distinct} distinct ids for a corpus of "
            f"{fingerprint.documents} documents (duplicate ids in the corpus?)"
        )
    dim = _dimension(shards)
    faiss_settings = write_faiss_index(
        lambda: embedding_batches(shards, _open), rows, dim, faiss_spec, index_path / FAISS_FILE
    )
    manifest = {
        "kind": "dense",
        "corpus": [str(f.resolve()) for f in files],
        "documents": rows,
        "corpus_fingerprint": fingerprint.value,
        "id_scheme": sorted({ID_SCHEMES[f.suffix] for f in files}),
        "encoder": spec.to_json(),
        "encoder_weights_sha256": record["encoder_weights_sha256"],
        "dim": dim,
        "faiss": faiss_settings,
        "embeddings": {
            "directory": embeddings,
            "reused": record["reused"],
            "encode_seconds": record["encode_seconds"],
            "passages_per_second": record["passages_per_second"],
        },
        "versions": {"ramp": version("ramp"), "faiss": version("faiss-cpu"), "torch": version("torch")},
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (index_path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _dimension(shards: list[str]) -> int:
    """The embedding dimension: the first stored vector's bytes / 4."""
    for batch in embedding_batches(shards, _open):
        if batch.num_rows:
            return len(batch.column("embedding")[0].as_py()) // 4
    raise RuntimeError(f"no embeddings in {shards}")


def _clear_index(index_path: Path, overwrite: bool, keep: Path) -> None:
    """An empty ``index_path`` to build into (``overwrite``: everything but the embeddings is deleted)."""
    if index_path.exists() and any(p.resolve() != keep.resolve() for p in index_path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{index_path} is not empty (pass --overwrite to replace it)")
        for path in index_path.iterdir():
            if path.resolve() == keep.resolve():
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    index_path.mkdir(parents=True, exist_ok=True)
