"""QA dataset loaders: each dataset's official layout to one :class:`QARecord`.

=================  ====================================================================================
``hotpotqa``       official JSON array (``_id, question, answer, type, level, supporting_facts, context``)
                   or the simplified JSONL ``{"id", "question", "golden_answers", "type"}``
``2wikimultihopqa`` official JSON array (``_id, type, question, context, supporting_facts, evidences,
                   answer``; optional ``answer_aliases``)
``musique``        official JSONL (``id, paragraphs, question, question_decomposition, answer,
                   answer_aliases, answerable``); the type is the id's hop prefix (``2hop``, ``3hop1`` ...)
``bamboogle``      the released CSV (``Question,Answer``); ids ``bamboogle_<row>``
``fanoutqa``       the dev JSON array (``id, question, answer, categories, decomposition``); by default the
                   dev set shipped in the ``fanoutqa`` package. Answers may be a string, number, bool, list
                   or dict: one gold string that names every part (``key: value, ...``), the parts kept in
                   ``metadata["answer_parts"]``
``freshqa``        the released CSV (note rows, then a header with ``id, split, question, ... answer_0 ..
                   answer_9``); the type is ``fact_type``
``flashrag``       FlashRAG JSONL ``{"id", "question", "golden_answers", "metadata"}``
=================  ====================================================================================

A JSON file may be a JSON array or JSON Lines (either is detected). ``path`` may also be
``hub:REPO[:CONFIG[:SPLIT]]``: ``datasets.load_dataset`` rows in the FlashRAG layout (the FlashRAG hub
collection holds every dataset above in it), or in the dataset's own layout. A bad record raises
:class:`QADataError` naming the file, line and field; ids must be unique within a load.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramp import engines
from ramp.errors import UserError

Where = str  # "file:line" of the record, for error messages


class QADataError(UserError, ValueError):
    """A QA file or record that cannot be loaded; the message names the file, line and field."""


@dataclass(frozen=True)
class QARecord:
    id: str
    question: str
    golden_answers: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """The question type (HotpotQA ``bridge``/``comparison``, MuSiQue hops, ...), or ``""``."""
        return str(self.metadata.get("type") or "")

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "golden_answers": list(self.golden_answers),
            "metadata": dict(self.metadata),
        }


# ---------------------------------------------------------------------------------------------- fields


def _get(obj: Any, name: str, where: Where) -> Any:
    if not isinstance(obj, Mapping):
        raise QADataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if name not in obj or obj[name] is None:
        raise QADataError(f"{where}: field {name!r} is missing")
    return obj[name]


def _text(obj: Any, name: str, where: Where) -> str:
    value = _get(obj, name, where)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise QADataError(f"{where}: field {name!r}: expected a string, got {type(value).__name__}")
    text = str(value).strip()
    if not text:
        raise QADataError(f"{where}: field {name!r} is empty")
    return text


def _answers(obj: Any, name: str, where: Where) -> list[str]:
    """A list of non-empty strings (a bare string is one answer)."""
    value = _get(obj, name, where)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise QADataError(f"{where}: field {name!r}: expected a non-empty list of strings")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float) or not str(item).strip():
            raise QADataError(f"{where}: field {name!r}: every answer must be a non-empty string")
    return [str(item).strip() for item in items]


def _optional_answers(obj: Mapping[str, Any], name: str, where: Where) -> list[str]:
    return _answers(obj, name, where) if obj.get(name) else []


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _supporting_titles(obj: Mapping[str, Any], where: Where) -> list[str]:
    facts = obj.get("supporting_facts") or []
    titles = []
    for fact in facts if isinstance(facts, list) else [facts]:
        if not (isinstance(fact, list) and len(fact) == 2 and isinstance(fact[0], str)):
            raise QADataError(f"{where}: field 'supporting_facts': expected [title, sentence index] pairs")
        titles.append(fact[0])
    return list(dict.fromkeys(titles))


# --------------------------------------------------------------------------------------------- parsers


def _hotpotqa(obj: Any, where: Where) -> QARecord:
    if isinstance(obj, Mapping) and "_id" in obj:  # the official layout
        meta = {
            "type": str(obj.get("type") or ""),
            "level": str(obj.get("level") or ""),
            "supporting_titles": _supporting_titles(obj, where),
        }
        return QARecord(
            _text(obj, "_id", where), _text(obj, "question", where), (_text(obj, "answer", where),), meta
        )
    golds = _answers(obj, "golden_answers" if "golden_answers" in obj else "answer", where)
    return QARecord(
        _text(obj, "id", where),
        _text(obj, "question", where),
        _unique(golds),
        {"type": str(obj.get("type") or "")},
    )


def _two_wiki(obj: Any, where: Where) -> QARecord:
    golds = [_text(obj, "answer", where), *_optional_answers(obj, "answer_aliases", where)]
    meta = {"type": str(obj.get("type") or ""), "supporting_titles": _supporting_titles(obj, where)}
    return QARecord(_text(obj, "_id", where), _text(obj, "question", where), _unique(golds), meta)


def _musique(obj: Any, where: Where) -> QARecord:
    qid = _text(obj, "id", where)
    golds = [_text(obj, "answer", where), *_optional_answers(obj, "answer_aliases", where)]
    paragraphs = obj.get("paragraphs") or []
    if not isinstance(paragraphs, list) or not all(isinstance(p, Mapping) for p in paragraphs):
        raise QADataError(f"{where}: field 'paragraphs': expected a list of objects")
    meta = {
        "type": qid.split("__", 1)[0] if "__" in qid else "",
        "answerable": bool(obj.get("answerable", True)),
        "supporting_titles": list(
            dict.fromkeys(str(p.get("title", "")) for p in paragraphs if p.get("is_supporting"))
        ),
    }
    return QARecord(qid, _text(obj, "question", where), _unique(golds), meta)


def flatten_answer(value: Any) -> list[str]:
    """A FanoutQA answer's parts as strings: dicts as ``key: value`` pairs, lists item by item,
    booleans as ``yes``/``no``, numbers as written (``3``, ``1.5``)."""
    if isinstance(value, bool):
        return ["yes" if value else "no"]
    if isinstance(value, Mapping):
        return [f"{k}: {part}" for k, v in value.items() for part in flatten_answer(v)]
    if isinstance(value, list):
        return [part for item in value for part in flatten_answer(item)]
    if isinstance(value, int | float | str):
        return [str(value).strip()] if str(value).strip() else []
    raise TypeError(f"unsupported answer value of type {type(value).__name__}")


def _fanoutqa(obj: Any, where: Where) -> QARecord:
    try:
        parts = flatten_answer(_get(obj, "answer", where))
    except TypeError as err:
        raise QADataError(f"{where}: field 'answer': {err}") from None
    if not parts:
        raise QADataError(f"{where}: field 'answer' is empty")
    categories = obj.get("categories") or []
    meta = {"type": "", "answer_parts": parts, "categories": [str(c) for c in categories]}
    return QARecord(_text(obj, "id", where), _text(obj, "question", where), (", ".join(parts),), meta)


def _flashrag(obj: Any, where: Where) -> QARecord:
    extra = obj.get("metadata") if isinstance(obj, Mapping) else None
    if extra is not None and not isinstance(extra, Mapping):
        raise QADataError(f"{where}: field 'metadata': expected an object")
    meta = dict(extra or {})
    meta["type"] = str(meta.get("type") or "")
    golds = _answers(obj, "golden_answers", where)
    return QARecord(_text(obj, "id", where), _text(obj, "question", where), _unique(golds), meta)


def _bamboogle(row: Mapping[str, str], where: Where, index: int) -> QARecord:
    golds = [_text(row, "Answer", where)]
    return QARecord(f"bamboogle_{index}", _text(row, "Question", where), tuple(golds), {"type": ""})


def _freshqa(row: Mapping[str, str], where: Where, index: int) -> QARecord:
    golds = [v.strip() for k, v in row.items() if k.startswith("answer_") and v and v.strip()]
    if not golds:
        raise QADataError(f"{where}: field 'answer_0' is empty (no answer_N column has an answer)")
    meta = {
        "type": row.get("fact_type", "").strip(),
        **{k: row.get(k, "").strip() for k in ("split", "num_hops", "false_premise", "effective_year")},
    }
    return QARecord(_text(row, "id", where), _text(row, "question", where), _unique(golds), meta)


# --------------------------------------------------------------------------------------------- readers


def iter_json_records(path: Path) -> Iterator[tuple[Where, Any]]:
    """``(where, object)`` for a JSON array (with each element's line) or JSON Lines file."""
    text = path.read_text(encoding="utf-8")
    start = len(text) - len(text.lstrip())
    if text[start : start + 1] != "[":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield f"{path}:{line_no}", json.loads(line)
                except json.JSONDecodeError as err:
                    raise QADataError(f"{path}:{line_no}: not JSON ({err.msg})") from None
        return
    decoder = json.JSONDecoder()
    pos, line_no, counted = start + 1, 1, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise QADataError(f"{path}: the JSON array is not closed")
        line_no += text.count("\n", counted, pos)
        counted = pos
        if text[pos] == "]":
            return
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise QADataError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
        yield f"{path}:{line_no}", obj


def iter_csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[Where, dict[str, str]]]:
    """``(where, row)`` under the first row that has every ``required`` column (note rows above it
    are skipped); blank rows are not records."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if header is None:
                cells = [c.strip() for c in row]
                if all(name in cells for name in required):
                    header = cells
                continue
            if not any(c.strip() for c in row):
                continue
            yield where, dict(zip(header, row, strict=False))
        if header is None:
            raise QADataError(f"{path}: no header row with the columns {', '.join(required)}")


# --------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    parse: Callable[[Any, Where], QARecord] | None = None  # JSON / JSONL records
    parse_csv: Callable[[Mapping[str, str], Where, int], QARecord] | None = None
    csv_columns: tuple[str, ...] = ()
    default_path: Callable[[], Path] | None = None


def fanoutqa_dev_path() -> Path:
    """The FanoutQA dev set inside the installed ``fanoutqa`` package (found without importing it)."""
    spec = importlib.util.find_spec("fanoutqa")
    if spec is None or spec.origin is None:
        raise QADataError("the fanoutqa package is not installed (pip install fanoutqa)")
    return Path(spec.origin).parent / "data" / "fanout-final-dev.json"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("hotpotqa", parse=_hotpotqa),
        DatasetSpec("2wikimultihopqa", parse=_two_wiki),
        DatasetSpec("musique", parse=_musique),
        DatasetSpec("bamboogle", parse_csv=_bamboogle, csv_columns=("Question", "Answer")),
        DatasetSpec("fanoutqa", parse=_fanoutqa, default_path=fanoutqa_dev_path),
        DatasetSpec("freshqa", parse_csv=_freshqa, csv_columns=("id", "question", "answer_0")),
        DatasetSpec("flashrag", parse=_flashrag),
    )
}


def dataset_spec(name: str) -> DatasetSpec:
    """The loader of ``name``; an unknown name lists the known ones."""
    if name not in DATASETS:
        raise QADataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def _hub_records(spec: DatasetSpec, location: str) -> Iterator[QARecord]:
    repo, _, rest = location.partition(":")
    config, _, split = rest.partition(":")
    rows = engines.datasets().load_dataset(repo, config or None, split=split or "test")
    for index, row in enumerate(rows):
        where = f"hub:{location} row {index}"
        if "golden_answers" in row:
            yield _flashrag(row, where)
        elif spec.parse is not None:
            yield spec.parse(row, where)
        else:
            raise QADataError(f"{where}: expected FlashRAG rows (id, question, golden_answers)")


def iter_qa(name: str, path: str | Path | None = None) -> Iterator[QARecord]:
    """Records of dataset ``name`` from ``path`` (a local file or ``hub:...``), in file order."""
    spec = dataset_spec(name)
    if path is None or str(path) == "":
        if spec.default_path is None:
            raise QADataError(f"dataset {name!r} needs a path (a local file or hub:REPO[:CONFIG[:SPLIT]])")
        path = spec.default_path()
    if str(path).startswith("hub:"):
        yield from _hub_records(spec, str(path)[4:])
        return
    file = Path(path)
    if not file.is_file():
        raise QADataError(f"{name}: no such file: {file}")
    if spec.parse is None:
        assert spec.parse_csv is not None
        for index, (where, row) in enumerate(iter_csv_rows(file, spec.csv_columns)):
            yield spec.parse_csv(row, where, index)
        return
    for where, obj in iter_json_records(file):
        yield spec.parse(obj, where)


def load_qa(name: str, path: str | Path | None = None, limit: int | None = None) -> list[QARecord]:
    """The first ``limit`` (default all) records of dataset ``name``; duplicate ids are an error."""
    records: list[QARecord] = []
    seen: set[str] = set()
    for record in iter_qa(name, path):
        if limit is not None and len(records) >= limit:
            break
        if record.id in seen:
            raise QADataError(f"{name} ({path}): duplicate id {record.id!r}")
        seen.add(record.id)
        records.append(record)
    return records


def write_qa_jsonl(records: Iterable[QARecord], path: str | Path) -> int:
    """Write ``{"id", "question", "golden_answers"}`` lines (what the RL trainer's QA data reads)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out, "w", encoding="utf-8") as f:
        for record in records:
            golds = list(record.golden_answers)
            row = {"id": record.id, "question": record.question, "golden_answers": golds}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
