"""``ramp data audit DIR``: the quality report of a samples directory (``audit.json``).

It is how a user judges a new corpus or config, and how the README's data figures are measured:
masks by NER label and type; digit-less ``number``/``date`` masks; masks with a content word visible
elsewhere in the masked passage (a partial leak: ``[mask]`` for "William Godwin" with "Godwin" shown);
adjacent masks (no content word between two masks); the answerable share by type and by k (after
``ramp data answerability``); samples by k; passages lost to ``starts_with_mask``; and random samples
printed masked (seeded, so the same directory prints the same examples).
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from ramp.data.samples import Sample
from ramp.files import filesystem, output_files
from ramp.stats_table import table_row
from ramp.text import content_tokens

AUDIT_FILE = "audit.json"


def iter_samples(directory: str) -> Iterator[Sample]:
    """Every sample of ``directory``'s ``samples-*.parquet`` files, in file order."""
    fs, _ = filesystem(directory)
    for path in output_files(directory, "samples-", ".parquet"):
        for batch in pq.ParquetFile(filesystem(path)[1], filesystem=fs).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield Sample.from_row(row)


def _rejections_by_reason(directory: str) -> Counter[str]:
    fs, _ = filesystem(directory)
    counts = Counter[str]()
    for path in output_files(directory, "rejected-", ".jsonl"):
        with fs.open_input_stream(filesystem(path)[1]) as f:
            for line in f.read().decode("utf-8").splitlines():
                if line.strip():
                    counts[json.loads(line)["reason"]] += 1
    return counts


def mask_problems(sample: Sample) -> tuple[list[int], list[int], list[int]]:
    """Indexes of the sample's masks that are digit-less numbers/dates, leak a content word (visible
    elsewhere in the masked passage), or touch the next mask (no content word between them)."""
    visible = set(content_tokens(sample.masked_passage))
    ordered = sorted(range(len(sample.masks)), key=lambda i: sample.masks[i].char_start)
    digitless = [
        i
        for i, m in enumerate(sample.masks)
        if m.type in ("number", "date") and not any(ch.isdigit() for ch in m.text)
    ]
    leaking = [i for i, m in enumerate(sample.masks) if set(content_tokens(m.text)) & visible]
    adjacent = [
        a
        for a, b in itertools.pairwise(ordered)
        if not content_tokens(sample.passage[sample.masks[a].char_end : sample.masks[b].char_start])
    ]
    return digitless, leaking, adjacent


def audit(directory: str, examples: int = 20, seed: int = 0) -> dict[str, Any]:
    """The report of ``directory`` (see the module docstring)."""
    by_label, by_type, by_k = Counter[str](), Counter[str](), Counter[str]()
    answerable_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    answerable_k: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    problems: dict[str, list[str]] = {"digitless": [], "leaking": [], "adjacent": []}
    counts = Counter[str]()
    rng, reservoir = random.Random(seed), list[Sample]()
    samples = masks = 0
    for sample in iter_samples(directory):
        samples += 1
        masks += sample.num_masks
        by_k[str(sample.num_masks)] += 1
        digitless, leaking, adjacent = mask_problems(sample)
        for name, found in (("digitless", digitless), ("leaking", leaking), ("adjacent", adjacent)):
            counts[name] += len(found)
            problems[name] += [f"{sample.sample_id}: {sample.masks[i].text!r}" for i in found]
        for mask in sample.masks:
            by_label[mask.label] += 1
            by_type[mask.type] += 1
            if mask.answerable is not None:
                for table, key in ((answerable_type, mask.type), (answerable_k, str(sample.num_masks))):
                    table[key][0] += int(mask.answerable)
                    table[key][1] += 1
        if len(reservoir) < examples:
            reservoir.append(sample)
        elif (j := rng.randrange(samples)) < examples:
            reservoir[j] = sample
    rejected = _rejections_by_reason(directory)
    passages = samples + sum(rejected.values())
    return {
        "directory": directory,
        "samples": samples,
        "masks": masks,
        "samples_by_k": dict(sorted(by_k.items())),
        "masks_by_type": dict(sorted(by_type.items())),
        "masks_by_label": dict(by_label.most_common()),
        "digitless_number_date_masks": counts["digitless"],
        "masks_leaking_content_word": counts["leaking"],
        "masks_leaking_share": round(counts["leaking"] / masks, 4) if masks else 0.0,
        "adjacent_masks": counts["adjacent"],
        "rejected_by_reason": dict(rejected.most_common()),
        "starts_with_mask_share": round(rejected["starts_with_mask"] / passages, 4) if passages else 0.0,
        "answerable_share_by_type": _shares(answerable_type),
        "answerable_share_by_k": _shares(answerable_k),
        "problem_examples": {name: found[:20] for name, found in problems.items()},
        "examples": [
            {"sample_id": s.sample_id, "masked_passage": s.masked_passage, "answers": list(s.answers)}
            for s in sorted(reservoir, key=lambda s: s.sample_id)
        ],
    }


def _shares(table: dict[str, list[int]]) -> dict[str, float]:
    return {key: round(found / total, 4) for key, (found, total) in sorted(table.items()) if total}


def write_audit(directory: str, report: dict[str, Any]) -> str:
    """Write ``audit.json`` into ``directory``; returns its path."""
    fs, root = filesystem(directory)
    path = f"{root}/{AUDIT_FILE}"
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8"))
    return f"{directory.rstrip('/')}/{AUDIT_FILE}"


def format_audit(report: dict[str, Any]) -> str:
    """A readable summary of :func:`audit` (the examples printed masked, with their answers)."""
    lines = [
        table_row("samples", report["samples"]),
        table_row("masks", report["masks"]),
        "samples by k",
        *(table_row(k, n, nested=True) for k, n in report["samples_by_k"].items()),
        "masks by type",
        *(table_row(t, n, nested=True) for t, n in report["masks_by_type"].items()),
        "masks by NER label",
        *(table_row(label, n, nested=True) for label, n in report["masks_by_label"].items()),
        table_row("digit-less number/date masks", report["digitless_number_date_masks"]),
        table_row(
            "masks leaking a content word",
            report["masks_leaking_content_word"],
            f"({report['masks_leaking_share']:.2%} of masks)",
        ),
        table_row("adjacent masks", report["adjacent_masks"]),
        table_row("passages lost to starts_with_mask", report["starts_with_mask_share"], spec=".2%"),
    ]
    for title, key in (
        ("answerable share by type", "answerable_share_by_type"),
        ("by k", "answerable_share_by_k"),
    ):
        if report[key]:
            lines.append(title)
            lines += [table_row(name, share, spec=".1%", nested=True) for name, share in report[key].items()]
    lines.append(f"\n{len(report['examples'])} random samples:")
    for example in report["examples"]:
        lines.append(f"\n[{example['sample_id']}] {example['masked_passage']}")
        lines.append("  answers: " + " | ".join(example["answers"]))
    return "\n".join(lines)
