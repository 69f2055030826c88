"""The answerability stage: a Beam transform that checks every mask with the search tool.

``CheckAnswerability`` maps a PCollection of :class:`~ramp.data.samples.Sample` to tagged outputs
``samples`` (masks' ``answerable``/``answer_rank`` filled, kept by the policy) and ``rejected``
(:class:`~ramp.data.rejections.Rejection`: ``unanswerable`` or ``bad_mask_offsets``), so
``in = samples + rejected``. The DoFn opens the retriever in ``setup()`` (a local Lucene index
starts one JVM per worker process, or an HTTP client) and buffers samples until ``batch_size``
queries are pending, flushing the rest in ``finish_bundle``.

The job (:func:`run_answerability`, ``ramp data answerability``) runs it over the samples directory
of ``ramp data build``: ReadSamples (one task per ``samples-*.parquet``; a row that does not parse is
rejected as ``unparseable``) -> CheckAnswerability -> deterministic shards ``samples-*.parquet`` and
``rejected-*.jsonl`` (as many shards as input files) -> ``stats.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue
from ramp.pipelines.io import WriteJsonlShards, WriteParquetShards, clear_outputs
from ramp.pipelines.runner import counter_totals, pipeline_options

from ramp.data.answerability import (
    check_answerability,
    keep_sample,
    mask_offsets_error,
    unanswerable_detail,
)
from ramp.data.rejections import Rejection
from ramp.data.samples import SAMPLE_SCHEMA, Sample
from ramp.data.stats import OUTPUT_FILES, compute_stats, output_files, write_stats
from ramp.retrieval.base import Retriever
from ramp.retrieval.config import AnswerabilityConfig, RetrieverConfig, build_retriever

STAGE = "answerability"
READ_STAGE = "read"
SAMPLES = "samples"
REJECTED = "rejected"
METRICS_NAMESPACE = "ramp.data.answerability"

_Pending = tuple[Sample, Any, Any]  # sample, timestamp, window


class CheckAnswerabilityFn(beam.DoFn):
    def __init__(self, retriever_config: RetrieverConfig, config: AnswerabilityConfig) -> None:
        self.retriever_config = retriever_config
        self.config = config
        self._retriever: Retriever | None = None
        self._pending: list[_Pending] = []
        self._pending_queries = 0

    def setup(self) -> None:
        self._retriever = build_retriever(self.retriever_config)

    def start_bundle(self) -> None:
        self._pending, self._pending_queries = [], 0

    def process(
        self,
        sample: Sample,
        timestamp: Any = beam.DoFn.TimestampParam,
        window: Any = beam.DoFn.WindowParam,
    ) -> Iterator[Any]:
        Metrics.counter(METRICS_NAMESPACE, "in").inc()
        problem = mask_offsets_error(sample)
        if problem is not None:
            Metrics.counter(METRICS_NAMESPACE, "rejected_bad_mask_offsets").inc()
            yield beam.pvalue.TaggedOutput(
                REJECTED, Rejection(sample.sample_id, STAGE, "bad_mask_offsets", problem, sample.passage)
            )
            return
        self._pending.append((sample, timestamp, window))
        self._pending_queries += len(sample.masks)
        if self._pending_queries >= self.config.batch_size:
            for tag, value, _, _ in self._flush():
                yield value if tag == SAMPLES else beam.pvalue.TaggedOutput(tag, value)

    def finish_bundle(self) -> Iterator[Any]:
        for tag, value, timestamp, window in self._flush():
            windowed = WindowedValue(value, timestamp, (window,))
            yield windowed if tag == SAMPLES else beam.pvalue.TaggedOutput(tag, windowed)

    def _flush(self) -> Iterator[tuple[str, Any, Any, Any]]:
        pending, self._pending, self._pending_queries = self._pending, [], 0
        if not pending:
            return
        assert self._retriever is not None, "setup() opens the retriever"
        checked = check_answerability([s for s, _, _ in pending], self._retriever, self.config.k)
        for sample, (_, timestamp, window) in zip(checked, pending, strict=True):
            for mask in sample.masks:
                Metrics.counter(METRICS_NAMESPACE, f"masks_{mask.type}_answerable_{mask.answerable}").inc()
            if keep_sample(sample, self.config.keep):
                Metrics.counter(METRICS_NAMESPACE, "kept").inc()
                yield SAMPLES, sample, timestamp, window
            else:
                Metrics.counter(METRICS_NAMESPACE, "rejected_unanswerable").inc()
                rejection = Rejection(
                    sample.sample_id,
                    STAGE,
                    "unanswerable",
                    unanswerable_detail(sample),
                    sample.masked_passage,
                )
                yield REJECTED, rejection, timestamp, window

    def teardown(self) -> None:
        if self._retriever is not None:
            self._retriever.close()
            self._retriever = None


class CheckAnswerability(beam.PTransform):
    """Samples -> tagged ``samples`` (fields filled, kept by policy) and ``rejected`` (Rejection)."""

    def __init__(self, retriever_config: RetrieverConfig, answerability_config: AnswerabilityConfig) -> None:
        super().__init__()
        self.retriever_config = retriever_config
        self.answerability_config = answerability_config

    def expand(self, samples: Any) -> Any:
        return samples | "SearchMasks" >> beam.ParDo(
            CheckAnswerabilityFn(self.retriever_config, self.answerability_config)
        ).with_outputs(REJECTED, main=SAMPLES)


# Columns a samples row must have non-null (the nullable=False fields of SAMPLE_SCHEMA).
_REQUIRED = tuple(f.name for f in SAMPLE_SCHEMA if not f.nullable)


def parse_sample_row(row: dict[str, Any]) -> Sample:
    """A samples-Parquet row as a :class:`Sample`; ``ValueError`` naming the problem if it is not one."""
    missing = [name for name in _REQUIRED if row.get(name) is None]
    if missing:
        raise ValueError(f"missing or null fields {missing}")
    try:
        return Sample.from_row(row)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a sample row: {err!r}") from None


class ReadSamplesFn(beam.DoFn):
    """One ``samples-*.parquet`` file -> samples (main) and ``unparseable`` rejections (tagged)."""

    def process(self, path: str) -> Iterator[Any]:
        try:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
                for batch in pq.ParquetFile(raw).iter_batches(batch_size=1024):
                    for row in batch.to_pylist():
                        yield from self._parse(path, row)
        except (OSError, ValueError) as err:  # an unreadable file or a corrupt page: the rest of the file
            Metrics.counter(METRICS_NAMESPACE, "read").inc()
            Metrics.counter(METRICS_NAMESPACE, "rejected_unparseable").inc()
            yield beam.pvalue.TaggedOutput(
                REJECTED, Rejection(path, READ_STAGE, "unparseable", f"unreadable Parquet: {err!r}")
            )

    def _parse(self, path: str, row: dict[str, Any]) -> Iterator[Any]:
        Metrics.counter(METRICS_NAMESPACE, "read").inc()
        try:
            yield parse_sample_row(row)
        except ValueError as err:
            Metrics.counter(METRICS_NAMESPACE, "rejected_unparseable").inc()
            sample_id = row.get("sample_id")
            record_id = sample_id if isinstance(sample_id, str) and sample_id else path
            yield beam.pvalue.TaggedOutput(
                REJECTED, Rejection(record_id, READ_STAGE, "unparseable", str(err), repr(row)[:500])
            )


class ReadSamples(beam.PTransform):
    """``samples-*.parquet`` files -> tagged ``samples`` (Sample) and ``rejected`` (Rejection)."""

    def __init__(self, files: Sequence[str]) -> None:
        super().__init__()
        self.files = list(files)

    def expand(self, pbegin: beam.pvalue.PBegin) -> Any:
        return (
            pbegin
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadSamplesFn()).with_outputs(REJECTED, main=SAMPLES)
        )


class WriteOutputs(beam.PTransform):
    """Kept samples -> ``samples-*.parquet``, rejections -> ``rejected-*.jsonl`` (deterministic shards)."""

    def __init__(self, output_dir: str, num_shards: int) -> None:
        super().__init__()
        self.output_dir, self.num_shards = output_dir.rstrip("/"), num_shards

    def expand(self, outputs: tuple[Any, Any]) -> Any:
        samples, rejected = outputs
        written_samples = (
            samples
            | "SampleRows" >> beam.Map(lambda s: s.to_row())
            | "WriteSamples"
            >> WriteParquetShards(
                f"{self.output_dir}/samples", SAMPLE_SCHEMA, self.num_shards, lambda r: r["sample_id"]
            )
        )
        written_rejected = rejected | "WriteRejected" >> WriteJsonlShards(
            f"{self.output_dir}/rejected",
            self.num_shards,
            lambda r: f"{r.record_id}\t{r.stage}",
            Rejection.to_json,
        )
        return written_samples, written_rejected


def build_pipeline(
    pipeline: beam.Pipeline,
    files: Sequence[str],
    output_dir: str,
    retriever_config: RetrieverConfig,
    answerability_config: AnswerabilityConfig,
) -> None:
    """Wire the answerability job into ``pipeline``."""
    read = pipeline | "ReadSamples" >> ReadSamples(files)
    checked = read.samples | "CheckAnswerability" >> CheckAnswerability(
        retriever_config, answerability_config
    )
    rejected = (read[REJECTED], checked[REJECTED]) | "AllRejected" >> beam.Flatten()
    _ = (checked.samples, rejected) | "WriteOutputs" >> WriteOutputs(output_dir, max(1, len(files)))


def run_answerability(
    samples_dir: str,
    output_dir: str,
    retriever_config: RetrieverConfig,
    answerability_config: AnswerabilityConfig,
    workers: int = 1,
    pipeline_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Check every sample of ``samples_dir``, write ``output_dir`` and its ``stats.json``; return it."""
    if _same_directory(samples_dir, output_dir):
        raise ValueError(f"--output must differ from the samples directory {samples_dir}")
    files = output_files(samples_dir, "samples-", ".parquet")
    if not files:
        raise FileNotFoundError(f"no samples-*.parquet files in {samples_dir}")
    clear_outputs(output_dir, OUTPUT_FILES)
    pipeline = beam.Pipeline(options=pipeline_options(workers, pipeline_args))
    build_pipeline(pipeline, files, output_dir, retriever_config, answerability_config)
    result = pipeline.run()
    result.wait_until_finish()
    stats = answerability_stats(output_dir, counter_totals(result, METRICS_NAMESPACE), answerability_config)
    write_stats(output_dir, stats)
    return stats


def _same_directory(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def answerability_stats(
    output_dir: str, counters: dict[str, int], config: AnswerabilityConfig
) -> dict[str, Any]:
    """``stats.json``: counts from the output files; answerability of every checked mask (kept or not)
    from the job's counters ``masks_<type>_answerable_<True|False>``."""
    written = compute_stats(output_dir)
    checked: dict[str, list[int]] = {}
    for name, count in counters.items():
        kind, sep, flag = name.removeprefix("masks_").rpartition("_answerable_")
        if name.startswith("masks_") and sep:
            checked.setdefault(kind, [0, 0])
            checked[kind][0] += count if flag == "True" else 0
            checked[kind][1] += count
    return {
        "input_samples": counters.get("read", 0),
        "kept": written["samples"],
        "rejected": written["rejected"],
        "rejected_by_reason": written["rejected_by_reason"],
        "k": config.k,
        "keep": config.keep,
        "answerable_fraction_by_type": {
            kind: round(found / total, 4) for kind, (found, total) in sorted(checked.items())
        },
        "masks_checked_by_type": {kind: total for kind, (_, total) in sorted(checked.items())},
        "masks_by_type": written["masks_by_type"],
        "samples_by_k": written["samples_by_k"],
    }
