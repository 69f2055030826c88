"""The answerability stage: a Beam transform that checks every mask with the search tool.

``CheckAnswerability`` maps a PCollection of :class:`~ramp.data.samples.Sample` to tagged outputs
``samples`` (masks' ``answerable``/``answer_rank`` filled, kept by the policy) and ``rejected``
(:class:`~ramp.data.rejections.Rejection`: ``unanswerable`` or ``bad_mask_offsets``), so
``in = samples + rejected``. The DoFn opens the retriever in ``setup()`` (a local Lucene index
starts one JVM per worker process, or an HTTP client) and buffers samples until ``batch_size``
queries are pending, flushing the rest in ``finish_bundle``.

The job (:func:`run_answerability`, ``ramp data answerability``) runs it over the samples directory
of ``ramp data build``: ReadSamples (``ramp.pipelines.samples_io``) -> ParseSamples (a row that does not
parse is rejected as ``unparseable``) -> CheckAnswerability -> deterministic shards ``samples-*.parquet`` and
``rejected-*.jsonl`` (as many shards as input files) -> ``stats.json``: one pipeline, :func:`build`, run in
chunks on the local runner (:mod:`ramp.pipelines.chunks`, :class:`AnswerabilityJob`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue
from ramp.pipelines.chunks import run_chunked, sum_stats
from ramp.pipelines.io import WriteJsonlShards, WriteParquetShards, clear_outputs, shard_path
from ramp.pipelines.runner import LOCAL, BeamRun, count_allowed, split_allowed
from ramp.pipelines.samples_io import UNPARSEABLE, ReadSamples

from ramp.config import CONFIG_DIR, load_config
from ramp.data.answerability import (
    check_answerability,
    keep_sample,
    mask_offsets_error,
    unanswerable_detail,
)
from ramp.data.config import DataConfig
from ramp.data.masking import k_probabilities, passage_allowance, redraw_sample
from ramp.data.rejections import Rejection
from ramp.data.samples import SAMPLE_SCHEMA, Sample
from ramp.data.stats import OUTPUT_FILES, compute_stats, output_files, write_stats
from ramp.errors import UserError
from ramp.retrieval.config import AnswerabilityConfig, RetrieverConfig, build_retriever
from ramp.retrieval.env import SearchEnv
from ramp.retrieval.indexing import read_manifest
from ramp.retrieval.leakage import check_index_covers_samples, read_samples_manifest, write_samples_manifest

STAGE = "answerability"
UNANSWERABLE = "unanswerable"
READ_STAGE = "read"
SAMPLES = "samples"
REJECTED = "rejected"
METRICS_NAMESPACE = "ramp.data.answerability"

_Pending = tuple[Sample, Any, Any]  # sample, timestamp, window


class CheckAnswerabilityFn(beam.DoFn):
    def __init__(
        self, retriever_config: RetrieverConfig, config: AnswerabilityConfig, hide_sentence_spans: bool = True
    ) -> None:
        self.retriever_config = retriever_config
        self.config = config
        self.hide_sentence_spans = hide_sentence_spans
        self._env: SearchEnv | None = None
        self._pending: list[_Pending] = []
        self._pending_queries = 0

    def setup(self) -> None:
        self._env = SearchEnv(build_retriever(self.retriever_config), self.config.search, owns_retriever=True)

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
        assert self._env is not None, "setup() opens the retriever"
        redraw = self.config.keep == "redraw"
        checked = check_answerability(
            [s for s, _, _ in pending],
            self._env,
            self.config.min_context_words,
            redraw,
            self.hide_sentence_spans,
        )
        for sample, (_, timestamp, window) in zip(checked, pending, strict=True):
            for mask in sample.spans if redraw and sample.spans else sample.masks:
                Metrics.counter(METRICS_NAMESPACE, f"masks_{mask.type}_answerable_{mask.answerable}").inc()
            if keep_sample(sample, self.config.keep):
                if not redraw:
                    Metrics.counter(METRICS_NAMESPACE, "kept").inc()
                yield SAMPLES, sample, timestamp, window
            else:
                Metrics.counter(METRICS_NAMESPACE, f"rejected_{UNANSWERABLE}").inc()
                rejection = Rejection(
                    sample.sample_id,
                    STAGE,
                    "unanswerable",
                    unanswerable_detail(sample),
                    sample.masked_passage,
                )
                yield REJECTED, rejection, timestamp, window

    def teardown(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class RedrawMasksFn(beam.DoFn):
    """A checked sample -> its masks drawn again among its answerable spans, or ``unanswerable``
    (``k_mix: balanced``: P(k | m) from the counts of passages by m, a side input or ``passages_by_m``)."""

    def __init__(self, data_config: DataConfig, passages_by_m: dict[int, int] | None = None) -> None:
        self.data_config = data_config
        self.passages_by_m = passages_by_m
        self.templates: Any = None

    def setup(self) -> None:
        from ramp.prompts import load_templates

        self.templates = load_templates()

    def process(self, sample: Sample, passages_by_m: dict[int, int] | None = None) -> Iterator[Any]:
        masking = self.data_config.masking
        counts = self.passages_by_m if passages_by_m is None else passages_by_m
        probabilities = k_probabilities(counts or {}, masking)
        result = redraw_sample(sample, masking, self.data_config.seed, self.templates, probabilities)
        if isinstance(result, Sample):
            Metrics.counter(METRICS_NAMESPACE, "kept").inc()
            yield result
            return
        Metrics.counter(METRICS_NAMESPACE, f"rejected_{UNANSWERABLE}").inc()
        eligible = sample.spans or sample.masks
        found = sum(bool(m.answerable) for m in eligible)
        detail = f"{found}/{len(eligible)} eligible spans answerable: {result.detail}"
        yield beam.pvalue.TaggedOutput(
            REJECTED, Rejection(sample.sample_id, STAGE, UNANSWERABLE, detail, sample.passage)
        )


class CheckAnswerability(beam.PTransform):
    """Samples -> tagged ``samples`` (fields filled, kept by policy) and ``rejected`` (Rejection).

    With ``keep: redraw`` every eligible span is checked, then the masks are drawn again among the
    answerable ones (``masking.k_mix`` of ``data_config``: ``balanced`` counts the passages by how many
    masks their answerable spans allow first, a side input).
    """

    def __init__(
        self,
        retriever_config: RetrieverConfig,
        answerability_config: AnswerabilityConfig,
        data_config: DataConfig | None = None,
    ) -> None:
        super().__init__()
        self.retriever_config = retriever_config
        self.answerability_config = answerability_config
        self.data_config = data_config or DataConfig()

    def expand(self, samples: Any) -> Any:
        checked = samples | "SearchMasks" >> SearchMasks(
            self.retriever_config, self.answerability_config, self.data_config
        )
        if self.answerability_config.keep != "redraw":
            return checked
        drawn = checked.samples | "Redraw" >> RedrawMasks(self.data_config)
        rejected = (checked[REJECTED], drawn[REJECTED]) | "CheckRejected" >> beam.Flatten()
        return _Outputs(drawn.samples, rejected)


class SearchMasks(beam.PTransform):
    """Samples -> tagged ``samples`` (every mask, with ``keep: redraw`` every eligible span, checked;
    kept by the policy unless it redraws) and ``rejected``."""

    def __init__(
        self,
        retriever_config: RetrieverConfig,
        answerability_config: AnswerabilityConfig,
        data_config: DataConfig,
    ) -> None:
        super().__init__()
        self.retriever_config = retriever_config
        self.answerability_config = answerability_config
        self.data_config = data_config

    def expand(self, samples: Any) -> Any:
        hide_sentence_spans = not self.data_config.masking.one_per_sentence
        check = CheckAnswerabilityFn(self.retriever_config, self.answerability_config, hide_sentence_spans)
        return samples | "SearchMasks" >> beam.ParDo(check).with_outputs(REJECTED, main=SAMPLES)


class RedrawMasks(beam.PTransform):
    """Checked samples -> tagged ``samples`` (masks drawn again among the answerable spans) and
    ``rejected``. With ``k_mix: balanced`` the passages are counted by m first (a side input), unless the
    corpus-wide ``passages_by_m`` are given (chunks)."""

    def __init__(self, data_config: DataConfig, passages_by_m: dict[int, int] | None = None) -> None:
        super().__init__()
        self.data_config, self.passages_by_m = data_config, passages_by_m

    def expand(self, checked: Any) -> Any:
        masking = self.data_config.masking
        redraw = RedrawMasksFn(self.data_config, self.passages_by_m)
        if masking.k_mix == "balanced" and self.passages_by_m is None:
            allowed = (
                checked
                | "AllowedMasks" >> beam.Map(passage_allowance, masking, True)
                | "CountByAllowed" >> beam.combiners.Count.PerElement()
            )
            return checked | "Redraw" >> beam.ParDo(redraw, beam.pvalue.AsDict(allowed)).with_outputs(
                REJECTED, main=SAMPLES
            )
        return checked | "Redraw" >> beam.ParDo(redraw).with_outputs(REJECTED, main=SAMPLES)


class _Outputs:
    """The ``samples`` / ``rejected`` pair, addressed like a tagged ParDo output."""

    def __init__(self, samples: Any, rejected: Any) -> None:
        self.samples, self._rejected = samples, rejected

    def __getitem__(self, tag: str) -> Any:
        return {SAMPLES: self.samples, REJECTED: self._rejected}[tag]


def _sample_id(row: dict[str, Any]) -> str:
    return str(row["sample_id"])


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


class ParseSamplesFn(beam.DoFn):
    """``(file, row)`` pairs of :class:`~ramp.pipelines.samples_io.ReadSamples` -> samples (main) and
    ``unparseable`` rejections (tagged)."""

    def process(self, source: tuple[str, dict[str, Any]]) -> Iterator[Any]:
        path, row = source
        Metrics.counter(METRICS_NAMESPACE, "read").inc()
        if UNPARSEABLE in row:  # the reader could not read (the rest of) a file
            Metrics.counter(METRICS_NAMESPACE, "rejected_unparseable").inc()
            yield beam.pvalue.TaggedOutput(
                REJECTED, Rejection(row["id"], READ_STAGE, UNPARSEABLE, row[UNPARSEABLE])
            )
            return
        try:
            yield parse_sample_row(row)
        except ValueError as err:
            Metrics.counter(METRICS_NAMESPACE, "rejected_unparseable").inc()
            sample_id = row.get("sample_id")
            record_id = sample_id if isinstance(sample_id, str) and sample_id else path
            yield beam.pvalue.TaggedOutput(
                REJECTED, Rejection(record_id, READ_STAGE, UNPARSEABLE, str(err), repr(row)[:500])
            )


class WriteAnswerabilityOutputs(beam.PTransform):
    """Kept samples -> ``samples-*.parquet``, rejections -> ``rejected-*.jsonl`` (deterministic shards)."""

    def __init__(
        self, output_dir: str, num_shards: int, prefixes: tuple[str, str] = (SAMPLES, REJECTED)
    ) -> None:
        super().__init__()
        self.output_dir, self.num_shards = output_dir.rstrip("/"), num_shards
        self.prefixes = prefixes

    def expand(self, outputs: tuple[Any, Any]) -> Any:
        samples, rejected = outputs
        written_samples = (
            samples
            | "SampleRows" >> beam.Map(lambda s: s.to_row())
            | "WriteSamples"
            >> WriteParquetShards(
                f"{self.output_dir}/{self.prefixes[0]}", SAMPLE_SCHEMA, self.num_shards, _sample_id
            )
        )
        written_rejected = rejected | "WriteRejected" >> WriteJsonlShards(
            f"{self.output_dir}/{self.prefixes[1]}",
            self.num_shards,
            lambda r: f"{r.record_id}\t{r.stage}",
            Rejection.to_json,
        )
        return written_samples, written_rejected


def read_samples(pipeline: beam.Pipeline, files: Sequence[str]) -> Any:
    """Tagged ``samples`` (parsed) and ``rejected`` (``unparseable``) of samples files."""
    return (
        pipeline
        | "ReadSamples" >> ReadSamples(files, with_source=True)
        | "ParseSamples" >> beam.ParDo(ParseSamplesFn()).with_outputs(REJECTED, main=SAMPLES)
    )


CHECKED = "checked"  # a first phase's checked samples: checked-*.parquet
EARLY_REJECTED = "early-rejected"  # ... and its rejections so far: early-rejected-*.jsonl
Phase = Literal["whole", "search", "redraw"]


def build(
    pipeline: beam.Pipeline,
    job: AnswerabilityJob,
    files: Sequence[str],
    out: str,
    phase: Phase = "whole",
    first: str = "",
    passages_by_m: dict[int, int] | None = None,
) -> None:
    """The answerability job as one pipeline: read samples -> search every mask -> (``keep: redraw``)
    draw the masks again among the answerable spans -> write ``out`` (one shard per input file).

    A two-phase chunk (``keep: redraw`` of samples built with ``k_mix: balanced``) runs it in halves:
    ``search`` stops after the search (writes the checked samples and the rejections so far, and counts
    the passages by m); ``redraw`` reads those from ``first`` and draws with the corpus-wide
    ``passages_by_m``."""
    if phase == "redraw":
        files = output_files(first, f"{CHECKED}-", ".parquet")
    read = read_samples(pipeline, files)
    rejected = [read[REJECTED]]
    if phase == "redraw":
        rejected.append(
            pipeline
            | "ReadRejected" >> ReadSamples(output_files(first, f"{EARLY_REJECTED}-", ".jsonl"))
            | "Rejections" >> beam.Map(lambda row: Rejection(**row))
        )
        checked = read.samples | "Redraw" >> RedrawMasks(job.data_config, passages_by_m)
    elif phase == "search":
        checked = read.samples | "SearchMasks" >> SearchMasks(
            job.retriever_config, job.answerability_config, job.data_config
        )
        _ = checked.samples | "CountByAllowed" >> beam.FlatMap(_count_allowed, job.data_config.masking)
    else:
        checked = read.samples | "CheckAnswerability" >> CheckAnswerability(
            job.retriever_config, job.answerability_config, job.data_config
        )
    rejected.append(checked[REJECTED])
    prefixes = (CHECKED, EARLY_REJECTED) if phase == "search" else (SAMPLES, REJECTED)
    outputs = (checked.samples, rejected | "AllRejected" >> beam.Flatten())
    _ = outputs | "WriteAnswerabilityOutputs" >> WriteAnswerabilityOutputs(out, job.shards(files), prefixes)


def _count_allowed(sample: Sample, masking: Any) -> Iterator[Any]:
    count_allowed(METRICS_NAMESPACE, passage_allowance(sample, masking, True))
    return iter(())


@dataclass(frozen=True)
class AnswerabilityJob:
    """``data answerability`` for the chunk driver (:class:`ramp.pipelines.chunks.ChunkedJob`): its
    samples files in parts, each a run of :func:`build`. ``data_config``: what the samples were built with
    (their masks are redrawn with it)."""

    retriever_config: RetrieverConfig
    answerability_config: AnswerabilityConfig
    data_config: DataConfig
    beam_run: BeamRun
    name: str = "data answerability"
    output_patterns: tuple[str, ...] = ("samples-*.parquet", "rejected-*.jsonl")
    summary_files: tuple[str, ...] = ("manifest.json", "audit.json")

    @property
    def settings(self) -> list[Any]:
        return [self.retriever_config, self.answerability_config, self.data_config]

    @property
    def two_phase(self) -> bool:  # P(k | m) from the whole input's counts, as in one pass
        return self.answerability_config.keep == "redraw" and self.data_config.masking.k_mix == "balanced"

    def shards(self, files: Sequence[str]) -> int:
        return max(1, len(files))

    def inputs(self, part: list[str]) -> list[str]:
        return [*part, *index_files(self.retriever_config)]

    def outputs(self, part: list[str]) -> list[str]:
        shards = self.shards(part)
        return [
            shard_path(p, n, shards, s)
            for p, s in ((SAMPLES, ".parquet"), (REJECTED, ".jsonl"))
            for n in range(shards)
        ]

    def run(self, part: list[str], directory: str) -> dict[str, Any]:
        clear_outputs(directory, OUTPUT_FILES)
        counters = self.beam_run.run(lambda p: build(p, self, part, directory), METRICS_NAMESPACE)
        return self._write_stats(directory, counters)

    def first(self, part: list[str], directory: str) -> dict[str, Any]:
        clear_outputs(directory, ["*"])
        counters = self.beam_run.run(lambda p: build(p, self, part, directory, "search"), METRICS_NAMESPACE)
        by_m, others = split_allowed(counters)
        return {"passages_by_m": by_m, "counters": others}

    def second(
        self, first: str, counts: dict[str, Any], totals: dict[str, Any], directory: str
    ) -> dict[str, Any]:
        clear_outputs(directory, OUTPUT_FILES)
        by_m = {int(m): n for m, n in totals["passages_by_m"].items()}
        self.beam_run.run(lambda p: build(p, self, (), directory, "redraw", first, by_m), METRICS_NAMESPACE)
        return self._write_stats(directory, counts["counters"])

    def merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Counts summed, answerable fractions recomputed from the summed counts."""
        merged = sum_stats(parts, frozenset({"answerable_fraction_by_type"}), frozenset({"k", "keep"}))
        found, checked = merged.get("masks_answerable_by_type", {}), merged.get("masks_checked_by_type", {})
        fractions = {kind: round(found.get(kind, 0) / total, 4) for kind, total in checked.items() if total}
        return {k: fractions if k == "answerable_fraction_by_type" else merged[k] for k in parts[0]}

    def _write_stats(self, directory: str, counters: dict[str, int]) -> dict[str, Any]:
        stats = answerability_stats(directory, counters, self.answerability_config)
        write_stats(directory, stats)
        return stats


def run_answerability(
    samples_dir: str,
    output_dir: str,
    retriever_config: RetrieverConfig,
    answerability_config: AnswerabilityConfig,
    beam_run: BeamRun = LOCAL,
    chunk_mb: float | None = None,
    allow_foreign_index: bool = False,
) -> dict[str, Any]:
    """Check every sample of ``samples_dir``, write ``output_dir`` and its ``stats.json``; return it.
    Local runs go in chunks of input files of about ``chunk_mb`` megabytes (None: automatic, 0: one
    pass; :mod:`ramp.pipelines.chunks`), each a run of :func:`build` over its files.

    On start, the leakage guard checks that the samples' source passages are in the index
    (:func:`ramp.retrieval.leakage.check_index_covers_samples`; ``allow_foreign_index`` to proceed
    anyway). ``keep: redraw`` draws the masks with the data config the samples were built with (their
    ``manifest.json``; ``configs/data.yaml`` for a directory without one)."""
    if _same_directory(samples_dir, output_dir):
        raise UserError(f"--output must differ from the samples directory {samples_dir}")
    files = output_files(samples_dir, "samples-", ".parquet")
    if not files:
        raise FileNotFoundError(f"no samples-*.parquet files in {samples_dir}")
    check_leakage_guard(samples_dir, retriever_config, allow_foreign_index)
    manifest = read_samples_manifest(samples_dir)
    built_with = samples_data_config(manifest)
    job = AnswerabilityJob(retriever_config, answerability_config, built_with, beam_run)
    sizes = [m.size_in_bytes for r in FileSystems.match(files) for m in r.metadata_list]
    stats = run_chunked(job, output_dir, files, sizes, chunk_mb, beam_run.pipeline_args)
    if manifest:
        written = {**manifest, "answerability": answerability_config.model_dump(mode="json")}
        if read_samples_manifest(output_dir) != written:
            write_samples_manifest(output_dir, written)
    return stats


def index_files(retriever_config: RetrieverConfig) -> list[str]:
    """The local Lucene index a job searches (an input of its chunks), none for a search server."""
    index = retriever_config.index
    return [index] if retriever_config.kind == "lucene" and index and "://" not in index else []


def samples_data_config(manifest: dict[str, Any] | None) -> DataConfig:
    """The data config a samples directory was built with (its manifest), else ``configs/data.yaml``."""
    if manifest and manifest.get("data_config"):
        return DataConfig.model_validate(manifest["data_config"])
    return load_config(DataConfig, str(CONFIG_DIR / "data.yaml"))


def check_leakage_guard(
    samples_dir: str, retriever_config: RetrieverConfig, allow_foreign_index: bool
) -> None:
    """The start-of-stage leakage check with the stage's own retriever (see :mod:`ramp.retrieval.leakage`)."""
    index_manifest = None
    if retriever_config.kind != "http" and retriever_config.index:
        try:
            index_manifest = read_manifest(retriever_config.index)
        except FileNotFoundError:
            index_manifest = None
    retriever = build_retriever(retriever_config)
    try:
        check_index_covers_samples(samples_dir, retriever, index_manifest, allow_foreign_index)
    finally:
        retriever.close()


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
        "k": config.search.top_k,
        "keep": config.keep,
        "answerable_fraction_by_type": {
            kind: round(found / total, 4) for kind, (found, total) in sorted(checked.items())
        },
        "masks_checked_by_type": {kind: total for kind, (_, total) in sorted(checked.items())},
        "masks_answerable_by_type": {kind: found for kind, (found, _) in sorted(checked.items())},
        "masks_by_type": written["masks_by_type"],
        "samples_by_k": written["samples_by_k"],
    }
