"""Masked RAMP samples: the output of the data pipeline and the input of every later stage.

One sample per passage: ``masks`` lists the masked spans in passage order, with character offsets
into the *original* passage; ``masked_passage`` has each span replaced by ``MASK_TOKEN``.
``answers[i]`` is the gold fill of the i-th mask. ``exclude_doc_ids`` are the corpus documents the
search tool must never return for this sample (at least its own passage), so the task cannot be solved
by finding the original. ``answerable``/``answer_rank``/``answer_doc_id`` are filled by the
answerability stage (null until then). ``spans`` lists every *eligible* span of the passage (the masks
are drawn from them), so the answerability stage can check them all before choosing k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa

MASK_TOKEN = "[mask]"

MASK_STRUCT = pa.struct(
    [
        pa.field("text", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),  # entity | date | number
        pa.field("label", pa.string(), nullable=False),  # the NER label, e.g. PERSON, DATE, CARDINAL
        pa.field("char_start", pa.int32(), nullable=False),
        pa.field("char_end", pa.int32(), nullable=False),
        pa.field("answerable", pa.bool_()),
        pa.field("answer_rank", pa.int32()),  # 1-based rank of the first hit containing the span
        pa.field("answer_doc_id", pa.string()),  # the document of that hit
    ]
)

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("passage_id", pa.string(), nullable=False),
        pa.field("article_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("passage", pa.string(), nullable=False),
        pa.field("masked_passage", pa.string(), nullable=False),
        pa.field("masks", pa.list_(MASK_STRUCT), nullable=False),
        pa.field("num_masks", pa.int32(), nullable=False),
        pa.field("exclude_doc_ids", pa.list_(pa.string()), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("answers", pa.list_(pa.string()), nullable=False),
        pa.field("spans", pa.list_(MASK_STRUCT)),  # every eligible span (masks are drawn from them)
    ]
)


@dataclass(frozen=True)
class Mask:
    text: str
    type: str
    label: str
    char_start: int
    char_end: int
    answerable: bool | None = None
    answer_rank: int | None = None
    answer_doc_id: str | None = None


def _mask_row(mask: Mask) -> dict[str, Any]:
    return {f.name: getattr(mask, f.name) for f in fields(mask)}


@dataclass(frozen=True)
class Sample:
    sample_id: str
    passage_id: str
    article_id: str
    title: str
    passage: str
    masked_passage: str
    masks: tuple[Mask, ...]
    exclude_doc_ids: tuple[str, ...]
    prompt: str
    answers: tuple[str, ...] = field(default=())
    spans: tuple[Mask, ...] = field(default=())

    @property
    def num_masks(self) -> int:
        return len(self.masks)

    def to_row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: asdict deep-copies twice
        row["masks"] = [_mask_row(m) for m in self.masks]
        row["exclude_doc_ids"] = list(self.exclude_doc_ids)
        row["answers"] = list(self.answers)
        row["spans"] = [_mask_row(m) for m in self.spans]
        row["num_masks"] = self.num_masks
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Sample:
        return cls(
            sample_id=row["sample_id"],
            passage_id=row["passage_id"],
            article_id=row["article_id"],
            title=row["title"],
            passage=row["passage"],
            masked_passage=row["masked_passage"],
            masks=tuple(Mask(**m) for m in row["masks"]),
            exclude_doc_ids=tuple(row["exclude_doc_ids"]),
            prompt=row["prompt"],
            answers=tuple(row["answers"]),
            spans=tuple(Mask(**m) for m in row.get("spans") or ()),
        )


def mask_text(passage: str, spans: Sequence[tuple[int, int]], token: str = MASK_TOKEN) -> str:
    """Replace each non-overlapping ``(start, end)`` span of ``passage`` with ``token``."""
    pieces, cursor = [], 0
    for start, end in sorted(spans):
        if start < cursor:
            raise ValueError(f"overlapping spans at {start}")
        pieces += [passage[cursor:start], token]
        cursor = end
    pieces.append(passage[cursor:])
    return "".join(pieces)


def unmask(masked_passage: str, fills: Sequence[str], token: str = MASK_TOKEN) -> str:
    """Put ``fills`` back in place of the mask tokens, in order. Inverse of :func:`mask_text`."""
    parts = masked_passage.split(token)
    if len(parts) != len(fills) + 1:
        raise ValueError(f"{len(parts) - 1} mask tokens but {len(fills)} fills")
    out = [parts[0]]
    for fill, rest in zip(fills, parts[1:], strict=True):
        out += [fill, rest]
    return "".join(out)
