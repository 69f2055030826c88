"""The leakage guard's start-of-stage check: are a samples directory's source passages in the index?

Exclusions are by document id, so they only hide the source passage when the index holds it *under the
same id*. Samples cut from one corpus and searched against another (enwiki XML samples against a wiki-18
index) exclude nothing, while the same text may sit there under other ids. Every stage that searches for
samples calls :func:`check_index_covers_samples` on start:

1. when the index manifest's corpus fingerprint equals the one the samples recorded
   (``manifest.json``, written by ``ramp data build``), the check passes at once;
2. otherwise a seeded sample of the source passages is searched (each passage's opening words, no
   exclusions): a passage counts as present when a top hit has its id and its text. Below
   ``min_found`` the stage stops with :class:`ForeignIndexError`, saying what to do; with
   ``allow_foreign_index`` it only warns (proceeding knowingly).
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ramp.files import filesystem, output_files
from ramp.retrieval.base import Retriever
from ramp.text import normalize

SAMPLES_MANIFEST = "manifest.json"
ALLOW_FLAG = "--allow-foreign-index"
_log = logging.getLogger(__name__)


class ForeignIndexError(RuntimeError):
    """The samples' source passages are not in the index the stage searches."""


def write_samples_manifest(directory: str, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (corpus fingerprint, id scheme, the data config) into a samples directory."""
    fs, root = filesystem(directory)
    with fs.open_output_stream(f"{root}/{SAMPLES_MANIFEST}") as f:
        f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_samples_manifest(directory: str) -> dict[str, Any] | None:
    """The samples directory's ``manifest.json``, or None when it has none (built before manifests)."""
    fs, root = filesystem(directory)
    path = f"{root}/{SAMPLES_MANIFEST}"
    if fs.get_file_info(path).type.name == "NotFound":
        return None
    with fs.open_input_stream(path) as f:
        manifest: dict[str, Any] = json.loads(f.read().decode("utf-8"))
    return manifest


def _source_passages(samples_dir: str, count: int, seed: int) -> list[tuple[str, str]]:
    """``(passage_id, passage)`` of up to ``count`` samples, a seeded draw over all of them (files and rows
    that do not read as samples are skipped here: the stage itself rejects them, with the reason)."""
    fs, _ = filesystem(samples_dir)
    rows: list[tuple[str, str]] = []
    for path in output_files(samples_dir, "samples-", ".parquet"):
        try:
            table = pq.read_table(filesystem(path)[1], filesystem=fs, columns=["passage_id", "passage"])
        except (OSError, ValueError, pa.ArrowException):
            continue
        pairs = zip(table.column("passage_id").to_pylist(), table.column("passage").to_pylist(), strict=True)
        rows += [(pid, text) for pid, text in pairs if isinstance(pid, str) and isinstance(text, str)]
    rows.sort()
    return random.Random(seed).sample(rows, min(count, len(rows)))


def check_index_covers_samples(
    samples_dir: str,
    retriever: Retriever,
    index_manifest: dict[str, Any] | None = None,
    allow_foreign_index: bool = False,
    sample_size: int = 50,
    min_found: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Stop (:class:`ForeignIndexError`) unless ``samples_dir``'s source passages are in the index.

    ``index_manifest``: the local index's ``ramp-manifest.json``, when there is one. Returns what was
    checked (``{"method", "found", "checked"}``).
    """
    samples_manifest = read_samples_manifest(samples_dir) or {}
    fingerprint = samples_manifest.get("corpus_fingerprint")
    if fingerprint and index_manifest and index_manifest.get("corpus_fingerprint") == fingerprint:
        return {"method": "fingerprint", "found": 1.0, "checked": 0}
    passages = _source_passages(samples_dir, sample_size, seed)
    if not passages:
        return {"method": "search", "found": 1.0, "checked": 0}
    queries = [" ".join(text.split()[:30]) for _, text in passages]
    results = retriever.search(queries, k=5)
    found = sum(
        any(hit.doc_id == pid and _same_text(hit.text, text) for hit in hits)
        for (pid, text), hits in zip(passages, results, strict=True)
    )
    share = found / len(passages)
    report = {"method": "search", "found": round(share, 4), "checked": len(passages)}
    if share >= min_found:
        return report
    message = (
        f"only {found} of {len(passages)} sampled source passages of {samples_dir} are in the index under "
        "their own ids, so excluding a sample's passage by id would hide nothing and the search could return "
        "the passage it was cut from (or a copy under another id). Build the index from the samples' own "
        f"corpus (`ramp index build --corpus {samples_dir} --index DIR`) and search that, or pass "
        f"{ALLOW_FLAG} to proceed knowingly."
    )
    if not allow_foreign_index:
        raise ForeignIndexError(message)
    _log.warning("%s (proceeding: %s)", message, ALLOW_FLAG)
    return report


def _same_text(hit_text: str, passage: str) -> bool:
    return normalize(hit_text, "ramp") == normalize(passage, "ramp")
