"""Deterministic sharded writers: the same elements give byte-identical files on every runner and rerun.

Each element goes to shard ``stable_seed(key) % num_shards``; a shard's elements are grouped, sorted by
key (ties by their serialised form) and written as one file ``{prefix}-{shard:05d}-of-{num_shards:05d}``
plus the suffix, through Beam's ``FileSystems`` (local paths, ``gs://``, ``s3://`` ...). Every shard is
written, empty ones too, so the file set depends only on ``num_shards``. A shard is sorted in memory:
choose ``num_shards`` so shards stay small (about rows / 100k). A retried shard rewrites the same bytes.
Both transforms output the written paths. ``clear_outputs`` removes a previous run's files first, so
shards of two runs (e.g. with different ``num_shards``) never mix.

    rows | "WriteSamples" >> WriteParquetShards(f"{out}/samples", SAMPLE_SCHEMA, 4, lambda r: r["sample_id"])
    rejections | "WriteRejected" >> WriteJsonlShards(f"{out}/rejected", 4, key_fn, Rejection.to_json)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Protocol

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ramp.seeding import stable_seed

KeyFn = Callable[[Any], str]


def shard_path(path_prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    """``{path_prefix}-{shard:05d}-of-{num_shards:05d}{suffix}``."""
    return f"{path_prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def canonical_json(row: Any) -> str:
    """A row's stable serialisation (sorted keys): the key of rows without a unique id."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)


def sorted_by_key(keyed: Iterable[tuple[str, Any]], tie_break: Callable[[Any], str]) -> list[Any]:
    """Payloads ordered by key; payloads sharing a key are ordered by ``tie_break``."""
    ordered: list[Any] = []
    for _, group in groupby(sorted(keyed, key=lambda kv: kv[0]), key=lambda kv: kv[0]):
        payloads = [payload for _, payload in group]
        ordered += sorted(payloads, key=tie_break) if len(payloads) > 1 else payloads
    return ordered


def read_json(path: str) -> dict[str, Any]:
    """A JSON object file on any Beam filesystem (a job's stats.json)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        data: dict[str, Any] = json.loads(raw.read().decode("utf-8"))
    return data


def clear_outputs(output_dir: str, patterns: Sequence[str]) -> None:
    """Create ``output_dir`` if needed and delete its files matching ``patterns`` (globs or names)."""
    root = output_dir.rstrip("/")
    if not FileSystems.exists(root):
        FileSystems.mkdirs(root)
    stale = [
        m.path
        for result in FileSystems.match([f"{root}/{p}" for p in patterns])
        for m in result.metadata_list
    ]
    if stale:
        FileSystems.delete(stale)


class ShardFormat(Protocol):
    """How one shard's elements become a file."""

    @property
    def suffix(self) -> str: ...  # the file extension, with its dot

    def prepare(self, element: Any) -> Any: ...  # element -> what is grouped and written

    def tie_break(self, payload: Any) -> str: ...  # orders equal keys; the key when no key_fn is given

    def write(self, path: str, payloads: list[Any]) -> None: ...


@dataclass(frozen=True)
class ParquetFormat:
    schema: pa.Schema
    row_group_rows: int
    compression: str
    suffix: str = ".parquet"

    def prepare(self, element: Any) -> Any:
        return element

    def tie_break(self, payload: Any) -> str:
        return canonical_json(payload)

    def write(self, path: str, payloads: list[Any]) -> None:
        table = pa.Table.from_pylist(payloads, schema=self.schema)
        with (
            FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out,
            pq.ParquetWriter(out, self.schema, compression=self.compression) as writer,
        ):
            if table.num_rows:  # an empty shard has no row group: `datasets` fails on an empty one
                writer.write_table(table, row_group_size=self.row_group_rows)


@dataclass(frozen=True)
class JsonlFormat:
    to_json: Callable[[Any], str]
    suffix: str = ".jsonl"

    def prepare(self, element: Any) -> Any:
        line = self.to_json(element)
        if "\n" in line:
            raise ValueError(f"a JSONL line may not contain a newline: {line[:200]!r}")
        return line

    def tie_break(self, payload: Any) -> str:
        return str(payload)

    def write(self, path: str, payloads: list[Any]) -> None:
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            out.write("".join(f"{line}\n" for line in payloads).encode("utf-8"))


class WriteShards(beam.PTransform):
    """Elements -> ``num_shards`` files in ``fmt``, each shard sorted by ``key_fn`` (a unique id)."""

    def __init__(self, path_prefix: str, num_shards: int, key_fn: KeyFn | None, fmt: ShardFormat) -> None:
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.path_prefix, self.num_shards, self.key_fn, self.fmt = path_prefix, num_shards, key_fn, fmt

    def expand(self, elements: Any) -> Any:
        prefix, num_shards, key_fn, fmt = self.path_prefix, self.num_shards, self.key_fn, self.fmt

        def keyed(element: Any) -> tuple[int, tuple[str, Any]]:
            payload = fmt.prepare(element)
            key = key_fn(element) if key_fn is not None else fmt.tie_break(payload)
            return stable_seed(key) % num_shards, (key, payload)

        def write_shard(grouped: tuple[int, dict[str, Iterable[Any]]]) -> str:
            shard, tagged = grouped
            path = shard_path(prefix, shard, num_shards, fmt.suffix)
            fmt.write(path, sorted_by_key(tagged["rows"], fmt.tie_break))
            return path

        rows = elements | "KeyByShard" >> beam.Map(keyed)
        shards = elements.pipeline | "AllShards" >> beam.Create([(i, None) for i in range(num_shards)])
        return (
            {"rows": rows, "shards": shards}
            | "GroupByShard" >> beam.CoGroupByKey()
            | "WriteShard" >> beam.Map(write_shard)
        )


class WriteParquetShards(WriteShards):
    """Dict rows -> ``{path_prefix}-SSSSS-of-NNNNN.parquet``: explicit ``schema``, zstd, row groups of
    ``row_group_rows`` rows. ``key_fn`` gives a row's unique id (e.g. ``sample_id``); without one, rows
    are keyed by their canonical JSON."""

    def __init__(
        self,
        path_prefix: str,
        schema: pa.Schema,
        num_shards: int,
        key_fn: KeyFn | None = None,
        row_group_rows: int = 10_000,
        compression: str = "zstd",
    ) -> None:
        super().__init__(path_prefix, num_shards, key_fn, ParquetFormat(schema, row_group_rows, compression))


class WriteJsonlShards(WriteShards):
    """Elements -> ``{path_prefix}-SSSSS-of-NNNNN.jsonl``, one ``to_json(element)`` line each (default:
    canonical JSON). ``key_fn`` gives an element's unique id; without one, the line itself is the key."""

    def __init__(
        self,
        path_prefix: str,
        num_shards: int,
        key_fn: KeyFn | None = None,
        to_json: Callable[[Any], str] = canonical_json,
    ) -> None:
        super().__init__(path_prefix, num_shards, key_fn, JsonlFormat(to_json))
