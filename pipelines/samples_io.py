"""The one samples reader of the Beam jobs (answerability, CoT builder, SFT prepare).

``ReadSamples`` turns ``samples-*.parquet`` / ``trajectories-*.parquet`` / QA ``.jsonl`` files (any Beam
filesystem, one read task per file) into rows (dicts). Nothing is dropped: a JSONL line that is not a
JSON object, or the rest of a file that cannot be read, becomes ``{"id": where, "unparseable": detail}``,
which the consuming stage rejects with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

UNPARSEABLE = "unparseable"


class ReadSamplesFn(beam.DoFn):
    """One Parquet or ``.jsonl`` file -> its rows, as dicts (problems as ``unparseable`` rows)."""

    def __init__(self, with_source: bool = False) -> None:
        self.with_source = with_source

    def process(self, path: str) -> Iterator[Any]:
        for row in self._rows(path):
            yield (path, row) if self.with_source else row

    def _rows(self, path: str) -> Iterator[dict[str, Any]]:
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
                if path.endswith(".jsonl"):
                    for number, line in enumerate(raw.read().decode("utf-8").splitlines(), start=1):
                        if line.strip():
                            yield _json_row(line, f"{path}:{number}")
                    return
                for batch in pq.ParquetFile(raw).iter_batches(batch_size=1024):
                    yield from batch.to_pylist()
        except (OSError, ValueError) as err:  # an unreadable file or a corrupt page: the rest of the file
            kind = "JSONL" if path.endswith(".jsonl") else "Parquet"
            yield {"id": path, UNPARSEABLE: f"unreadable {kind}: {err!r}"}


def _json_row(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        row = None
    return row if isinstance(row, dict) else {"id": where, UNPARSEABLE: line[:500]}


class ReadSamples(beam.PTransform):
    """Files -> rows (dicts), or ``(file, row)`` pairs ``with_source``: one read task per file."""

    def __init__(self, files: Sequence[str], with_source: bool = False) -> None:
        super().__init__()
        self.files, self.with_source = list(files), with_source

    def expand(self, pipeline: Any) -> Any:
        return (
            pipeline
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Rows" >> beam.ParDo(ReadSamplesFn(self.with_source))
        )
