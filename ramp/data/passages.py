"""Passage records: the search corpus and the unit that masking works on.

Written by the data pipeline as ``passages-*.parquet``; read by ``ramp index build``.
Passage ids are ``<article id>#<n>`` for split articles, or the corpus's own id for DPR-style input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

PASSAGE_SCHEMA = pa.schema(
    [
        pa.field("passage_id", pa.string(), nullable=False),
        pa.field("article_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("passage_index", pa.int32(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Passage:
    passage_id: str
    article_id: str
    title: str
    text: str
    passage_index: int = 0

    def to_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Passage:
        return cls(**{name: row[name] for name in PASSAGE_SCHEMA.names})


def passage_id(article_id: str, index: int) -> str:
    """The stable id of the ``index``-th passage of an article."""
    return f"{article_id}#{index}"
