"""Bounded memory for the Beam jobs on the local runner: the input in chunks, one pipeline run each.

On the local runner every shuffle (Reshuffle, GroupByKey, the sorted shard writers) lives in memory, so a
single pass needs memory in proportion to its input. :func:`run_chunked` cuts a job's input (read tasks or
input files, in order) into consecutive chunks of about ``chunk_mb`` input megabytes and runs the job's
single-pass function once per chunk, so peak memory is set by the chunk size, not by the corpus::

    OUT/samples-00003-of-00004.c0007.parquet   chunk 7's shard 3 (every chunk writes all its shards)
    OUT/.chunks/c0007.json                      chunk 7 is complete: its fingerprint, files (sizes), stats
    OUT/stats.json                              the chunks' stats summed by the job's ``merge``

A chunk runs in ``OUT/.chunks/c0007/``; its files are then renamed into ``OUT`` and its marker is written
last, so a chunk is complete only when all its files and its stats are there. A restart skips complete
chunks (same input, config and chunk plan: the marker's fingerprint) and redoes the rest; any other file of
the job's outputs in ``OUT`` (a half-written chunk, another run's layout) is deleted first. The plan depends
only on the input files and the chunk size, so outputs are byte-identical whatever the worker count.
Remote runners (their shuffle is external), ``chunk_mb=0`` and inputs that fit in one chunk run in one pass
with the single-pass layout (``samples-00003-of-00004.parquet``).

A job whose draw depends on corpus-wide counts (``masking.k_mix: balanced``: P(k | m) from the counts of
passages by m) runs its chunks in two phases (:class:`TwoPhase`), so chunked outputs equal one pass: first
every chunk's expensive half (span finding, or the answerability search) into ``OUT/.chunks/c0007.first/``
with its counts (marker ``c0007.first.json``, written last), then every chunk's draw with the counts summed
over all chunks. A restart skips complete first phases too; a chunk's first phase is deleted once the chunk
is complete (its counts stay in the chunk's marker).
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from ramp.pipelines.runner import is_local_runner
from tqdm import tqdm

from ramp.data.passages import Passage
from ramp.data.sources import decompressed_chunks, iter_lines, parse_dpr_line
from ramp.seeding import stable_seed

DEFAULT_CHUNK_MB = 4.0  # input megabytes per chunk: about 6,000 wiki-18 passages, ~100 MB of pipeline state
COMPRESSED_EXPANSION = 5  # a compressed input byte counts as this many (bz2/gzip text)
CHUNKS_DIR = ".chunks"
PREPARED = ".first"  # a two-phase chunk's first phase: OUT/.chunks/c0007.first/ and c0007.first.json
PREPARED_KEY = "first_phase"  # its counts, kept in the chunk's marker
STATS_FILE = "stats.json"

log = logging.getLogger(__name__)

Stats = dict[str, Any]


@dataclass(frozen=True)
class ChunkedJob:
    """What the driver needs from a job.

    ``run_part(part, directory)`` runs the job's single pass over ``part`` (a list of input items) into
    ``directory`` (writing ``stats.json``) and returns its stats; ``merge`` sums a list of chunk stats into
    the run's; ``output_patterns`` are the job's output globs (``stats.json`` included); ``fingerprint``
    identifies everything besides the input items that decides the outputs (config, input file versions).
    """

    name: str
    output_dir: str
    output_patterns: Sequence[str]
    run_part: Callable[[list[Any], str], Stats]
    merge: Callable[[list[Stats]], Stats]
    fingerprint: str
    two_phase: TwoPhase | None = None


@dataclass(frozen=True)
class TwoPhase:
    """A job whose draw needs corpus-wide counts (``masking.k_mix: balanced``), run in chunks in two phases.

    ``prepare(part, directory)`` runs the expensive half over a chunk (e.g. span finding) into
    ``directory`` and returns its counts (summed over the chunks by :func:`sum_stats`);
    ``finish(prepared_dir, prepared, totals, directory)`` then runs the rest of the chunk from
    ``prepared_dir`` with every chunk's ``totals`` into ``directory`` (the job's outputs and ``stats.json``)
    and returns the chunk's stats. A chunk's prepared directory is kept until the chunk is complete.
    """

    prepare: Callable[[list[Any], str], Stats]
    finish: Callable[[str, Stats, Stats, str], Stats]


def chunk_bytes(chunk_mb: float | None) -> int:
    """Input bytes per chunk: ``chunk_mb`` megabytes (None: :data:`DEFAULT_CHUNK_MB`; 0: one pass)."""
    if chunk_mb is not None and chunk_mb < 0:
        raise ValueError(f"chunk_mb must be >= 0, got {chunk_mb}")
    return int((DEFAULT_CHUNK_MB if chunk_mb is None else chunk_mb) * 2**20)


def input_weight(path: str, size: int) -> int:
    """Bytes a read of ``size`` bytes of ``path`` counts for: compressed files count expanded."""
    return size * COMPRESSED_EXPANSION if path.endswith((".bz2", ".gz")) else size


def pack(items: Sequence[Any], weights: Sequence[int], limit: int) -> list[list[Any]]:
    """Consecutive items grouped into chunks of at most ``limit`` weight (an item over it: alone)."""
    parts: list[list[Any]] = []
    current: list[Any] = []
    total = 0
    for item, weight in zip(items, weights, strict=True):
        if current and total + weight > limit:
            parts.append(current)
            current, total = [], 0
        current.append(item)
        total += weight
    if current:
        parts.append(current)
    return parts


def line_ranges(
    path: str, limit: int, group_key: Callable[[bytes], str | None] | None = None
) -> list[tuple[int, int | None, int]]:
    """An uncompressed line file cut into ``(start, end, first_line)`` byte ranges of about ``limit`` bytes.

    Cuts fall at line starts (``end`` None: to the end of the file; ``first_line`` numbers from 1). With
    ``group_key``, a cut never separates consecutive lines of the same non-None key (e.g. the passages of one
    article), so a range may run past ``limit`` to the end of its group.
    """
    ranges: list[tuple[int, int | None, int]] = []
    start, first_line, position, previous = 0, 1, 0, None
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        for line_no, line in enumerate(iter_lines(decompressed_chunks(raw, path)), start=1):
            reached = position - start >= limit  # a cut may fall before this line
            near = reached or position + len(line) + 1 - start >= limit  # ... or before the next
            key = group_key(line) if group_key is not None and near else None
            if reached and (key is None or key != previous):
                ranges.append((start, position, first_line))
                start, first_line = position, line_no
            position += len(line) + 1
            previous = key
    ranges.append((start, None, first_line))
    return ranges


def chunk_tag(index: int) -> str:
    return f"c{index:04d}"


def chunk_file_name(name: str, tag: str) -> str:
    """``samples-00003-of-00004.parquet`` -> ``samples-00003-of-00004.c0007.parquet``."""
    stem, dot, ext = name.partition(".")
    return f"{stem}.{tag}{dot}{ext}"


def _matching(directory: str, patterns: Sequence[str]) -> list[str]:
    results = FileSystems.match([f"{directory}/{p}" for p in patterns])
    return sorted({m.path for result in results for m in result.metadata_list})


def _sizes(paths: Sequence[str]) -> dict[str, int]:
    if not paths:
        return {}
    return {m.path: m.size_in_bytes for r in FileSystems.match(list(paths)) for m in r.metadata_list}


def _read_json(path: str) -> Any:
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            return json.loads(raw.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: str, value: Any) -> None:
    """Write ``value`` to ``path`` whole or not at all (a temporary file renamed)."""
    partial = f"{path}.partial"
    with FileSystems.create(partial, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        out.write((json.dumps(value, indent=2) + "\n").encode("utf-8"))
    FileSystems.rename([partial], [path])


def _delete_tree(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def part_fingerprint(job: ChunkedJob, part: Sequence[Any]) -> str:
    """What a chunk's outputs depend on: the job's fingerprint and the chunk's input items."""
    return f"{stable_seed(json.dumps([job.name, job.fingerprint, [repr(i) for i in part]])):016x}"


def _complete(marker: Any, fingerprint: str, output_dir: str) -> bool:
    if not isinstance(marker, dict) or marker.get("fingerprint") != fingerprint:
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or "stats" not in marker:
        return False
    paths = [f"{output_dir}/{name}" for name in files]
    sizes = {posixpath.basename(p): s for p, s in _sizes(paths).items()}
    return sizes == files


def run_chunked(
    job: ChunkedJob,
    items: Sequence[Any],
    weights: Sequence[int],
    chunk_mb: float | None,
    pipeline_args: Sequence[str] = (),
    split: Callable[[list[Any], int], tuple[list[Any], list[int]]] | None = None,
) -> Stats:
    """Run ``job`` over ``items`` (input slices in order, each of ``weights`` input bytes) in chunks of about
    ``chunk_mb`` megabytes on the local runner, else in one pass; returns the run's stats.

    ``split(items, limit)`` may cut items larger than ``limit`` into smaller ones (with their weights)
    before they are packed into chunks.
    """
    limit = chunk_bytes(chunk_mb)
    out = job.output_dir.rstrip("/")
    parts = [list(items)]
    if limit and is_local_runner(pipeline_args) and sum(weights) > limit:
        if split is not None:
            items, weights = split(list(items), limit)
        parts = pack(items, weights, limit)
    if len(parts) > 1:
        return _run_parts(job, out, parts)
    _delete_tree(f"{out}/{CHUNKS_DIR}")  # one pass: no chunk of an earlier run may be taken as complete
    return job.run_part(parts[0], out)


def _run_parts(job: ChunkedJob, out: str, parts: list[list[Any]]) -> Stats:
    chunks_dir = f"{out}/{CHUNKS_DIR}"
    if not FileSystems.exists(chunks_dir):
        FileSystems.mkdirs(chunks_dir)
    fingerprints = [part_fingerprint(job, part) for part in parts]
    markers = [_read_json(f"{chunks_dir}/{chunk_tag(i)}.json") for i in range(len(parts))]
    done = [_complete(m, fp, out) for m, fp in zip(markers, fingerprints, strict=True)]
    if job.two_phase is not None:  # a chunk drawn in one phase (an older run) is redone
        done = [ok and PREPARED_KEY in m for m, ok in zip(markers, done, strict=True)]
    keep = {f"{out}/{name}" for m, ok in zip(markers, done, strict=True) if ok for name in m["files"]}
    stale = [p for p in _matching(out, job.output_patterns) if p not in keep]
    kept_work = {f"{chunk_tag(i)}.json" for i, ok in enumerate(done) if ok}
    if job.two_phase is not None:  # the complete first phases of incomplete chunks
        for index, fingerprint in enumerate(fingerprints):
            tag = chunk_tag(index)
            marker = _read_json(f"{chunks_dir}/{tag}{PREPARED}.json")
            if not done[index] and _complete(marker, fingerprint, f"{chunks_dir}/{tag}{PREPARED}"):
                kept_work |= {f"{tag}{PREPARED}.json", f"{tag}{PREPARED}"}
    stale += [p for p in _matching(chunks_dir, ["c*"]) if posixpath.basename(p) not in kept_work]
    if stale:
        FileSystems.delete(stale)
    if any(done):
        log.info("%s: %d of %d chunks already complete, skipped", job.name, sum(done), len(parts))
    prepared = _prepare_parts(job, out, parts, fingerprints, markers, done)
    totals = sum_stats(prepared) if job.two_phase is not None else {}
    stats: list[Stats] = []
    for index, part in enumerate(tqdm(parts, desc=f"{job.name} chunks", unit="chunk")):
        if done[index]:
            stats.append(markers[index]["stats"])
        else:
            tag, fingerprint = chunk_tag(index), fingerprints[index]
            stats.append(_run_one(job, out, part, tag, fingerprint, (prepared[index], totals)))
    merged = job.merge(stats)
    _write_json(f"{out}/{STATS_FILE}", merged)
    return merged


def _prepare_parts(
    job: ChunkedJob,
    out: str,
    parts: list[list[Any]],
    fingerprints: list[str],
    markers: list[Any],
    done: list[bool],
) -> list[Stats]:
    """The first phase of a two-phase job over every chunk (complete chunks and complete first phases
    skipped): each chunk's counts, by chunk (empty for a one-phase job)."""
    two_phase = job.two_phase
    if two_phase is None:
        return [{} for _ in parts]
    chunks_dir = f"{out}/{CHUNKS_DIR}"
    prepared: list[Stats | None] = []
    for index, fingerprint in enumerate(fingerprints):
        directory = f"{chunks_dir}/{chunk_tag(index)}{PREPARED}"
        marker = markers[index] if done[index] else _read_json(f"{directory}.json")
        ready = done[index] or _complete(marker, fingerprint, directory)
        prepared.append(marker[PREPARED_KEY if done[index] else "stats"] if ready else None)
    if any(p is not None for p in prepared):
        count = sum(p is not None for p in prepared)
        log.info("%s: first phase of %d of %d chunks already complete, skipped", job.name, count, len(parts))
    todo = [i for i, p in enumerate(prepared) if p is None]
    for index in tqdm(todo, desc=f"{job.name} chunks, first phase", unit="chunk"):
        directory = f"{chunks_dir}/{chunk_tag(index)}{PREPARED}"
        _delete_tree(directory)
        stats = two_phase.prepare(parts[index], directory)
        files = {posixpath.basename(p): s for p, s in sorted(_sizes(_matching(directory, ["*"])).items())}
        _write_json(f"{directory}.json", {"fingerprint": fingerprints[index], "files": files, "stats": stats})
        prepared[index] = stats
    return [p for p in prepared if p is not None]


def _run_one(
    job: ChunkedJob, out: str, part: list[Any], tag: str, fingerprint: str, prepared: tuple[Stats, Stats]
) -> Stats:
    """One chunk in its own directory; its files renamed into ``out``; its marker written last (then the
    first phase's directory of a two-phase job is deleted)."""
    work = f"{out}/{CHUNKS_DIR}/{tag}"
    _delete_tree(work)
    first_phase = f"{work}{PREPARED}"
    if job.two_phase is None:
        stats = job.run_part(part, work)
    else:
        stats = job.two_phase.finish(first_phase, prepared[0], prepared[1], work)
    written = [p for p in _matching(work, job.output_patterns) if posixpath.basename(p) != STATS_FILE]
    targets = [f"{out}/{chunk_file_name(posixpath.basename(p), tag)}" for p in written]
    FileSystems.rename(written, targets)
    files = {posixpath.basename(p): s for p, s in sorted(_sizes(targets).items())}
    marker = {"fingerprint": fingerprint, "files": files, "stats": stats}
    if job.two_phase is not None:
        marker[PREPARED_KEY] = prepared[0]
    _write_json(f"{out}/{CHUNKS_DIR}/{tag}.json", marker)
    _delete_tree(work)
    if job.two_phase is not None:
        FileSystems.delete([first_phase, f"{first_phase}.json"])
    return stats


def sum_stats(
    parts: Sequence[Stats], derived: frozenset[str] = frozenset(), settings: frozenset[str] = frozenset()
) -> Stats:
    """Chunk stats summed key by key: counts (ints) added, dicts of counts summed (keys sorted), anything
    else, and the ``settings`` (config values), equal in every chunk; keys in ``derived`` (ratios) are
    left to the caller."""
    merged: Stats = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        if key in derived:
            continue
        values = [part[key] for part in parts if key in part]
        merged[key] = _sum_values(key, values, key in settings)
    return merged


def _sum_values(key: str, values: list[Any], setting: bool) -> Any:
    if not setting and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return sum(values)
    if all(isinstance(v, dict) for v in values):
        summed = sum_stats(values)
        return dict(sorted(summed.items()))
    if any(v != values[0] for v in values):
        raise ValueError(f"chunk stats disagree on {key!r}: {values[:3]}")
    return values[0]


# --- the jobs' inputs ------------------------------------------------------------------------------------


def _versions(paths: Sequence[str]) -> dict[str, Any]:
    """Each input file's metadata (size, modification time), by path."""
    found = {m.path: m for r in FileSystems.match(sorted(set(paths))) for m in r.metadata_list}
    missing = sorted(set(paths) - set(found))
    if missing:
        raise FileNotFoundError(f"input files not found: {missing[:5]}")
    return found


def _versioned(job: ChunkedJob, meta: dict[str, Any]) -> ChunkedJob:
    files = [(p, m.size_in_bytes, m.last_updated_in_seconds) for p, m in sorted(meta.items())]
    return replace(job, fingerprint=json.dumps([job.fingerprint, files]))


def dpr_article(line: bytes) -> str | None:
    record = parse_dpr_line(line, "")
    return record.article_id if isinstance(record, Passage) else None


def run_read_tasks(
    job: ChunkedJob,
    tasks: Sequence[Any],
    fmt: str,
    keep_articles_whole: bool,
    chunk_mb: float | None,
    pipeline_args: Sequence[str] = (),
) -> Stats:
    """``data build`` in chunks of its read tasks (``ramp_data.ReadTask``: a file, or a byte range of one).

    An uncompressed JSONL file (``dpr``, ``jsonl``) larger than a chunk is cut into line ranges; with
    ``keep_articles_whole`` (DPR input, ``masking.exclude: article``) a cut never falls inside a run of one
    article's passages, so each passage sees the same siblings as in one pass (wiki-18 keeps an article's
    passages together). Compressed files and single-stream XML are never cut: each is at most one chunk.
    """
    meta = _versions([t.path for t in tasks])

    def weight(task: Any) -> int:
        size = meta[task.path].size_in_bytes
        if task.start is not None:
            size = (size if task.end is None else task.end) - task.start
        return input_weight(task.path, size)

    def split(items: list[Any], limit: int) -> tuple[list[Any], list[int]]:
        group_key = dpr_article if keep_articles_whole and fmt == "dpr" else None
        cut: list[Any] = []
        for task in items:
            splittable = (
                fmt in ("dpr", "jsonl") and task.start is None and not task.path.endswith((".bz2", ".gz"))
            )
            if splittable and weight(task) > limit:
                ranges = line_ranges(task.path, limit, group_key)
                cut += [replace(task, start=s, end=e, first_line=n) for s, e, n in ranges]
            else:
                cut.append(task)
        return cut, [weight(t) for t in cut]

    return run_chunked(
        _versioned(job, meta), tasks, [weight(t) for t in tasks], chunk_mb, pipeline_args, split
    )


def run_input_files(
    job: ChunkedJob, files: Sequence[str], chunk_mb: float | None, pipeline_args: Sequence[str] = ()
) -> Stats:
    """A job over whole input files (e.g. ``samples-*.parquet``) in chunks of consecutive files."""
    meta = _versions(files)
    weights = [meta[f].size_in_bytes for f in files]
    return run_chunked(_versioned(job, meta), list(files), weights, chunk_mb, pipeline_args)


# --- summing the jobs' stats ---------------------------------------------------------------------------


def merge_answerability_stats(parts: Sequence[Stats]) -> Stats:
    """``data answerability`` stats of chunks: counts summed, answerable fractions recomputed."""
    merged = sum_stats(parts, frozenset({"answerable_fraction_by_type"}), frozenset({"k", "keep"}))
    found, checked = merged.get("masks_answerable_by_type", {}), merged.get("masks_checked_by_type", {})
    fractions = {kind: round(found.get(kind, 0) / total, 4) for kind, total in checked.items() if total}
    return {k: fractions if k == "answerable_fraction_by_type" else merged[k] for k in parts[0]}


def cot_counts(parts: Sequence[Stats]) -> dict[str, int]:
    """The counts behind ``data cot`` chunk stats (``cot_builder.summarize``'s input), summed: the means
    are integer sums over ``kept``, so they are recovered exactly."""
    counts: Counter[str] = Counter()
    for stats in parts:
        kept = stats["kept"]
        counts.update(samples_in=stats["samples_in"], kept=kept, rejected=stats["rejected"])
        counts.update({f"reason:{r}": n for r, n in stats["rejected_by_reason"].items()})
        counts["num_searches"] += round(stats["mean_searches_kept"] * kept)
        counts["score_x1e6"] += round(stats["mean_score_kept"] * 1e6 * kept)
    return dict(counts)
