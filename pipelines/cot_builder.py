"""The CoT trajectory job: samples (or QA questions) -> verified trajectories + dead-letter rows + stats.

    samples-*.parquet | QA *.jsonl --ReadSamples--> rows --BuildTrajectories--> trajectories | rejected
    trajectories --WriteTrajectories--> trajectories-SSSSS-of-NNNNN.parquet (zstd, sorted by sample_id)
    rejected     --WriteRejected-->     rejected-SSSSS-of-NNNNN.jsonl       (sorted by record id, reason)
    all counts   --WriteStats-->        stats.json (in = kept + rejected, verified yield, reasons)

The shards are ``pipelines.io``'s deterministic ones: reruns write byte-identical files whatever the
runner's bundling, every shard file written, empty ones too. Files are listed, read and written through
Beam's ``FileSystems``, so the job runs on any runner (``pipeline_args``) with local or remote paths.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from ramp.pipelines.answerability import check_leakage_guard, index_files
from ramp.pipelines.chunks import run_chunked
from ramp.pipelines.io import WriteJsonlShards, WriteParquetShards, clear_outputs, read_json, shard_path
from ramp.pipelines.runner import LOCAL, BeamRun
from ramp.pipelines.samples_io import ReadSamples

from ramp.cot.builder import TrajectoryBuilder
from ramp.cot.config import CotConfig
from ramp.cot.trajectories import TRAJECTORY_SCHEMA, Trajectory
from ramp.data.rejections import Rejection

TRAJECTORIES = "trajectories"
REJECTED = "rejected"
METRICS_NAMESPACE = "ramp.cot"
STATS_FILE = "stats.json"
OUTPUT_FILES = (f"{TRAJECTORIES}-*.parquet", f"{REJECTED}-*.jsonl", STATS_FILE)


def sample_files(samples_dir: str | Path) -> list[str]:
    """Sorted paths of ``<samples_dir>/samples-*.parquet``, or of a QA dataset given as a ``.jsonl`` path
    or glob (rows ``{"id", "question", "golden_answers"}``), on any Beam filesystem."""
    source = str(samples_dir).rstrip("/")
    qa = source.endswith(".jsonl")
    pattern = source if qa else f"{source}/samples-*.parquet"
    files = sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
    if not files:
        what = "no QA file matches" if qa else "no samples-*.parquet in"
        raise FileNotFoundError(f"{what} {samples_dir} (build samples with `ramp data build`)")
    return files


class BuildTrajectoriesFn(beam.DoFn):
    """Batches of sample rows -> trajectory rows (main) and rejections (``rejected``)."""

    def __init__(self, config: CotConfig) -> None:
        self.config = config
        self._builder: TrajectoryBuilder | None = None

    def setup(self) -> None:
        self._builder = TrajectoryBuilder.from_config(self.config)

    def process(self, rows: list[dict[str, Any]]) -> Iterator[Any]:
        assert self._builder is not None, "setup() builds the teacher and retriever"
        for output in self._builder.build(rows):
            if isinstance(output, Trajectory):
                Metrics.counter(METRICS_NAMESPACE, "kept").inc()
                yield output.to_row()
            else:
                Metrics.counter(METRICS_NAMESPACE, f"rejected_{output.reason}").inc()
                yield beam.pvalue.TaggedOutput(REJECTED, output)

    def teardown(self) -> None:
        if self._builder is not None:
            self._builder.close()
            self._builder = None


class BuildTrajectories(beam.PTransform):
    """Sample rows -> tagged ``trajectories`` (rows of TRAJECTORY_SCHEMA) and ``rejected``."""

    def __init__(self, config: CotConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, rows: Any) -> Any:
        size = self.config.output.batch_size
        return (
            rows
            | "Batch" >> beam.BatchElements(min_batch_size=size, max_batch_size=size)
            | "Teach"
            >> beam.ParDo(BuildTrajectoriesFn(self.config)).with_outputs(REJECTED, main=TRAJECTORIES)
        )


def _trajectory_counts(row: dict[str, Any]) -> Counter[str]:
    return Counter(kept=1, num_searches=row["num_searches"], score_x1e6=round(row["score"] * 1e6))


def _rejection_counts(rejection: Rejection) -> Counter[str]:
    return Counter({"rejected": 1, f"reason:{rejection.reason}": 1})


def summarize(counts: dict[str, int], config: CotConfig) -> dict[str, Any]:
    """stats.json: counts, reasons and the verified yield (kept / samples in)."""
    samples_in, kept, rejected = counts.get("samples_in", 0), counts.get("kept", 0), counts.get("rejected", 0)
    return {
        "samples_in": samples_in,
        "kept": kept,
        "rejected": rejected,
        "accounted": samples_in == kept + rejected,
        "verified_yield": kept / samples_in if samples_in else 0.0,
        "rejected_by_reason": {
            k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("reason:")
        },
        "mean_searches_kept": counts.get("num_searches", 0) / kept if kept else 0.0,
        "mean_score_kept": counts.get("score_x1e6", 0) / 1e6 / kept if kept else 0.0,
        "teacher": config.teacher.kind,
        "teacher_model": config.teacher.model_name,
        "round": config.round,
        "verify": config.verify.model_dump(mode="json", include={"method", "threshold"}),
    }


def _write_stats(counts: Counter[str], output_dir: str, config: CotConfig) -> dict[str, Any]:
    stats = summarize(dict(counts), config)
    path = f"{output_dir.rstrip('/')}/{STATS_FILE}"
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        out.write((json.dumps(stats, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return stats


class WriteStats(beam.PTransform):
    def __init__(self, output_dir: str, config: CotConfig) -> None:
        super().__init__()
        self.output_dir, self.config = output_dir, config

    def expand(self, counters: Any) -> Any:
        return (
            counters
            | "Flatten" >> beam.Flatten()
            | "Sum" >> beam.CombineGlobally(lambda cs: sum(cs, Counter()))
            | "Write" >> beam.Map(_write_stats, output_dir=self.output_dir, config=self.config)
        )


def build(pipeline: beam.Pipeline, config: CotConfig, files: Sequence[str], out: str) -> None:
    """The trajectory job as one pipeline: read samples -> teach and verify -> write trajectories,
    rejections and ``stats.json`` into ``out``."""
    rows = pipeline | "ReadSamples" >> ReadSamples(files)
    built = rows | "BuildTrajectories" >> BuildTrajectories(config)
    shards = config.output.num_shards
    _ = built[TRAJECTORIES] | "WriteTrajectories" >> WriteParquetShards(
        f"{out}/{TRAJECTORIES}", TRAJECTORY_SCHEMA, shards, lambda row: row["sample_id"]
    )
    _ = built[REJECTED] | "WriteRejected" >> WriteJsonlShards(
        f"{out}/{REJECTED}", shards, lambda r: f"{r.record_id}\x1f{r.reason}", Rejection.to_json
    )
    _ = (
        rows | "CountIn" >> beam.Map(lambda _: Counter(samples_in=1)),
        built[TRAJECTORIES] | "CountKept" >> beam.Map(_trajectory_counts),
        built[REJECTED] | "CountRejected" >> beam.Map(_rejection_counts),
    ) | "WriteStats" >> WriteStats(out, config)


@dataclass(frozen=True)
class CotJob:
    """``data cot`` for the chunk driver (:class:`ramp.pipelines.chunks.ChunkedJob`): its input files in
    parts, each a run of :func:`build`."""

    config: CotConfig
    beam_run: BeamRun
    name: str = "data cot"
    output_patterns: tuple[str, ...] = (f"{TRAJECTORIES}-*.parquet", f"{REJECTED}-*.jsonl")
    summary_files: tuple[str, ...] = ()
    two_phase: bool = False

    @property
    def settings(self) -> CotConfig:
        return self.config

    def inputs(self, part: list[str]) -> list[str]:
        return [*part, *index_files(self.config.retriever)]

    def outputs(self, part: list[str]) -> list[str]:
        shards = self.config.output.num_shards
        files = ((TRAJECTORIES, ".parquet"), (REJECTED, ".jsonl"))
        return [shard_path(prefix, n, shards, suffix) for prefix, suffix in files for n in range(shards)]

    def run(self, part: list[str], directory: str) -> dict[str, Any]:
        clear_outputs(directory, OUTPUT_FILES)
        self.beam_run.run(lambda p: build(p, self.config, part, directory), METRICS_NAMESPACE)
        return read_json(f"{directory}/{STATS_FILE}")

    def merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(sorted(summarize(_counts(parts), self.config).items()))


def _counts(parts: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The counts behind chunk stats (:func:`summarize`'s input), summed: the means are integer sums over
    ``kept``, so they are recovered exactly."""
    counts: Counter[str] = Counter()
    for stats in parts:
        kept = stats["kept"]
        counts.update(samples_in=stats["samples_in"], kept=kept, rejected=stats["rejected"])
        counts.update({f"reason:{r}": n for r, n in stats["rejected_by_reason"].items()})
        counts["num_searches"] += round(stats["mean_searches_kept"] * kept)
        counts["score_x1e6"] += round(stats["mean_score_kept"] * 1e6 * kept)
    return dict(counts)


def run_cot(
    samples_dir: str | Path,
    output_dir: str | Path,
    config: CotConfig,
    beam_run: BeamRun = LOCAL,
    chunk_mb: float | None = None,
    allow_foreign_index: bool = False,
) -> dict[str, Any]:
    """Run the job on any Beam runner (``beam_run``; default the local FnApiRunner) and return
    stats.json's content. Paths may be local or on any Beam filesystem; old outputs are replaced.
    Local runs go in chunks of input files of about ``chunk_mb`` megabytes (None: automatic, 0: one
    pass; :mod:`ramp.pipelines.chunks`), each a run of :func:`build` over its files.

    On start, samples (not QA questions) pass the leakage guard of the answerability stage
    (:func:`ramp.pipelines.answerability.check_leakage_guard`; ``allow_foreign_index`` to proceed anyway)."""
    index = config.retriever.index
    if config.retriever.kind == "lucene" and not any(Path(index or "").glob("segments_*")):
        raise FileNotFoundError(f"no Lucene index in {index} (build one with `ramp index build`)")
    files = sample_files(samples_dir)
    if not str(samples_dir).rstrip("/").endswith(".jsonl"):
        check_leakage_guard(str(samples_dir), config.retriever, allow_foreign_index)
    sizes = [m.size_in_bytes for r in FileSystems.match(files) for m in r.metadata_list]
    job = CotJob(config, beam_run)
    return run_chunked(job, str(output_dir).rstrip("/"), files, sizes, chunk_mb, beam_run.pipeline_args)
