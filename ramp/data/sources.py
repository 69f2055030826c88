"""Input records for the masking pipeline, one parser per input format.

Readers take binary streams (opened by the caller, e.g. with Beam's FileSystems so ``gs://`` works) and
yield :class:`~ramp.data.passages.Passage` (DPR input, already passages), :class:`Article` (to be split),
:class:`~ramp.data.rejections.Rejection` (a record that cannot be read) or :class:`SkippedPage` (XML redirects
and non-article namespaces: not input records, only counted). Files are read as bytes and decoded per
record, so a bad line is one rejected record; a truncated compressed file or broken XML keeps everything
read before the break and adds one ``truncated_input``/``broken_xml`` rejection for the break.
"""

from __future__ import annotations

import bz2
import json
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import pyarrow.parquet as pq

from ramp.data.passages import PASSAGE_SCHEMA, Passage
from ramp.data.rejections import Rejection

CHUNK_BYTES = 1 << 20
PAYLOAD_BYTES = 500


SPAN_TYPES = ("entity", "date", "number")


@dataclass(frozen=True)
class TaggedSpan:
    """A salient span tagged in the input (``spans.extractor: tagged``): offsets into its text."""

    start: int
    end: int
    label: str
    type: str


@dataclass(frozen=True)
class Article:
    article_id: str
    title: str
    text: str
    wikitext: bool = False  # True: MediaWiki markup still to be converted to plain text
    spans: tuple[TaggedSpan, ...] | None = None  # the input's tagged spans (article offsets), if any


@dataclass(frozen=True)
class TaggedPassage(Passage):
    """A passage with the tagged spans that fall inside it (passage offsets); written as a plain passage."""

    spans: tuple[TaggedSpan, ...] = ()

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PASSAGE_SCHEMA.names}

    def untagged(self) -> Passage:
        return Passage(**self.to_row())


def passage_spans(
    text: str, passages: Sequence[str], spans: Sequence[TaggedSpan]
) -> list[tuple[TaggedSpan, ...]]:
    """The tagged spans of ``text`` remapped into each of its ``passages`` (cut from ``text`` in order,
    changing only whitespace, as the splitter does). A span crossing two passages belongs to neither."""
    rank = [-1] * len(text)  # the index of each non-space character among the non-space characters
    count = 0
    for i, ch in enumerate(text):
        if not ch.isspace():
            rank[i], count = count, count + 1
    out: list[tuple[TaggedSpan, ...]] = []
    first = 0
    for body in passages:
        positions = [i for i, ch in enumerate(body) if not ch.isspace()]
        last = first + len(positions)
        out.append(
            tuple(
                TaggedSpan(
                    positions[rank[s.start] - first], positions[rank[s.end - 1] - first] + 1, s.label, s.type
                )
                for s in spans
                if first <= rank[s.start] and 0 <= rank[s.end - 1] < last
            )
        )
        first = last
    return out


def _tagged_spans(value: Any, text: str) -> tuple[TaggedSpan, ...] | str:
    """The ``spans`` field (``[{start, end, label, type}]``) checked against ``text``, or what is wrong."""
    if not isinstance(value, list):
        return "spans must be a list of {start, end, label, type}"
    spans = []
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            return f"spans[{n}] is not an object"
        start, end, label, kind = (item.get(k) for k in ("start", "end", "label", "type"))
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            return f"spans[{n}]: start/end must be offsets with 0 <= start < end <= {len(text)}"
        if text[start].isspace() or text[end - 1].isspace():
            return f"spans[{n}]: {text[start:end]!r} starts or ends with whitespace"
        if not isinstance(label, str) or kind not in SPAN_TYPES:
            return f"spans[{n}]: needs a string label and a type in {SPAN_TYPES}"
        spans.append(TaggedSpan(start, end, label, kind))
    return tuple(spans)


@dataclass(frozen=True)
class SkippedPage:
    """An XML page that is not an article (redirect or namespace != 0)."""

    reason: str
    title: str


Record = Passage | Article | Rejection | SkippedPage


class TruncatedInput(Exception):
    """A compressed stream ended in the middle of a block."""


def _payload(raw: bytes) -> str:
    return raw[:PAYLOAD_BYTES].decode("utf-8", errors="replace")


def decompressed_chunks(raw: BinaryIO, path: str, end: int | None = None) -> Iterator[bytes]:
    """Decompressed bytes of ``raw`` (bz2 and gzip by file name, multi-stream aware; others as they are).

    With ``end``, stops once the compressed position reaches ``end`` (a byte range of a multistream dump).
    Raises :class:`TruncatedInput` if the data ends inside a compressed stream.
    """
    if not path.endswith((".bz2", ".gz")):
        while chunk := raw.read(CHUNK_BYTES):
            yield chunk
        return

    def new() -> Any:
        return bz2.BZ2Decompressor() if path.endswith(".bz2") else zlib.decompressobj(wbits=47)

    decompressor = new()
    fed = False  # the current decompressor has data of an unfinished stream
    position = raw.tell() if end is not None else 0
    pending = b""
    while True:
        if not pending:
            size = CHUNK_BYTES if end is None else min(CHUNK_BYTES, end - position)
            pending = raw.read(size) if size > 0 else b""
            position += len(pending)
            if not pending:
                if fed and not decompressor.eof:
                    raise TruncatedInput(f"{path}: compressed data ends inside a stream")
                return
        out = decompressor.decompress(pending)
        fed, pending = True, b""
        if out:
            yield out
        if decompressor.eof:
            pending = decompressor.unused_data
            decompressor, fed = new(), False


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines (without the newline) of a stream of byte chunks."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from lines
    if buffer:
        yield buffer


def byte_range(raw: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    """The bytes ``[start, end)`` of a seekable stream (``end`` None: to its end), in chunks."""
    raw.seek(start)
    remaining = None if end is None else end - start
    while remaining is None or remaining > 0:
        chunk = raw.read(CHUNK_BYTES if remaining is None else min(CHUNK_BYTES, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def read_jsonl(
    raw: BinaryIO,
    path: str,
    parse: Callable[[bytes, str], Record],
    start: int | None = None,
    end: int | None = None,
    first_line: int = 1,
) -> Iterator[Record]:
    """One record per non-blank line, parsed by ``parse(line, "<path>:<line number>")``. With ``start``,
    only the lines of the byte range ``[start, end)`` of an uncompressed file (cut at line starts), whose
    first line is line ``first_line`` of the file."""
    lineno = first_line - 1
    chunks = decompressed_chunks(raw, path) if start is None else byte_range(raw, start, end)
    try:
        for lineno, line in enumerate(iter_lines(chunks), start=first_line):
            if line.strip():
                yield parse(line, f"{path}:{lineno}")
    except (TruncatedInput, OSError, EOFError, zlib.error) as err:
        yield Rejection(f"{path}:{lineno + 1}", "read", "truncated_input", str(err))


def _decode_json(line: bytes, record_id: str) -> dict[str, Any] | Rejection:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return Rejection(record_id, "read", "not_utf8", str(err), _payload(line))
    try:
        obj = json.loads(text)
    except ValueError as err:
        return Rejection(record_id, "read", "unparseable", f"invalid JSON: {err}", _payload(line))
    if not isinstance(obj, dict):
        return Rejection(record_id, "read", "unparseable", "not a JSON object", _payload(line))
    return obj


def _field(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value)


def parse_dpr_line(line: bytes, record_id: str) -> Passage | Rejection:
    """``{"id", "contents": "\\"Title\\"\\ntext"}`` -> a passage (its id kept, article id = title)."""
    obj = _decode_json(line, record_id)
    if isinstance(obj, Rejection):
        return obj
    pid, contents = _field(obj, "id"), _field(obj, "contents")
    if pid is None or contents is None:
        return Rejection(
            record_id, "read", "unparseable", "needs string fields id and contents", _payload(line)
        )
    first, newline, text = contents.partition("\n")
    if not newline:
        return Rejection(pid, "read", "unparseable", "contents has no title line", _payload(line))
    title = first.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1]
    return Passage(passage_id=pid, article_id=title, title=title, text=text.strip())


def parse_article_line(line: bytes, record_id: str) -> Article | Rejection:
    """``{"id", "title", "text"}`` (the HF wikimedia/wikipedia layout) -> an article."""
    obj = _decode_json(line, record_id)
    if isinstance(obj, Rejection):
        return obj
    return article_from_fields(obj, record_id, _payload(line))


def article_from_fields(obj: dict[str, Any], record_id: str, payload: str = "") -> Article | Rejection:
    aid, title, text = _field(obj, "id"), _field(obj, "title"), _field(obj, "text")
    if aid is None or title is None or text is None:
        return Rejection(record_id, "read", "unparseable", "needs fields id, title and text", payload)
    if obj.get("spans") is None:
        return Article(article_id=aid, title=title, text=text)
    spans = _tagged_spans(obj["spans"], text)
    if isinstance(spans, str):
        return Rejection(aid, "read", "bad_spans", spans, payload)
    return Article(article_id=aid, title=title, text=text, spans=spans)


def read_parquet(raw: BinaryIO, path: str, batch_rows: int = 1024) -> Iterator[Article | Rejection]:
    """Articles from a Parquet file with ``id, title, text`` columns; record ids ``<path>:<row>``."""
    try:
        parquet = pq.ParquetFile(raw)
        columns = [c for c in ("id", "title", "text", "spans") if c in parquet.schema_arrow.names]
        row = 0
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            for obj in batch.to_pylist():
                yield article_from_fields(obj, f"{path}:{row}", json.dumps(obj, default=str)[:PAYLOAD_BYTES])
                row += 1
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        yield Rejection(path, "read", "unparseable", f"bad parquet file: {err}")


# --- MediaWiki XML ---------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(elem: ET.Element, name: str) -> ET.Element | None:
    for child in elem:
        if _local(child.tag) == name:
            return child
    return None


def page_record(page: ET.Element) -> Article | SkippedPage | Rejection:
    """One ``<page>`` element -> an article, or a skipped redirect / non-article page."""
    title_el, ns_el, id_el = _child(page, "title"), _child(page, "ns"), _child(page, "id")
    title = (title_el.text or "") if title_el is not None else ""
    if ns_el is not None and (ns_el.text or "").strip() != "0":
        return SkippedPage("namespace", title)
    if _child(page, "redirect") is not None:
        return SkippedPage("redirect", title)
    revision = _child(page, "revision")
    text_el = _child(revision, "text") if revision is not None else None
    text = (text_el.text or "") if text_el is not None else ""
    if text.lstrip()[:9].upper() == "#REDIRECT":
        return SkippedPage("redirect", title)
    if id_el is None or not (id_el.text or "").strip() or not title:
        return Rejection(title or "<page>", "read", "unparseable", "page without id or title")
    return Article(article_id=id_el.text.strip(), title=title, text=text, wikitext=True)  # type: ignore[union-attr]


def read_xml(
    raw: BinaryIO, path: str, start: int | None = None, end: int | None = None
) -> Iterator[Article | SkippedPage | Rejection]:
    """Pages of a MediaWiki XML dump (``.xml`` or ``.xml.bz2``), streamed with bounded memory.

    With ``start``/``end``, reads only that byte range of a multistream dump: whole bz2 streams holding
    ``<page>`` elements, parsed inside a synthetic ``<mediawiki>`` root.
    """
    parser: ET.XMLPullParser = ET.XMLPullParser(events=("start", "end"))
    record_id = f"{path}@{start}" if start is not None else path
    if start is not None:
        raw.seek(start)
        parser.feed(b"<mediawiki>")
    root: ET.Element | None = None
    depth = 0
    try:
        for chunk in decompressed_chunks(raw, path, end=end):
            parser.feed(chunk)
            events = cast(Iterator[tuple[str, ET.Element]], parser.read_events())
            for event, elem in events:
                if event == "start":
                    depth += 1
                    root = elem if root is None else root
                    continue
                depth -= 1
                if _local(elem.tag) == "page" and depth == 1:
                    yield page_record(elem)
                    if root is not None:
                        root.clear()  # bounded memory: drop parsed pages
        if start is None:
            parser.close()
    except TruncatedInput as err:
        yield Rejection(record_id, "read", "truncated_input", str(err))
    except ET.ParseError as err:
        yield Rejection(record_id, "read", "broken_xml", str(err))
    except (OSError, EOFError) as err:
        yield Rejection(record_id, "read", "truncated_input", str(err))


INDEX_SUFFIXES = ("-index.txt.bz2", "-index.txt")


def multistream_index_candidates(dump_path: str) -> list[str]:
    """Where the index of a ``*-multistream.xml.bz2`` dump would be (``*-multistream-index.txt[.bz2]``)."""
    if not dump_path.endswith(".xml.bz2"):
        return []
    return [dump_path[: -len(".xml.bz2")] + suffix for suffix in INDEX_SUFFIXES]


def multistream_ranges(
    index_lines: Iterable[bytes], file_size: int, streams_per_task: int
) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of ``streams_per_task`` page streams each, from index lines
    ``offset:page_id:title``. The header stream before the first offset (siteinfo) is not in any range;
    the last range runs to the end of the file (the stream closing ``</mediawiki>``)."""
    offsets = sorted({int(line.split(b":", 1)[0]) for line in index_lines if line.strip()})
    ranges = []
    for i in range(0, len(offsets), streams_per_task):
        stop = i + streams_per_task
        ranges.append((offsets[i], offsets[stop] if stop < len(offsets) else file_size))
    return ranges
