"""The shard job (``ramp pretrain prepare``): trajectories -> packed megatron ``IndexedDataset`` shards.

    trajectories-*.parquet --ReadTrajectories--> rows --Tokenize--> conversations | rejected
    conversations --KeyByShard/Group--> best-fit-decreasing packing per shard --> packed-SSSSS-of-NNNNN
        {.bin,.idx} (tokens) + {-loss-mask.bin,-loss-mask.idx} (aligned 0/1 loss mask)   | rejected (too_long)
    rejected --WriteRejected--> rejected-SSSSS-of-NNNNN.jsonl
    all counts --WriteManifest--> manifest.json (tokenizer/template/protocol fingerprint, seq_length,
        conversations in = packed + rejected, rows, packing efficiency)

A conversation goes to shard ``stable_seed(sample_id) % num_shards`` and a shard packs its conversations
in (length, sample_id) order, so reruns write byte-identical files on any runner. Paths may be on any
Beam filesystem.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from ramp.pipelines.io import WriteJsonlShards, clear_outputs, shard_path
from ramp.pipelines.runner import pipeline_options
from ramp.pipelines.samples_io import ReadSamples

from ramp.agent.backends import load_tokenizer
from ramp.data.rejections import Rejection
from ramp.seeding import stable_seed
from ramp.train.config import PretrainConfig
from ramp.train.packing import pack_best_fit
from ramp.train.shards import MANIFEST, SHARD_PREFIX, write_packed_shard
from ramp.train.tokens import TokenizedConversation, tokenize_messages, tokenizer_fingerprint

STAGE = "pretrain_prepare"
METRICS_NAMESPACE = "ramp.pretrain"
REJECTED = "rejected"
OUTPUT_FILES = (f"{SHARD_PREFIX}-*", f"{REJECTED}-*.jsonl", MANIFEST)


def trajectory_files(directory: str | Path) -> list[str]:
    pattern = f"{str(directory).rstrip('/')}/trajectories-*.parquet"
    files = sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
    if not files:
        raise FileNotFoundError(f"no trajectories-*.parquet in {directory} (make them with `ramp data cot`)")
    return files


class TokenizeFn(beam.DoFn):
    """Trajectory rows -> ``TokenizedConversation`` (main) or ``Rejection`` (``rejected``)."""

    def __init__(self, tokenizer_path: str, end_of_turn_token: str | None) -> None:
        self.tokenizer_path, self.end_of_turn_token = tokenizer_path, end_of_turn_token
        self._tokenizer: Any = None

    def setup(self) -> None:
        self._tokenizer = load_tokenizer(self.tokenizer_path)

    def process(self, row: dict[str, Any]) -> Iterator[Any]:
        sample_id = str(row.get("sample_id", ""))
        try:
            yield tokenize_messages(sample_id, row["messages"], self._tokenizer, self.end_of_turn_token)
        except (ValueError, KeyError, TypeError) as err:
            Metrics.counter(METRICS_NAMESPACE, "rejected_unrenderable").inc()
            yield beam.pvalue.TaggedOutput(
                REJECTED,
                Rejection(
                    sample_id, STAGE, "unrenderable", str(err), json.dumps(row.get("messages"), default=str)
                ),
            )


def pack_and_write(
    shard: int,
    conversations: Iterable[TokenizedConversation],
    out: str,
    config: PretrainConfig,
    vocab_size: int,
) -> Iterator[Any]:
    """Pack one shard's conversations and write its shard pair; too-long ones are rejected."""
    ordered = sorted(conversations, key=lambda c: c.sample_id)
    capacity = config.prepare.seq_length + 1
    packing = pack_best_fit([len(c) for c in ordered], capacity)
    prefix = shard_path(f"{out}/{SHARD_PREFIX}", shard, config.prepare.num_shards, "")
    write_packed_shard(prefix, ordered, packing, vocab_size)
    for i in packing.too_long:
        yield beam.pvalue.TaggedOutput(
            REJECTED,
            Rejection(
                ordered[i].sample_id,
                STAGE,
                "too_long",
                f"{len(ordered[i])} tokens > seq_length + 1 = {capacity}: dropped, never cut",
            ),
        )
    yield Counter(
        packed=len(ordered) - len(packing.too_long),
        rows=len(packing.rows),
        tokens=packing.tokens,
        loss_tokens=sum(sum(ordered[i].loss_mask) for row in packing.rows for i in row),
    )


def _write_manifest(
    counts: Counter[str], out: str, config: PretrainConfig, fingerprint: dict[str, Any]
) -> None:
    rows, capacity = counts.get("rows", 0), config.prepare.seq_length + 1
    conversations_in = counts.get("conversations_in", 0)
    rejected = {k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("reason:")}
    manifest = {
        **fingerprint,
        "seq_length": config.prepare.seq_length,
        "num_shards": config.prepare.num_shards,
        "shards": [
            shard_path(SHARD_PREFIX, s, config.prepare.num_shards, "")
            for s in range(config.prepare.num_shards)
        ],
        "conversations_in": conversations_in,
        "packed": counts.get("packed", 0),
        "rejected": sum(rejected.values()),
        "rejected_by_reason": rejected,
        "accounted": conversations_in == counts.get("packed", 0) + sum(rejected.values()),
        "rows": rows,
        "tokens": counts.get("tokens", 0),
        "loss_tokens": counts.get("loss_tokens", 0),
        "packing_efficiency": counts.get("tokens", 0) / (rows * capacity) if rows else 0.0,
        "loss_mask": "aligned with tokens (1 = assistant-produced); labels = tokens[1:], mask follows labels",
    }
    with FileSystems.create(f"{out}/{MANIFEST}", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def build_pipeline(
    pipeline: beam.Pipeline,
    files: Sequence[str],
    out: str,
    config: PretrainConfig,
    fingerprint: dict[str, Any],
) -> None:
    num_shards = config.prepare.num_shards
    rows = pipeline | "ReadTrajectories" >> ReadSamples(files)
    tokenized = rows | "Tokenize" >> beam.ParDo(
        TokenizeFn(config.tokenizer, config.prepare.end_of_turn_token)
    ).with_outputs(REJECTED, main="conversations")
    keyed = tokenized["conversations"] | "KeyByShard" >> beam.Map(
        lambda c: (stable_seed(c.sample_id) % num_shards, c)
    )
    every_shard = pipeline | "AllShards" >> beam.Create([(i, None) for i in range(num_shards)])
    packed = (
        {"conversations": keyed, "shards": every_shard}
        | "GroupByShard" >> beam.CoGroupByKey()
        | "PackAndWrite"
        >> beam.FlatMap(
            lambda kv: pack_and_write(kv[0], kv[1]["conversations"], out, config, fingerprint["vocab_size"])
        ).with_outputs(REJECTED, main="counts")
    )
    rejected = (tokenized[REJECTED], packed[REJECTED]) | "AllRejected" >> beam.Flatten()
    _ = rejected | "WriteRejected" >> WriteJsonlShards(
        f"{out}/{REJECTED}", num_shards, lambda r: f"{r.record_id}\x1f{r.reason}", Rejection.to_json
    )
    _ = (
        (
            rows | "CountIn" >> beam.Map(lambda _: Counter(conversations_in=1)),
            packed["counts"],
            rejected | "CountRejected" >> beam.Map(lambda r: Counter({f"reason:{r.reason}": 1})),
        )
        | "FlattenCounts" >> beam.Flatten()
        | "Sum" >> beam.CombineGlobally(lambda cs: sum(cs, Counter()))
        | "WriteManifest" >> beam.Map(_write_manifest, out=out, config=config, fingerprint=fingerprint)
    )


def run_prepare(
    trajectories: str | Path,
    output_dir: str | Path,
    config: PretrainConfig,
    workers: int = 1,
    pipeline_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the job on any Beam runner and return the manifest; old outputs in ``output_dir`` are replaced."""
    files = trajectory_files(trajectories)
    fingerprint = tokenizer_fingerprint(load_tokenizer(config.tokenizer), config.prepare.end_of_turn_token)
    out = str(output_dir).rstrip("/")
    clear_outputs(out, OUTPUT_FILES)
    with beam.Pipeline(options=pipeline_options(workers, pipeline_args)) as pipeline:
        build_pipeline(pipeline, files, out, config, fingerprint)
    with FileSystems.open(f"{out}/{MANIFEST}", compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        manifest: dict[str, Any] = json.loads(raw.read().decode("utf-8"))
    return manifest
