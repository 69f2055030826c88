"""The E2HQA job (``ramp data synthesize``): seed questions -> harder questions + dead-letter rows + stats.

    seeds *.jsonl --ReadSeeds--> rows --Synthesize--> questions | rejected
    questions --WriteQuestions--> questions-SSSSS-of-NNNNN.jsonl  (QA rows, sorted by id)
    rejected  --WriteRejected-->  rejected-SSSSS-of-NNNNN.jsonl   (sorted by seed id, reason)
    counts    --WriteStats-->     stats.json (seeds_in = kept + rejected, reasons, kept questions by hops)

``Synthesize`` opens the retriever (and the LLM endpoint with ``synth.backend: openai``) in ``setup()``
and runs :class:`ramp.data.synthesis.QuestionSynthesizer` on each seed; a row that is not a seed goes to
the dead-letter output as ``unparseable`` or ``bad_seed``. The questions are QA rows that every QA stage
reads (``ramp data cot --samples``, ``ramp finetune rl --dataset flashrag``, ``ramp eval``), the chain of
searches that answers each under ``metadata.chain``. Local runs go in chunks of input files, like every job.
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
from ramp.pipelines.answerability import index_files
from ramp.pipelines.chunks import run_chunked, sum_stats
from ramp.pipelines.io import WriteJsonlShards, clear_outputs, read_json, shard_path
from ramp.pipelines.runner import LOCAL, BeamRun
from ramp.pipelines.samples_io import UNPARSEABLE, ReadSamples

from ramp.agent.backends.base import GenerationRequest
from ramp.agent.backends.openai import OpenAIBackend
from ramp.data.rejections import Rejection
from ramp.data.synthesis import (
    STAGE,
    Describer,
    QuestionSynthesizer,
    SynthConfig,
    SynthesisSettings,
    SynthesizedQuestion,
    description_prompt,
    seed_from_row,
)
from ramp.retrieval.base import Hit
from ramp.retrieval.config import build_retriever
from ramp.seeding import stable_seed

QUESTIONS = "questions"
REJECTED = "rejected"
STATS_FILE = "stats.json"
METRICS_NAMESPACE = "ramp.synthesize"
OUTPUT_FILES = (f"{QUESTIONS}-*.jsonl", f"{REJECTED}-*.jsonl", STATS_FILE)


def seed_files(seeds: str | Path) -> list[str]:
    """Sorted paths of the seed QA files: a ``.jsonl`` path or glob, on any Beam filesystem."""
    pattern = str(seeds)
    if not pattern.endswith(".jsonl"):
        raise ValueError(f"seeds must be a .jsonl file or glob of QA rows, got {seeds}")
    files = sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
    if not files:
        raise FileNotFoundError(f"no seed file matches {seeds}")
    return files


def llm_describer(backend: Any, config: SynthConfig) -> Describer:
    """A describer that asks a generation backend (chat messages) for one description."""

    def describe(entity: str, hit: Hit, noun: str | None) -> list[str]:
        request = GenerationRequest(
            messages=description_prompt(entity, hit, noun),
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=stable_seed(config.seed, "describe", entity, hit.doc_id) % 2**31,
        )
        (result,) = backend.generate([request])
        return [result.text]

    return describe


class SynthesizeFn(beam.DoFn):
    """Seed rows -> question rows (main) and :class:`Rejection` (``rejected``)."""

    def __init__(self, settings: SynthesisSettings) -> None:
        self.settings = settings
        self._synthesizer: QuestionSynthesizer | None = None
        self._backend: Any = None

    def setup(self) -> None:
        synth = self.settings.synth
        describe = None
        if synth.backend == "openai":
            self._backend = OpenAIBackend(synth.openai)
            describe = llm_describer(self._backend, synth)
        self._synthesizer = QuestionSynthesizer(build_retriever(self.settings.retriever), synth, describe)

    def process(self, row: dict[str, Any]) -> Iterator[Any]:
        assert self._synthesizer is not None, "setup() opens the retriever"
        record_id = str(row.get("id", ""))
        if UNPARSEABLE in row:
            yield self._rejected(
                Rejection(record_id, STAGE, UNPARSEABLE, "not a JSON object", row[UNPARSEABLE])
            )
            return
        try:
            seed = seed_from_row(row)
        except ValueError as err:
            yield self._rejected(
                Rejection(record_id, STAGE, "bad_seed", str(err), json.dumps(row, default=str))
            )
            return
        try:
            outcome = self._synthesizer.synthesize(seed)
        except Exception as err:  # the LLM endpoint failed after its retries: this seed, not the job
            if self._backend is None:
                raise
            outcome = Rejection(seed.id, STAGE, "llm_error", f"{type(err).__name__}: {err}", seed.question)
        if isinstance(outcome, SynthesizedQuestion):
            Metrics.counter(METRICS_NAMESPACE, "kept").inc()
            yield outcome.to_row()
        else:
            yield self._rejected(outcome)

    @staticmethod
    def _rejected(rejection: Rejection) -> Any:
        Metrics.counter(METRICS_NAMESPACE, f"rejected_{rejection.reason}").inc()
        return beam.pvalue.TaggedOutput(REJECTED, rejection)

    def teardown(self) -> None:
        if self._synthesizer is not None:
            self._synthesizer.retriever.close()
            self._synthesizer = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None


class Synthesize(beam.PTransform):
    """Seed rows -> tagged ``questions`` (QA rows with their chain) and ``rejected``."""

    def __init__(self, settings: SynthesisSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, rows: Any) -> Any:
        return rows | "Rewrite" >> beam.ParDo(SynthesizeFn(self.settings)).with_outputs(
            REJECTED, main=QUESTIONS
        )


def summarize(counts: dict[str, int], settings: SynthesisSettings) -> dict[str, Any]:
    """stats.json: seeds in, kept, rejected (by reason), kept questions by hops."""
    seeds_in, kept, rejected = counts.get("seeds_in", 0), counts.get("kept", 0), counts.get("rejected", 0)
    return {
        "seeds_in": seeds_in,
        "kept": kept,
        "rejected": rejected,
        "accounted": seeds_in == kept + rejected,
        "rejected_by_reason": {
            k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("reason:")
        },
        "kept_by_hops": {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("hops:")},
        "hops": settings.synth.hops,
        "backend": settings.synth.backend,
    }


def _write_stats(counts: Counter[str], output_dir: str, settings: SynthesisSettings) -> dict[str, Any]:
    stats = summarize(dict(counts), settings)
    with FileSystems.create(
        f"{output_dir.rstrip('/')}/{STATS_FILE}", compression_type=CompressionTypes.UNCOMPRESSED
    ) as out:
        out.write((json.dumps(stats, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return stats


class WriteSynthesisStats(beam.PTransform):
    def __init__(self, output_dir: str, settings: SynthesisSettings) -> None:
        super().__init__()
        self.output_dir, self.settings = output_dir, settings

    def expand(self, counters: Any) -> Any:
        return (
            counters
            | "Flatten" >> beam.Flatten()
            | "Sum" >> beam.CombineGlobally(lambda cs: sum(cs, Counter()))
            | "Write" >> beam.Map(_write_stats, output_dir=self.output_dir, settings=self.settings)
        )


def build(
    pipeline: beam.Pipeline, files: Sequence[str], output_dir: str, settings: SynthesisSettings
) -> None:
    """The job: read the seeds, synthesize, write the questions, the dead letters and the stats."""
    out, shards = output_dir.rstrip("/"), settings.output.num_shards
    rows = pipeline | "ReadSeeds" >> ReadSamples(files)
    made = rows | "Synthesize" >> Synthesize(settings)
    _ = made[QUESTIONS] | "WriteQuestions" >> WriteJsonlShards(
        f"{out}/{QUESTIONS}", shards, lambda r: r["id"]
    )
    _ = made[REJECTED] | "WriteRejected" >> WriteJsonlShards(
        f"{out}/{REJECTED}", shards, lambda r: f"{r.record_id}\x1f{r.reason}", Rejection.to_json
    )
    _ = (
        rows | "CountIn" >> beam.Map(lambda _: Counter(seeds_in=1)),
        made[QUESTIONS]
        | "CountKept" >> beam.Map(lambda r: Counter({"kept": 1, f"hops:{r['metadata']['hops']}": 1})),
        made[REJECTED]
        | "CountRejected" >> beam.Map(lambda r: Counter({"rejected": 1, f"reason:{r.reason}": 1})),
    ) | "WriteStats" >> WriteSynthesisStats(out, settings)


@dataclass(frozen=True)
class SynthesizeJob:
    """``data synthesize`` for the chunk driver (:class:`ramp.pipelines.chunks.ChunkedJob`): its seed
    files in parts, each a run of :func:`build`."""

    settings: SynthesisSettings
    beam_run: BeamRun
    name: str = "data synthesize"
    output_patterns: tuple[str, ...] = (f"{QUESTIONS}-*.jsonl", f"{REJECTED}-*.jsonl")
    summary_files: tuple[str, ...] = ()
    two_phase: bool = False

    def inputs(self, part: list[str]) -> list[str]:
        return [*part, *index_files(self.settings.retriever)]

    def outputs(self, part: list[str]) -> list[str]:
        shards = self.settings.output.num_shards
        return [
            shard_path(prefix, n, shards, ".jsonl") for prefix in (QUESTIONS, REJECTED) for n in range(shards)
        ]

    def run(self, part: list[str], directory: str) -> dict[str, Any]:
        clear_outputs(directory, OUTPUT_FILES)
        self.beam_run.run(lambda p: build(p, part, directory, self.settings), METRICS_NAMESPACE)
        return read_json(f"{directory}/{STATS_FILE}")

    def merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Chunk stats summed (``accounted`` recomputed)."""
        merged = sum_stats(parts, frozenset({"accounted"}), frozenset({"hops", "backend"}))
        merged["accounted"] = merged["seeds_in"] == merged["kept"] + merged["rejected"]
        return dict(sorted(merged.items()))


def run_synthesize(
    seeds: str | Path,
    output_dir: str | Path,
    settings: SynthesisSettings,
    beam_run: BeamRun = LOCAL,
    chunk_mb: float | None = None,
) -> dict[str, Any]:
    """Run the job on any Beam runner (``beam_run``; default the local FnApiRunner) and return
    stats.json's content; old outputs are replaced. Local runs go in chunks of seed files
    (:mod:`ramp.pipelines.chunks`)."""
    files = seed_files(seeds)
    sizes = [m.size_in_bytes for r in FileSystems.match(files) for m in r.metadata_list]
    job = SynthesizeJob(settings, beam_run)
    return run_chunked(job, str(output_dir).rstrip("/"), files, sizes, chunk_mb, beam_run.pipeline_args)
