"""Bounded memory for the Beam jobs on the local runner: the input in chunks, one pipeline run each.

On the local runner every shuffle (Reshuffle, GroupByKey, the sorted shard writers) lives in memory, so a
single pass needs memory in proportion to its input. :func:`run_chunked` cuts a job's input (its items:
read tasks or input files, in order) into consecutive chunks of about ``chunk_mb`` input megabytes and
runs the job's single pass once per chunk, so peak memory is set by the chunk size, not by the corpus::

    OUT/samples-00003-of-00004.c0007.parquet   chunk 7's shard 3 (every chunk writes all its shards)
    OUT/.chunks/c0007.json                      chunk 7's marker (``ramp.stages``), written last
    OUT/.chunks/c0007.stats.json                its stats
    OUT/stats.json                              the chunks' stats merged by the job

Each chunk is a stage of :mod:`ramp.stages`: done when its marker matches the job's settings, the chunk's
input items and the content of its input files, and its files are there as recorded. It runs in
``OUT/.chunks/c0007/``, its files are then renamed into ``OUT`` and its marker is written last, so a restart
skips complete chunks and redoes the rest (a half-written chunk too); any other file of the job's outputs in
``OUT`` (another run's layout) is deleted first. The plan depends only on the input and the chunk size, so
outputs are byte-identical whatever the worker count. Remote runners (their shuffle is external), remote
paths, ``chunk_mb=0`` and inputs that fit in one chunk run in one pass with the single-pass layout
(``samples-00003-of-00004.parquet``).

A job whose draw needs corpus-wide counts (``two_phase``; e.g. ``masking.k_mix: balanced``: P(k | m) from
the counts of passages by m) runs each chunk in two phases, so chunked outputs equal one pass: first every
chunk's expensive half (its stage ``c0007.first``: span finding, or the answerability search) into
``OUT/.chunks/c0007.first/`` with its counts, then every chunk's draw with the counts summed over all chunks
(the chunk's own counts and the totals are settings of its stage, so a change of any chunk's counts redraws
every chunk). A chunk's first phase is deleted once the chunk is complete; its counts stay in its marker.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from apache_beam.io.filesystems import FileSystems
from ramp.pipelines.runner import is_local_runner
from tqdm import tqdm

from ramp.stages import Stage, StageRunner

DEFAULT_CHUNK_MB = 4.0  # input megabytes per chunk: about 6,000 wiki-18 passages, ~100 MB of pipeline state
COMPRESSED_EXPANSION = 5  # a compressed input byte counts as this many (bz2/gzip text)
CHUNKS_DIR = ".chunks"
FIRST = ".first"  # a two-phase chunk's first phase: stage c0007.first, directory .chunks/c0007.first/
COUNTS_FILE = "counts.json"  # the first phase's counts, in its directory
STATS_FILE = "stats.json"

log = logging.getLogger(__name__)

Stats = dict[str, Any]


class ChunkedJob(Protocol):
    """What the driver needs from a job (a single-pass pipeline over a part of its input items)."""

    name: str  # shown on progress bars and in logs
    settings: Any  # JSON-able: everything besides the input items that decides the outputs
    output_patterns: Sequence[str]  # globs of the files a single pass writes (stats.json aside)
    summary_files: Sequence[str]  # run-level files made from every chunk: stale once a chunk must run
    two_phase: bool  # the draw needs corpus-wide counts: a :class:`TwoPhaseJob` in two phases per chunk

    def inputs(self, part: list[Any]) -> list[str]:
        """The files a part of the input items reads."""
        ...

    def outputs(self, part: list[Any]) -> list[str]:
        """The names of the files a single pass over ``part`` writes (stats.json aside)."""
        ...

    def run(self, part: list[Any], directory: str) -> Stats:
        """The single pass over ``part`` into ``directory`` (stats.json included); its stats."""
        ...

    def merge(self, parts: list[Stats]) -> Stats:
        """The run's stats from its chunks'."""
        ...


@runtime_checkable
class TwoPhaseJob(ChunkedJob, Protocol):
    """A job whose draw needs corpus-wide counts (e.g. ``masking.k_mix: balanced``), when ``two_phase``."""

    def first(self, part: list[Any], directory: str) -> Stats:
        """Two phases: the expensive half over ``part`` into ``directory``; its counts."""
        ...

    def second(self, first: str, counts: Stats, totals: Stats, directory: str) -> Stats:
        """Two phases: the rest of a chunk from its first phase ``first`` with every chunk's counts summed
        (``totals``) into ``directory`` (stats.json included); its stats."""
        ...


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


def chunk_tag(index: int) -> str:
    return f"c{index:04d}"


def chunk_file_name(name: str, tag: str) -> str:
    """``samples-00003-of-00004.parquet`` -> ``samples-00003-of-00004.c0007.parquet``."""
    stem, dot, ext = name.partition(".")
    return f"{stem}.{tag}{dot}{ext}"


def run_chunked(
    job: ChunkedJob,
    output_dir: str,
    items: Sequence[Any],
    weights: Sequence[int],
    chunk_mb: float | None,
    pipeline_args: Sequence[str] = (),
    split: Callable[[list[Any], int], tuple[list[Any], list[int]]] | None = None,
) -> Stats:
    """Run ``job`` over ``items`` (input slices in order, each of ``weights`` input bytes) into
    ``output_dir`` in chunks of about ``chunk_mb`` megabytes on the local runner, else in one pass;
    returns the run's stats. ``split(items, limit)`` may cut items larger than ``limit`` into smaller ones
    (with their weights) before they are packed into chunks."""
    limit = chunk_bytes(chunk_mb)
    out = output_dir.rstrip("/")
    local = "://" not in out and not any("://" in str(p) for p in job.inputs(list(items)))
    parts = [list(items)]
    if limit and local and is_local_runner(pipeline_args) and sum(weights) > limit:
        if split is not None:
            items, weights = split(list(items), limit)
        parts = pack(items, weights, limit)
    if len(parts) > 1:
        return _Chunks(job, Path(out), parts).run()
    chunks = f"{out}/{CHUNKS_DIR}"  # one pass: no chunk of an earlier run may be taken as complete
    if FileSystems.exists(chunks):
        FileSystems.delete([chunks])
    return job.run(parts[0], out)


class _Chunks:
    """One chunked run: a stage per chunk (two per chunk of a two-phase job) in ``OUT/.chunks``."""

    def __init__(self, job: ChunkedJob, out: Path, parts: list[list[Any]]) -> None:
        self.job, self.out, self.parts = job, out, parts
        self.state = out / CHUNKS_DIR
        self.runner = StageRunner(self.state, echo=log.debug)
        self.tags = [chunk_tag(i) for i in range(len(parts))]
        if job.two_phase and not isinstance(job, TwoPhaseJob):
            raise TypeError(f"{job.name}: a two-phase job needs first() and second()")
        self.two: TwoPhaseJob | None = job if isinstance(job, TwoPhaseJob) and job.two_phase else None

    def run(self) -> Stats:
        job, count = self.job, len(self.parts)
        counts: list[Stats | None] = [None] * count
        if self.two is not None:
            counts = [self._recorded_counts(i) for i in range(count)]
        stages = self._stages(counts)
        complete = (
            [self.runner.done(stage) for stage in stages] if stages else [c is not None for c in counts]
        )
        self._remove_stale(all(complete))
        if any(complete):
            log.info("%s: %d of %d chunks already complete, skipped", job.name, sum(complete), count)
        if stages is None:
            stages = self._stages(self._first_phases(counts))
            assert stages is not None, "every chunk has its counts"
        stats: list[Stats] = []
        for index, stage in enumerate(tqdm(stages, desc=f"{job.name} chunks", unit="chunk")):
            self.runner.run_one(stage)
            stats.append(_read_json(self._stats_path(index)))
        if self.two is not None:  # every chunk is complete: its first phase has served
            for tag in self.tags:
                shutil.rmtree(self.state / f"{tag}{FIRST}", ignore_errors=True)
                self.runner.marker(f"{tag}{FIRST}").unlink(missing_ok=True)
        merged = job.merge(stats)
        _write_if_changed(self.out / STATS_FILE, json.dumps(merged, indent=2) + "\n")
        return merged

    def _stages(self, counts: list[Stats | None]) -> list[Stage] | None:
        """Every chunk's stage; None while a two-phase chunk's counts are unknown."""
        if self.two is None:
            return [self._chunk(i, None, None) for i in range(len(self.parts))]
        if any(c is None for c in counts):
            return None
        totals = _sum_counts([c for c in counts if c is not None])
        return [self._chunk(i, counts[i], totals) for i in range(len(self.parts))]

    def _settings(self, index: int, **extra: Any) -> dict[str, Any]:
        part = [repr(item) for item in self.parts[index]]
        return {"job": self.job.name, "settings": self.job.settings, "part": part, **extra}

    def _stats_path(self, index: int) -> Path:
        return self.state / f"{self.tags[index]}.stats.json"

    def _chunk(self, index: int, counts: Stats | None, totals: Stats | None) -> Stage:
        """Chunk ``index``'s stage (two phases: its draw, with its counts and the totals as settings)."""
        tag, part = self.tags[index], self.parts[index]
        outputs = [self.out / chunk_file_name(name, tag) for name in self.job.outputs(part)]
        extra = {"counts": counts, "totals": totals} if self.two is not None else {}

        def action() -> None:
            work = self.state / tag
            shutil.rmtree(work, ignore_errors=True)
            if self.two is not None:
                assert counts is not None and totals is not None, "the first phases ran"
                self.runner.run_one(self._first(index))  # (redone if deleted after an earlier draw)
                first = str(self.state / f"{tag}{FIRST}")
                stats = self.two.second(first, counts, totals, str(work))
            else:
                stats = self.job.run(part, str(work))
            for name in self.job.outputs(part):
                (work / name).rename(self.out / chunk_file_name(name, tag))
            self._stats_path(index).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
            shutil.rmtree(work)

        return Stage(
            tag,
            action,
            self._settings(index, **extra),
            tuple(Path(p) for p in self.job.inputs(part)),
            (*outputs, self._stats_path(index)),
            f"{self.job.name}: chunk {index + 1} of {len(self.parts)}",
        )

    def _first(self, index: int) -> Stage:
        tag, part = self.tags[index], self.parts[index]
        directory = self.state / f"{tag}{FIRST}"

        def action() -> None:
            assert self.two is not None, "a two-phase job"
            counts = self.two.first(part, str(directory))
            (directory / COUNTS_FILE).write_text(json.dumps(counts, indent=2) + "\n", encoding="utf-8")

        settings = self._settings(index, phase="first")
        return Stage(
            f"{tag}{FIRST}", action, settings, tuple(Path(p) for p in self.job.inputs(part)), (directory,)
        )

    def _recorded_counts(self, index: int) -> Stats | None:
        """A complete chunk's counts, from its marker: current when the chunk is still complete for the
        totals it was drawn with (its settings and input unchanged), else None."""
        record = self.runner.recorded(self.tags[index])
        settings = record.get("settings") if record else None
        if not isinstance(settings, dict) or settings.get("counts") is None:
            return None
        stage = self._chunk(index, settings["counts"], settings.get("totals"))
        return dict(settings["counts"]) if self.runner.done(stage) else None

    def _first_phases(self, counts: list[Stats | None]) -> list[Stats | None]:
        """Every chunk's counts: a complete chunk's recorded ones, else its first phase's."""
        todo = [i for i, c in enumerate(counts) if c is None]
        ready = [i for i in todo if self.runner.done(self._first(i))]
        if ready:
            log.info(
                "%s: first phase of %d of %d chunks already complete, skipped",
                self.job.name,
                len(ready),
                len(todo),
            )
        found = list(counts)
        for index in tqdm(todo, desc=f"{self.job.name} chunks, first phase", unit="chunk"):
            self.runner.run_one(self._first(index))
            found[index] = _read_json(self.state / f"{self.tags[index]}{FIRST}" / COUNTS_FILE)
        return found

    def _remove_stale(self, all_complete: bool) -> None:
        """Delete the job's files in OUT that no chunk of this plan writes (another run's layout), the run's
        summary files unless every chunk is complete, and everything in ``.chunks`` but this plan's stages
        (e.g. the work directory of a killed chunk)."""
        declared = {
            self.out / chunk_file_name(name, tag)
            for tag, part in zip(self.tags, self.parts, strict=True)
            for name in self.job.outputs(part)
        }
        stale = [
            p for pattern in self.job.output_patterns for p in self.out.glob(pattern) if p not in declared
        ]
        if not all_complete:
            stale += [self.out / name for name in (STATS_FILE, *self.job.summary_files)]
        self.state.mkdir(parents=True, exist_ok=True)
        suffixes = (".json", ".stats.json", FIRST, f"{FIRST}.json")
        keep = {f"{tag}{suffix}" for tag in self.tags for suffix in suffixes}
        stale += [p for p in self.state.iterdir() if p.name not in keep]
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


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


def _sum_counts(counts: list[Stats]) -> Stats:
    """First-phase counts summed over the chunks (counts only: anything else differs by chunk)."""
    return sum_stats([{k: v for k, v in c.items() if isinstance(v, dict | int)} for c in counts])


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (a temporary file renamed), unless it holds it already."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
