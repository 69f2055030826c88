"""``stats.json`` of a masking-pipeline output directory, computed from the output files.

Accounting: an *input record* is a passage (every row of ``passages-*.parquet``: DPR lines that parsed,
or the passages an article was split into) plus every record rejected before it became a passage (an
unreadable line/row/page, an empty or too large article, the break of a truncated or broken file:
rejections of stage ``read`` or ``split``). Every passage becomes a sample or a rejection (stage
``filter`` or ``mask``), so ``input_records == samples + rejected`` holds for a complete run.
XML redirects and non-article pages are not input records; the job reports them as ``skipped_by_reason``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ramp.files import filesystem, output_files
from ramp.stats_table import balance_note, count_rows, table_row

PRE_PASSAGE_STAGES = frozenset({"read", "split"})
STATS_FILE = "stats.json"
# Every file of an output directory (what compute_stats reads, and stats.json): a job clears them first.
OUTPUT_FILES = (
    "samples-*.parquet",
    "passages-*.parquet",
    "rejected-*.jsonl",
    STATS_FILE,
    "manifest.json",
    "audit.json",
)


def compute_stats(directory: str, skipped_by_reason: dict[str, int] | None = None) -> dict[str, Any]:
    fs, _ = filesystem(directory)

    def local(path: str) -> str:
        return filesystem(path)[1]

    samples, masks_by_type, samples_by_k = 0, Counter[str](), Counter[str]()
    for path in output_files(directory, "samples-", ".parquet"):
        table = pq.read_table(local(path), filesystem=fs, columns=["num_masks", "masks"])
        samples += table.num_rows
        samples_by_k.update(str(k) for k in table.column("num_masks").to_pylist())
        for masks in table.column("masks").to_pylist():
            masks_by_type.update(m["type"] for m in masks)
    passages = sum(
        pq.read_metadata(local(p), filesystem=fs).num_rows
        for p in output_files(directory, "passages-", ".parquet")
    )
    by_reason, pre_passage = Counter[str](), 0
    for path in output_files(directory, "rejected-", ".jsonl"):
        with fs.open_input_stream(local(path)) as stream:
            for line in stream.read().decode("utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    by_reason[row["reason"]] += 1
                    pre_passage += row["stage"] in PRE_PASSAGE_STAGES
    rejected = sum(by_reason.values())
    return {
        "input_records": passages + pre_passage,
        "samples": samples,
        "rejected": rejected,
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "masks_by_type": dict(sorted(masks_by_type.items())),
        "samples_by_k": dict(sorted(samples_by_k.items())),
        "passages": passages,
        "skipped_by_reason": dict(sorted((skipped_by_reason or {}).items())),
    }


def write_stats(directory: str, stats: dict[str, Any]) -> None:
    fs, root = filesystem(directory)
    with fs.open_output_stream(f"{root}/{STATS_FILE}") as out:
        out.write((json.dumps(stats, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def load_stats(directory: str) -> dict[str, Any]:
    """``stats.json`` if the job wrote one, else the figures computed from the output files."""
    fs, root = filesystem(directory)
    path = f"{root}/{STATS_FILE}"
    if fs.get_file_info(path).type == pafs.FileType.File:
        with fs.open_input_stream(path) as stream:
            loaded: dict[str, Any] = json.loads(stream.read().decode("utf-8"))
            return loaded
    return compute_stats(directory)


def format_stats(stats: dict[str, Any]) -> str:
    """A readable table of the figures."""
    status = balance_note(
        stats["input_records"], {"samples": stats["samples"], "rejected": stats["rejected"]}
    )
    lines = [
        table_row("input records", stats["input_records"], status),
        table_row("passages (search corpus)", stats.get("passages", 0)),
        table_row("samples", stats["samples"]),
        table_row("rejected", stats["rejected"]),
    ]
    for title, key in [
        ("rejected by reason", "rejected_by_reason"),
        ("masks by type", "masks_by_type"),
        ("samples by number of masks", "samples_by_k"),
        ("skipped pages by reason", "skipped_by_reason"),
    ]:
        if stats.get(key):
            lines += [title, *count_rows(stats[key])]
    return "\n".join(lines)
