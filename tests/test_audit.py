"""``ramp data audit``: the quality report counts exactly the problems it names."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ramp.data.audit import AUDIT_FILE, audit, format_audit, mask_problems
from ramp.data.rejections import Rejection
from ramp.data.samples import SAMPLE_SCHEMA, Mask, Sample, mask_text

ROOT = Path(__file__).resolve().parent.parent


def _sample(
    sample_id: str, text: str, spans: list[tuple[str, str]], answerable: bool | None = None
) -> Sample:
    masks = []
    for needle, kind in spans:
        start = text.index(needle)
        masks.append(Mask(needle, kind, kind.upper(), start, start + len(needle), answerable))
    masks.sort(key=lambda m: m.char_start)
    masked = mask_text(text, [(m.char_start, m.char_end) for m in masks])
    return Sample(sample_id, sample_id, "a", "T", text, masked, tuple(masks), (sample_id,), "p")


TEXT = "William Godwin met Shelley in 1812 and two friends. Later Godwin wrote in London, Paris on 5 May."


def test_mask_problems_name_each_kind() -> None:
    sample = _sample("s", TEXT, [("William Godwin", "entity"), ("two", "number"), ("London", "entity")])
    assert mask_problems(sample) == ([1], [0], [])  # "two" has no digit; "Godwin" shows in sentence 2
    touching = _sample("t", TEXT, [("London", "entity"), ("Paris", "entity"), ("1812", "date")])
    assert mask_problems(touching) == ([], [], [1])  # "London, Paris": no content word between


def test_audit_counts_and_writes_its_report(tmp_path: Path) -> None:
    good = _sample("g1", TEXT, [("Shelley", "entity"), ("5 May", "date")], answerable=True)
    samples = [
        good,
        replace(good, sample_id="g2", masks=(replace(good.masks[0], answerable=False), good.masks[1])),
        _sample("bad", TEXT, [("William Godwin", "entity"), ("two", "number"), ("London", "entity")]),
        _sample("touch", TEXT, [("London", "entity"), ("Paris", "entity")]),
    ]
    pq.write_table(
        pa.Table.from_pylist([s.to_row() for s in samples], schema=SAMPLE_SCHEMA),
        tmp_path / "samples-00000-of-00001.parquet",
    )
    rejected = [
        Rejection("r1", "mask", "starts_with_mask", ""),
        Rejection("r2", "mask", "no_eligible_span", ""),
    ]
    (tmp_path / "rejected-00000-of-00001.jsonl").write_text("".join(r.to_json() + "\n" for r in rejected))
    report = audit(str(tmp_path), examples=3, seed=1)
    assert report["samples"] == 4 and report["masks"] == 9
    assert report["samples_by_k"] == {"2": 3, "3": 1}
    assert report["masks_by_type"] == {"date": 2, "entity": 6, "number": 1}
    assert report["masks_by_label"]["ENTITY"] == 6
    assert report["digitless_number_date_masks"] == 1
    assert report["masks_leaking_content_word"] == 1 and report["masks_leaking_share"] == round(1 / 9, 4)
    assert report["adjacent_masks"] == 1
    assert report["starts_with_mask_share"] == round(1 / 6, 4)
    assert report["answerable_share_by_type"] == {"date": 1.0, "entity": 0.5}
    assert report["answerable_share_by_k"] == {"2": 0.75}
    assert len(report["examples"]) == 3 and audit(str(tmp_path), examples=3, seed=1) == report
    assert "[mask]" in format_audit(report) and "adjacent masks" in format_audit(report)

    done = subprocess.run(
        [sys.executable, "-m", "ramp", "data", "audit", str(tmp_path), "--examples", "3", "--seed", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "masks leaking a content word" in done.stdout and "3 random samples" in done.stdout
    assert json.loads((tmp_path / AUDIT_FILE).read_text(encoding="utf-8")) == report
