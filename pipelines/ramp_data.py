"""The masking pipeline: Wikipedia (DPR JSONL, article JSONL/Parquet, MediaWiki XML) -> RAMP samples.

One pipeline (:func:`build`), each stage a composite transform: ReadRecords -> SplitArticles (articles) /
GroupByArticle (DPR passages, only with ``masking.exclude: article``) -> FindSpans (cheap pre-filter,
batched span extraction -- spaCy NER or an LLM endpoint -- and eligibility) -> DrawMasks (with
``masking.k_mix: balanced`` the passages are first counted by how many masks they allow, a side input) ->
WriteOutputs (``samples-*.parquet``, ``passages-*.parquet``, ``rejected-*.jsonl``), then ``stats.json``
and ``manifest.json`` (the corpus fingerprint and id scheme of the passages, and the config). Rejections
travel as a tagged output and are counted per reason with Beam Metrics. :func:`run_build` runs it, in
chunks on the local runner (:mod:`ramp.pipelines.chunks`, :class:`BuildJob`).
Nothing here is runner-specific: local runs use the FnApiRunner (``--workers N`` > 1: N processes), other
runners (Dataflow, Flink, Spark) are chosen with ordinary Beam pipeline options.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from ramp.pipelines.chunks import input_weight, run_chunked, sum_stats
from ramp.pipelines.io import WriteJsonlShards, WriteParquetShards, clear_outputs, shard_path
from ramp.pipelines.runner import LOCAL, BeamRun, count_allowed, split_allowed
from ramp.pipelines.samples_io import ReadSamples

from ramp.config import CONFIG_DIR, load_config
from ramp.data.config import DataConfig
from ramp.data.masking import allowed_masks, eligible_spans, k_probabilities, sample_from_spans
from ramp.data.passages import PASSAGE_SCHEMA, Passage, passage_id
from ramp.data.rejections import Rejection
from ramp.data.samples import SAMPLE_SCHEMA
from ramp.data.sources import (
    INDEX_SUFFIXES,
    Article,
    SkippedPage,
    TaggedPassage,
    decompressed_chunks,
    iter_lines,
    multistream_index_candidates,
    multistream_ranges,
    parse_article_line,
    parse_dpr_line,
    passage_spans,
    read_jsonl,
    read_parquet,
    read_xml,
)
from ramp.data.spans import Span, TaggedExtractor, prefilter, span_extractor
from ramp.data.splitting import split_passages
from ramp.data.stats import OUTPUT_FILES, compute_stats, output_files, write_stats
from ramp.data.wikitext import wikitext_to_text
from ramp.retrieval.indexing import ID_SCHEMES, corpus_fingerprint
from ramp.retrieval.leakage import read_samples_manifest, write_samples_manifest

METRICS_NAMESPACE = "ramp_data"
REJECTED = "rejected"
# An explicit path: a bare "data" would resolve to the repository's data/ folder.
DEFAULT_CONFIG = str(CONFIG_DIR / "data.yaml")

# A passage on its way to masking, with the corpus ids its sample must exclude (besides its own).
PassageTask = tuple[Passage, tuple[str, ...]]
# ... and its eligible spans.
SpanTask = tuple[Passage, tuple[str, ...], list[Span]]


def _reject(rejection: Rejection) -> beam.pvalue.TaggedOutput:
    Metrics.counter(METRICS_NAMESPACE, f"rejected_{rejection.reason}").inc()
    return beam.pvalue.TaggedOutput(REJECTED, rejection)


@dataclass(frozen=True)
class ReadTask:
    """One file, or one byte range ``[start, end)`` of a multistream XML dump or of a JSONL file (cut at
    line starts by ``pipelines.chunks``; its first line is line ``first_line`` of the file)."""

    path: str
    start: int | None = None
    end: int | None = None
    first_line: int = 1

    @property
    def line_range(self) -> tuple[int | None, int | None, int]:
        return self.start, self.end, self.first_line


def plan_read_tasks(patterns: Sequence[str], fmt: str, streams_per_task: int) -> list[ReadTask]:
    """Expand globs into read tasks; multistream dumps with an index become many byte-range tasks."""
    paths = sorted(
        {m.path for result in FileSystems.match(list(patterns)) for m in result.metadata_list} - {""}
    )
    if fmt == "xml":
        paths = [p for p in paths if not p.endswith(INDEX_SUFFIXES)]
    if not paths:
        raise FileNotFoundError(f"no input files match {list(patterns)}")
    tasks: list[ReadTask] = []
    for path in paths:
        index = (
            next((i for i in multistream_index_candidates(path) if FileSystems.exists(i)), None)
            if fmt == "xml"
            else None
        )
        if index is None:
            tasks.append(ReadTask(path))
            continue
        with FileSystems.open(index, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            lines = list(iter_lines(decompressed_chunks(raw, index)))
        size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
        tasks += [
            ReadTask(path, start, end) for start, end in multistream_ranges(lines, size, streams_per_task)
        ]
    return tasks


class ReadTaskFn(beam.DoFn):
    """Reads one task's records: passages or articles (main output) and rejections (tagged)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def process(self, task: ReadTask) -> Iterator[Any]:
        with FileSystems.open(task.path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            if self.fmt == "dpr":
                records: Iterable[Any] = read_jsonl(raw, task.path, parse_dpr_line, *task.line_range)
            elif self.fmt == "jsonl":
                records = read_jsonl(raw, task.path, parse_article_line, *task.line_range)
            elif self.fmt == "parquet":
                records = read_parquet(raw, task.path)
            else:
                records = read_xml(raw, task.path, task.start, task.end)
            for record in records:
                if isinstance(record, Rejection):
                    yield _reject(record)
                elif isinstance(record, SkippedPage):
                    Metrics.counter(METRICS_NAMESPACE, f"skipped_{record.reason}").inc()
                else:
                    Metrics.counter(METRICS_NAMESPACE, "records_read").inc()
                    yield record


class ReadRecords(beam.PTransform):
    def __init__(self, tasks: Sequence[ReadTask], fmt: str) -> None:
        super().__init__()
        self.tasks, self.fmt = list(tasks), fmt

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        return (
            pbegin
            | "Tasks" >> beam.Create(self.tasks)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadTaskFn(self.fmt)).with_outputs(REJECTED, main="records")
        )


class SplitArticleFn(beam.DoFn):
    """Article -> plain text -> sentence-safe passages ``<article id>#<n>``."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config

    def process(self, article: Article) -> Iterator[Any]:
        cfg = self.config
        if len(article.text) > cfg.source.max_article_chars:
            detail = f"{len(article.text)} characters > {cfg.source.max_article_chars}"
            yield _reject(Rejection(article.article_id, "split", "too_large", detail, article.text))
            return
        try:
            text = wikitext_to_text(article.text) if article.wikitext else article.text
        except Exception as err:  # a parser failure on one article must not fail the job
            yield _reject(Rejection(article.article_id, "split", "unparseable", repr(err), article.text))
            return
        texts = split_passages(text, cfg.split.target_words, cfg.split.hard_cap_words)
        if not texts:
            yield _reject(Rejection(article.article_id, "split", "empty", "no text", article.text))
            return
        ids = tuple(passage_id(article.article_id, n) for n in range(len(texts)))
        siblings = ids if cfg.masking.exclude == "article" else ()
        if article.spans is not None:  # tagged input: each passage carries its own spans
            tags = passage_spans(text, texts, article.spans)
            for n, (pid, body) in enumerate(zip(ids, texts, strict=True)):
                yield TaggedPassage(pid, article.article_id, article.title, body, n, tags[n]), siblings
            return
        for n, (pid, body) in enumerate(zip(ids, texts, strict=True)):
            yield Passage(pid, article.article_id, article.title, body, n), siblings


class SplitArticles(beam.PTransform):
    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, articles: Any) -> Any:
        return articles | "Split" >> beam.ParDo(SplitArticleFn(self.config)).with_outputs(
            REJECTED, main="passages"
        )


class GroupByArticle(beam.PTransform):
    """DPR passages -> tasks; with ``exclude: article`` each excludes all passages with its title."""

    def __init__(self, exclude: str) -> None:
        super().__init__()
        self.exclude = exclude

    def expand(self, passages: Any) -> Any:
        if self.exclude != "article":
            return passages | "NoSiblings" >> beam.Map(lambda p: (p, ()))
        return (
            passages
            | "KeyByArticle" >> beam.Map(lambda p: (p.article_id, p))
            | "Group" >> beam.GroupByKey()
            | "WithSiblings" >> beam.FlatMap(_with_siblings)
        )


def _with_siblings(keyed: tuple[str, Iterable[Passage]]) -> Iterator[PassageTask]:
    group = list(keyed[1])
    ids = tuple(sorted(p.passage_id for p in group))
    for p in group:
        yield p, ids


class PrefilterFn(beam.DoFn):
    def __init__(self, min_words: int, max_chars: int) -> None:
        self.min_words, self.max_chars = min_words, max_chars

    def process(self, task: PassageTask) -> Iterator[Any]:
        found = prefilter(task[0].text, self.min_words, self.max_chars)
        if found:
            yield _reject(Rejection(task[0].passage_id, "filter", found[0], found[1], task[0].text))
        else:
            yield task


class SpanBatchFn(beam.DoFn):
    """A batch of passages -> one extractor call (spaCy ``nlp.pipe``, loaded in setup, or the LLM
    endpoint) -> ``(passage, siblings, eligible spans)``; an LLM failure rejects the passage."""

    def __init__(self, config: DataConfig) -> None:
        self.config = config
        self.extractor: Any = None

    def setup(self) -> None:
        self.extractor = span_extractor(self.config.spans)

    def process(self, batch: list[PassageTask]) -> Iterator[Any]:
        texts = [p.text for p, _ in batch]
        if isinstance(self.extractor, TaggedExtractor):
            found = self.extractor(texts, [getattr(p, "spans", None) for p, _ in batch])
            batch = [(p.untagged() if isinstance(p, TaggedPassage) else p, s) for p, s in batch]
        else:
            found = self.extractor(texts)
        for name, count in self.extractor.drain_counts().items():
            Metrics.counter(METRICS_NAMESPACE, name).inc(count)
        for (passage, siblings), spans in zip(batch, found, strict=True):
            if isinstance(spans, str):
                yield _reject(Rejection(passage.passage_id, "spans", "extractor_failed", spans, passage.text))
            else:
                yield passage, siblings, eligible_spans(passage.text, passage.title, spans)

    def teardown(self) -> None:
        if self.extractor is not None:
            self.extractor.close()


class DrawMasksFn(beam.DoFn):
    """``(passage, siblings, eligible spans)`` -> a sample row or a rejection; k by ``masking.k_mix``
    (``balanced``: P(k | m) from the counts of passages by m, a side input or the given ``passages_by_m``)."""

    def __init__(self, config: DataConfig, passages_by_m: dict[int, int] | None = None) -> None:
        self.config = config
        self.passages_by_m = passages_by_m
        self.templates: Any = None

    def setup(self) -> None:
        from ramp.prompts import load_templates

        self.templates = load_templates()

    def process(self, task: SpanTask, passages_by_m: dict[int, int] | None = None) -> Iterator[Any]:
        cfg = self.config
        passage, siblings, spans = task
        counts = self.passages_by_m if passages_by_m is None else passages_by_m
        probabilities = k_probabilities(counts or {}, cfg.masking)
        result = sample_from_spans(
            passage, siblings, spans, cfg.masking, cfg.seed, self.templates, probabilities
        )
        if isinstance(result, Rejection):
            yield _reject(result)
        else:
            Metrics.counter(METRICS_NAMESPACE, "samples").inc()
            Metrics.counter(METRICS_NAMESPACE, f"samples_k{result.num_masks}").inc()
            yield result.to_row()


class FindSpans(beam.PTransform):
    """Passage tasks -> span tasks (main) and the pre-filter's and extractor's rejections."""

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, tasks: Any) -> Any:
        cfg = self.config
        kept = tasks | "Prefilter" >> beam.ParDo(
            PrefilterFn(cfg.filter.min_words, cfg.filter.max_chars)
        ).with_outputs(REJECTED, main="kept")
        size = cfg.spans.batch_size
        found = (
            kept.kept
            | "Batch" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
            | "FindSpans" >> beam.ParDo(SpanBatchFn(cfg)).with_outputs(REJECTED, main="spans")
        )
        rejected = (kept[REJECTED], found[REJECTED]) | "SpanRejected" >> beam.Flatten()
        return found.spans, rejected


class DrawMasks(beam.PTransform):
    """Span tasks -> tagged ``samples`` (rows) and ``rejected``. With ``k_mix: balanced`` the passages
    are counted by m first (a side input), unless the corpus-wide ``passages_by_m`` are given (chunks)."""

    def __init__(self, config: DataConfig, passages_by_m: dict[int, int] | None = None) -> None:
        super().__init__()
        self.config, self.passages_by_m = config, passages_by_m

    def expand(self, spans: Any) -> Any:
        cfg = self.config
        draw = DrawMasksFn(cfg, self.passages_by_m)
        if cfg.masking.k_mix == "balanced" and self.passages_by_m is None:
            allowed = (
                spans
                | "AllowedMasks" >> beam.Map(_allowed, cfg.masking)
                | "CountByAllowed" >> beam.combiners.Count.PerElement()
            )
            return spans | "DrawMasks" >> beam.ParDo(draw, beam.pvalue.AsDict(allowed)).with_outputs(
                REJECTED, main="samples"
            )
        return spans | "DrawMasks" >> beam.ParDo(draw).with_outputs(REJECTED, main="samples")


def _allowed(task: SpanTask, masking: Any) -> int:
    return allowed_masks(task[0].text, task[2], masking)


class WriteOutputs(beam.PTransform):
    """Deterministic shards (``pipelines.io``): samples and passages as Parquet, rejections as JSONL."""

    def __init__(self, output_dir: str, config: DataConfig, rejected_prefix: str = "rejected") -> None:
        super().__init__()
        self.output_dir, self.config = output_dir.rstrip("/"), config
        self.rejected_prefix = rejected_prefix

    def expand(self, outputs: dict[str, Any]) -> Any:
        """``outputs``: ``samples`` (rows), ``passages`` and ``rejected``; a missing one is not written."""
        samples, passages, rejected = (outputs.get(k) for k in ("samples", "passages", REJECTED))
        out, shards = self.output_dir, self.config.output.num_shards
        rows = self.config.output.row_group_rows
        if samples is not None:
            samples | "WriteSamples" >> WriteParquetShards(
                f"{out}/samples", SAMPLE_SCHEMA, shards, _sample_id, row_group_rows=rows
            )
        if passages is not None:
            (
                passages
                | "PassageRows" >> beam.Map(lambda p: p.to_row())
                | "WritePassages"
                >> WriteParquetShards(
                    f"{out}/passages", PASSAGE_SCHEMA, shards, _passage_id, row_group_rows=rows
                )
            )
        return rejected | "WriteRejected" >> WriteJsonlShards(
            f"{out}/{self.rejected_prefix}", shards, _rejection_key, Rejection.to_json
        )


def _sample_id(row: dict[str, Any]) -> str:
    return str(row["sample_id"])


def _passage_id(row: dict[str, Any]) -> str:
    return str(row["passage_id"])


def _rejection_key(rejection: Rejection) -> str:
    return "\x1f".join((rejection.record_id, rejection.stage, rejection.reason))


def read_passages(
    pipeline: beam.Pipeline, config: DataConfig, tasks: Sequence[ReadTask], spread: bool = True
) -> tuple[Any, Any, list[Any]]:
    """Passages, passage tasks (``spread`` over workers) and the read/split rejections of the input."""
    read = pipeline | "ReadRecords" >> ReadRecords(tasks, config.source.format)
    rejected = [read[REJECTED]]
    if config.source.format == "dpr":
        passages = read.records
        passage_tasks = passages | "GroupByArticle" >> GroupByArticle(config.masking.exclude)
    else:
        split = read.records | "SplitArticles" >> SplitArticles(config)
        passage_tasks = split.passages
        passages = passage_tasks | "Passages" >> beam.Map(lambda task: task[0])
        rejected.append(split[REJECTED])
    if spread:
        passage_tasks = passage_tasks | "Spread" >> beam.Reshuffle()
    return passages, passage_tasks, rejected


SPANS = "spans"  # a first phase's span tasks: spans-*.jsonl
EARLY_REJECTED = "early-rejected"  # ... and its rejections so far: early-rejected-*.jsonl
Phase = Literal["whole", "spans", "draw"]


def build(
    pipeline: beam.Pipeline,
    config: DataConfig,
    tasks: Sequence[ReadTask],
    out: str,
    phase: Phase = "whole",
    first: str = "",
    passages_by_m: dict[int, int] | None = None,
    spread: bool = True,
) -> None:
    """The masking job as one pipeline: read -> split -> find spans -> draw masks -> write ``out``
    (``spread``: the passages reshuffled over the workers; one local worker has nothing to spread).

    A two-phase chunk (``k_mix: balanced``, :mod:`ramp.pipelines.chunks`) runs it in halves: ``spans``
    stops after span finding (writes the passages, the span tasks and the rejections so far, and counts
    the passages by m); ``draw`` reads those from ``first`` and draws with the corpus-wide
    ``passages_by_m`` (the passages are the first half's files).
    """
    rejected: list[Any] = []
    passages = None
    if phase == "draw":
        spans = (
            pipeline
            | "ReadSpans" >> ReadSamples(output_files(first, f"{SPANS}-", ".jsonl"))
            | "SpanTasks" >> beam.Map(_span_task)
        )
        rejected.append(
            pipeline
            | "ReadRejected" >> ReadSamples(output_files(first, f"{EARLY_REJECTED}-", ".jsonl"))
            | "Rejections" >> beam.Map(lambda row: Rejection(**row))
        )
    else:
        passages, passage_tasks, rejected = read_passages(pipeline, config, tasks, spread)
        spans, filtered = passage_tasks | "FindSpans" >> FindSpans(config)
        rejected.append(filtered)
    if phase == "spans":
        _ = spans | "CountByAllowed" >> beam.FlatMap(_count_allowed, config.masking)
        _ = spans | "WriteSpans" >> WriteJsonlShards(
            f"{out}/{SPANS}", config.output.num_shards, lambda t: t[0].passage_id, _span_task_json
        )
        early = {"passages": passages, REJECTED: rejected | "EarlyRejected" >> beam.Flatten()}
        _ = early | "WriteOutputs" >> WriteOutputs(out, config, EARLY_REJECTED)
        return
    masked = spans | "Draw" >> DrawMasks(config, passages_by_m)
    rejected.append(masked[REJECTED])
    outputs = {"samples": masked.samples, REJECTED: rejected | "AllRejected" >> beam.Flatten()}
    if passages is not None:  # (a two-phase draw: the first half wrote them)
        outputs["passages"] = passages
    _ = outputs | "WriteOutputs" >> WriteOutputs(out, config)


def _span_task_json(task: SpanTask) -> str:
    passage, siblings, spans = task
    row = {"passage": asdict(passage), "siblings": list(siblings), "spans": [asdict(s) for s in spans]}
    return json.dumps(row, ensure_ascii=False, sort_keys=True)


def _span_task(row: dict[str, Any]) -> SpanTask:
    return Passage(**row["passage"]), tuple(row["siblings"]), [Span(**s) for s in row["spans"]]


def _count_allowed(task: SpanTask, masking: Any) -> Iterator[Any]:
    count_allowed(METRICS_NAMESPACE, _allowed(task, masking))
    return iter(())


def _skipped(counters: dict[str, int]) -> dict[str, int]:
    return {n.removeprefix("skipped_"): c for n, c in counters.items() if n.startswith("skipped_")}


@dataclass(frozen=True)
class BuildJob:
    """``data build`` for the chunk driver (:class:`ramp.pipelines.chunks.ChunkedJob`): its read tasks in
    parts, each a run of :func:`build`."""

    config: DataConfig
    beam_run: BeamRun
    name: str = "data build"
    output_patterns: tuple[str, ...] = ("samples-*.parquet", "passages-*.parquet", "rejected-*.jsonl")
    summary_files: tuple[str, ...] = ("manifest.json", "audit.json")

    @property
    def settings(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")

    @property
    def two_phase(self) -> bool:
        return self.config.masking.k_mix == "balanced"  # P(k | m) from the whole input's counts

    def inputs(self, part: list[ReadTask]) -> list[str]:
        return sorted({task.path for task in part})

    def outputs(self, part: list[ReadTask]) -> list[str]:
        shards = self.config.output.num_shards
        files = [("samples", ".parquet"), ("passages", ".parquet"), (REJECTED, ".jsonl")]
        return [shard_path(prefix, n, shards, suffix) for prefix, suffix in files for n in range(shards)]

    def run(self, part: list[ReadTask], directory: str) -> dict[str, Any]:
        clear_outputs(directory, OUTPUT_FILES)
        counters = self.beam_run.run(
            lambda p: build(p, self.config, part, directory, spread=self.beam_run.parallel), METRICS_NAMESPACE
        )
        return _write_stats(directory, _skipped(counters))

    def first(self, part: list[ReadTask], directory: str) -> dict[str, Any]:
        clear_outputs(directory, ["*"])
        counters = self.beam_run.run(
            lambda p: build(p, self.config, part, directory, "spans", spread=self.beam_run.parallel),
            METRICS_NAMESPACE,
        )
        return {"passages_by_m": split_allowed(counters)[0], "skipped": _skipped(counters)}

    def second(
        self, first: str, counts: dict[str, Any], totals: dict[str, Any], directory: str
    ) -> dict[str, Any]:
        clear_outputs(directory, OUTPUT_FILES)
        passages = output_files(first, "passages-", ".parquet")
        FileSystems.copy(passages, [f"{directory}/{posixpath.basename(p)}" for p in passages])
        by_m = {int(m): n for m, n in totals["passages_by_m"].items()}
        self.beam_run.run(
            lambda p: build(p, self.config, (), directory, "draw", first, by_m), METRICS_NAMESPACE
        )
        return _write_stats(directory, counts["skipped"])

    def merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return sum_stats(parts)

    def weights(self, tasks: Sequence[ReadTask]) -> list[int]:
        """Each task's input bytes (compressed ones counted expanded)."""
        sizes = _sizes([task.path for task in tasks])
        return [input_weight(t.path, (t.end or sizes[t.path]) - (t.start or 0)) for t in tasks]

    def split(self, tasks: list[ReadTask], limit: int) -> tuple[list[ReadTask], list[int]]:
        """Uncompressed JSONL tasks over ``limit`` bytes cut into line ranges (DPR with ``exclude: article``
        never inside an article's run of passages); compressed files and single-stream XML stay whole."""
        fmt = self.config.source.format
        group_key = dpr_article if fmt == "dpr" and self.config.masking.exclude == "article" else None
        cut: list[ReadTask] = []
        for task, weight in zip(tasks, self.weights(tasks), strict=True):
            splittable = (
                fmt in ("dpr", "jsonl") and task.start is None and not task.path.endswith((".bz2", ".gz"))
            )
            if splittable and weight > limit:
                cut += [ReadTask(task.path, s, e, n) for s, e, n in line_ranges(task.path, limit, group_key)]
            else:
                cut.append(task)
        return cut, self.weights(cut)


def _write_stats(directory: str, skipped: dict[str, int]) -> dict[str, Any]:
    stats = compute_stats(directory, skipped)
    write_stats(directory, stats)
    return stats


def _sizes(paths: Sequence[str]) -> dict[str, int]:
    """Each input file's size, by path."""
    found = {m.path: m.size_in_bytes for r in FileSystems.match(sorted(set(paths))) for m in r.metadata_list}
    missing = sorted(set(paths) - set(found))
    if missing:
        raise FileNotFoundError(f"input files not found: {missing[:5]}")
    return found


def dpr_article(line: bytes) -> str | None:
    record = parse_dpr_line(line, "")
    return record.article_id if isinstance(record, Passage) else None


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


def run_build(
    patterns: Sequence[str],
    output_dir: str,
    config: DataConfig,
    beam_run: BeamRun = LOCAL,
    chunk_mb: float | None = None,
) -> dict[str, Any]:
    """Run the masking job over ``patterns`` into ``output_dir`` and return its ``stats.json``. Local runs
    go in chunks of about ``chunk_mb`` input megabytes (None: automatic, 0: one pass;
    :mod:`ramp.pipelines.chunks`), each a run of :func:`build` over its read tasks."""
    source = config.source
    tasks = plan_read_tasks(patterns, source.format, source.streams_per_task)
    job = BuildJob(config, beam_run)
    stats = run_chunked(
        job, output_dir, tasks, job.weights(tasks), chunk_mb, beam_run.pipeline_args, job.split
    )
    manifest = samples_manifest(output_dir, patterns, config)
    if read_samples_manifest(output_dir) != manifest:
        write_samples_manifest(output_dir, manifest)
    return stats


def samples_manifest(output_dir: str, patterns: Sequence[str], config: DataConfig) -> dict[str, Any]:
    """What the samples were cut from (the corpus fingerprint of ``passages-*.parquet``, as
    ``ramp index build`` computes it, and the id scheme) and the config they were cut with."""
    passages = output_files(output_dir, "passages-", ".parquet")
    local = [Path(p) for p in passages if "://" not in p]
    return {
        "inputs": list(patterns),
        "format": config.source.format,
        "corpus_fingerprint": corpus_fingerprint(local) if len(local) == len(passages) else None,
        "id_scheme": ID_SCHEMES[".jsonl" if config.source.format == "dpr" else ".parquet"],
        "data_config": config.model_dump(mode="json"),
    }


def load_data_config(config: str | None, fmt: str | None, overrides: Sequence[str]) -> DataConfig:
    """``configs/data.yaml`` (or ``config``) with ``overrides`` and the input ``fmt``."""
    extra = [f"source.format={fmt}"] if fmt else []
    return load_config(DataConfig, config or DEFAULT_CONFIG, [*overrides, *extra])
