"""Packed SFT shards as megatron-core ``IndexedDataset`` pairs, and the training dataset over a blend.

A shard is two indexed datasets with the same layout: ``{prefix}.bin/.idx`` (token ids) and
``{prefix}-loss-mask.bin/.idx`` (the aligned 0/1 loss mask). Each *sequence* is one conversation and each
*document* one packed row (its conversations, at most ``seq_length + 1`` tokens). Reading goes through
megatron's own ``IndexedDataset``; blends use megatron's ``w1 prefix1 w2 prefix2`` convention and its
``BlendedMegatronDatasetBuilder`` (a directory stands for all its shards, weighted by their rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ramp import engines
from ramp.seeding import stable_seed
from ramp.train.packing import Packing
from ramp.train.tokens import TokenizedConversation

LOSS_MASK_SUFFIX = "-loss-mask"
MANIFEST = "manifest.json"
SHARD_PREFIX = "packed"


def mask_prefix(prefix: str) -> str:
    return f"{prefix}{LOSS_MASK_SUFFIX}"


def token_dtype(vocab_size: int) -> type[np.number]:
    return np.uint16 if vocab_size < 65_000 else np.int32


def write_packed_shard(
    prefix: str, conversations: Sequence[TokenizedConversation], packing: Packing, vocab_size: int
) -> list[str]:
    """Write the packed rows of ``conversations`` as a shard pair at ``prefix`` (any Beam filesystem).

    megatron's ``IndexedDatasetBuilder`` writes local files; they are then copied through Beam's
    ``FileSystems``. Returns the written paths.
    """
    FileSystems = engines.beam("io.filesystems").FileSystems
    uncompressed = engines.beam("io.filesystem").CompressionTypes.UNCOMPRESSED
    IndexedDatasetBuilder = engines.megatron("datasets.indexed_dataset").IndexedDatasetBuilder

    written = []
    with tempfile.TemporaryDirectory(prefix="ramp-shard-") as tmp:
        local = os.path.join(tmp, "shard")
        tokens = IndexedDatasetBuilder(f"{local}.bin", dtype=token_dtype(vocab_size))
        masks = IndexedDatasetBuilder(f"{mask_prefix(local)}.bin", dtype=np.uint8)
        for row in packing.rows:
            for i in row:
                tokens.add_item(torch.tensor(conversations[i].input_ids, dtype=torch.int64))
                masks.add_item(torch.tensor(conversations[i].loss_mask, dtype=torch.int64))
            tokens.end_document()
            masks.end_document()
        tokens.finalize(f"{local}.idx")
        masks.finalize(f"{mask_prefix(local)}.idx")
        for src_prefix, dst_prefix in ((local, prefix), (mask_prefix(local), mask_prefix(prefix))):
            for ext in (".bin", ".idx"):
                dst = dst_prefix + ext
                with (
                    open(src_prefix + ext, "rb") as src,
                    FileSystems.create(dst, compression_type=uncompressed) as out,
                ):
                    shutil.copyfileobj(src, out)
                written.append(dst)
    return written


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST} in {directory} (make shards with `ramp pretrain prepare`)")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def shard_prefixes(directory: str | Path) -> list[str]:
    """The shard prefixes of a ``ramp pretrain prepare`` output directory, sorted."""
    found = sorted(str(p)[: -len(".idx")] for p in Path(directory).glob(f"{SHARD_PREFIX}-*.idx"))
    return [p for p in found if not p.endswith(LOSS_MASK_SUFFIX)]


def _num_rows(prefix: str) -> int:
    if os.path.getsize(f"{prefix}.bin") == 0:  # an empty shard (megatron cannot mmap an empty file)
        return 0
    return len(engines.megatron("datasets.indexed_dataset").IndexedDataset(prefix).document_indices) - 1


def expand_blend(blend: Sequence[str]) -> tuple[list[str], list[float] | None, list[Path]]:
    """Megatron's ``[w1, p1, w2, p2, ...]`` (or ``[p1, p2, ...]``) with directories expanded to their shards.

    A directory's weight is split over its shards by their number of rows. Returns prefixes, weights
    (None when none were given) and the directories whose manifests apply.
    """
    parsed = engines.megatron("datasets.utils").get_blend_from_list(list(blend))
    if parsed is None or not parsed[0]:
        raise ValueError("the data blend is empty")
    paths, weights = parsed
    prefixes: list[str] = []
    out_weights: list[float] = []
    directories: list[Path] = []
    for n, path in enumerate(paths):
        weight = weights[n] if weights is not None else 1.0
        if Path(path).is_dir():
            shards = shard_prefixes(path)
            rows = [_num_rows(p) for p in shards]
            if not shards or not sum(rows):
                raise ValueError(f"{path} holds no packed rows")
            prefixes += [p for p, r in zip(shards, rows, strict=True) if r]
            out_weights += [weight * r / sum(rows) for r in rows if r]
            directories.append(Path(path))
        else:
            prefixes.append(path)
            out_weights.append(weight)
            directories.append(Path(path).parent)
    return prefixes, (out_weights if weights is not None else None), directories


class PackedPair:
    """The low-level dataset: token and loss-mask ``IndexedDataset``s of one shard."""

    def __init__(self, prefix: str, mmap: bool = True) -> None:
        IndexedDataset = engines.megatron("datasets.indexed_dataset").IndexedDataset
        self.tokens = IndexedDataset(prefix, mmap=mmap)
        self.masks = IndexedDataset(mask_prefix(prefix), mmap=mmap)
        if not np.array_equal(
            self.tokens.sequence_lengths, self.masks.sequence_lengths
        ) or not np.array_equal(self.tokens.document_indices, self.masks.document_indices):
            raise ValueError(f"{prefix}: tokens and loss masks have different layouts")

    def __len__(self) -> int:
        return len(self.tokens.document_indices) - 1

    def row(self, index: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The conversations of packed row ``index``: token arrays and mask arrays."""
        start, end = self.tokens.document_indices[index], self.tokens.document_indices[index + 1]
        return [self.tokens[i] for i in range(start, end)], [self.masks[i] for i in range(start, end)]


def _packed_dataset_class() -> type:
    MegatronDataset: Any = engines.megatron("datasets.megatron_dataset").MegatronDataset

    class PackedSFTDataset(MegatronDataset):
        """Packed rows -> ``tokens, labels, loss_mask, segment_ids, position_ids`` of ``sequence_length``.

        Labels are the tokens shifted by one and the loss mask follows the labels; padding carries no
        loss. ``segment_ids`` number the conversations (-1 on padding); ``position_ids`` restart at 0 in
        each conversation. Rows are drawn in a shuffle seeded by the run's seed and the shard's content,
        epoch after epoch, up to ``num_samples``.
        """

        def __init__(self, dataset: PackedPair, dataset_path: str | None, indices: np.ndarray, *args: Any):
            super().__init__(dataset, dataset_path, indices, *args)
            count = self.num_samples if self.num_samples is not None else len(indices)
            epochs = -(-count // max(len(indices), 1))
            rng = np.random.default_rng([self.config.random_seed, _content_seed(dataset_path)])
            order = [rng.permutation(indices) for _ in range(epochs)]
            self.sample_rows = np.concatenate(order)[:count] if order else np.zeros(0, dtype=np.int64)

        @staticmethod
        def numel_low_level_dataset(low_level_dataset: PackedPair) -> int:
            return len(low_level_dataset)

        @staticmethod
        def build_low_level_dataset(dataset_path: str, config: Any) -> PackedPair:
            return PackedPair(dataset_path, mmap=config.mmap_bin_files)

        def __len__(self) -> int:
            return len(self.sample_rows)

        def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
            tokens, masks = self.dataset.row(int(self.sample_rows[idx]))
            return packed_sample(tokens, masks, self.config.sequence_length, pad_id=0)

    return PackedSFTDataset


def _content_seed(prefix: str | None) -> int:
    """A shard's shuffle seed from its index file (its sequence lengths and row boundaries), not its path:
    the same shards give the same order wherever the run's output lives."""
    if prefix is None:
        return 0
    return stable_seed(hashlib.blake2b(Path(f"{prefix}.idx").read_bytes()).hexdigest()) % (2**32)


def packed_sample(
    tokens: Sequence[np.ndarray], masks: Sequence[np.ndarray], seq_length: int, pad_id: int = 0
) -> dict[str, torch.Tensor]:
    """One packed row as training tensors of length ``seq_length`` (inputs, shifted labels, loss mask)."""
    capacity = seq_length + 1
    ids = np.full(capacity, pad_id, dtype=np.int64)
    loss = np.zeros(capacity, dtype=np.float32)
    segments = np.full(capacity, -1, dtype=np.int64)
    positions = np.zeros(capacity, dtype=np.int64)
    at = 0
    for n, (t, m) in enumerate(zip(tokens, masks, strict=True)):
        end = at + len(t)
        if end > capacity:
            raise ValueError(f"packed row holds {end} tokens, more than seq_length + 1 = {capacity}")
        ids[at:end], loss[at:end], segments[at:end] = t, m, n
        positions[at:end] = np.arange(len(t))
        at = end
    positions[at:] = np.arange(capacity - at)
    return {
        "tokens": torch.from_numpy(ids[:-1].copy()),
        "labels": torch.from_numpy(ids[1:].copy()),
        "loss_mask": torch.from_numpy(loss[1:].copy()),
        "segment_ids": torch.from_numpy(segments[:-1].copy()),
        "position_ids": torch.from_numpy(positions[:-1].copy()),
    }


def build_train_dataset(
    blend: Sequence[str], seq_length: int, num_samples: int, seed: int, cache_dir: str | None = None
) -> Any:
    """The training dataset over ``blend`` through megatron's ``BlendedMegatronDatasetBuilder``.

    With one shard and no weight it is the shard's ``PackedSFTDataset``; otherwise megatron's
    ``BlendedDataset`` drawing from the shards by weight. Call on every rank.
    """
    builders = engines.megatron("datasets.blended_megatron_dataset_builder")
    configs = engines.megatron("datasets.blended_megatron_dataset_config")
    prefixes, weights, _ = expand_blend(blend)
    if weights is None and len(prefixes) > 1:
        weights = [float(_num_rows(p)) for p in prefixes]
    config = configs.BlendedMegatronDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=(prefixes, weights),
        split="100,0,0",
        path_to_cache=cache_dir,
        mid_level_dataset_surplus=0.005,
    )
    builder = builders.BlendedMegatronDatasetBuilder(
        _packed_dataset_class(), [num_samples, 0, 0], lambda: True, config
    )
    return builder.build()[0]
