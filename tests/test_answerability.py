"""The answerability stage: pure logic, then the Beam transform over the real wiki-18 index."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from ramp.pipelines.answerability import CheckAnswerability, run_answerability
from ramp.pipelines.ramp_data import load_data_config, run_build

from ramp.data.answerability import (
    KeepPolicy,
    answerable_fraction_by_type,
    check_answerability,
    contains_answer,
    keep_sample,
    mask_offsets_error,
    mask_query,
    normalize_answer,
    sentence_bounds,
)
from ramp.data.rejections import Rejection
from ramp.data.samples import MASK_TOKEN, SAMPLE_SCHEMA, Mask, Sample, mask_text
from ramp.retrieval.config import AnswerabilityConfig, RetrieverConfig
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever, split_contents


def _sample(corpus: Path, doc_id: str, spans: list[tuple[str, str]]) -> Sample:
    """Passage ``doc_id`` of wiki-18 with each ``(text, type)`` span masked at its first occurrence."""
    docs = {d["id"]: d for d in map(json.loads, corpus.read_text(encoding="utf-8").splitlines())}
    title, text = split_contents(docs[doc_id]["contents"])
    masks = []
    for span, kind in spans:
        start = text.index(span)
        masks.append(Mask(span, kind, "ORG" if kind == "entity" else "DATE", start, start + len(span)))
    masks.sort(key=lambda m: m.char_start)
    masked = mask_text(text, [(m.char_start, m.char_end) for m in masks])
    return Sample(f"s-{doc_id}", doc_id, title, title, text, masked, tuple(masks), (doc_id,), "prompt")


@pytest.fixture(scope="module")
def samples(wiki18_corpus: Path) -> dict[str, Sample]:
    return {
        # "Twycross Zoo" is also in doc 748 (same article); "Evesham", "Genentech" and "Patton Boggs"
        # are in no other passage of the corpus, so excluding the source makes them unfindable.
        "mixed": _sample(wiki18_corpus, "747", [("Twycross Zoo", "entity"), ("Evesham", "entity")]),
        "none": _sample(wiki18_corpus, "0", [("Genentech", "entity"), ("Patton Boggs", "entity")]),
        "all": _sample(wiki18_corpus, "748", [("Twycross Zoo", "entity")]),
    }


def test_normalize_answer() -> None:
    assert normalize_answer("The  Beatles!") == "beatles"
    assert normalize_answer("Zürich, Switzerland") == "zurich switzerland"
    assert normalize_answer("U.K.") == "u k"
    assert normalize_answer("an Apple a day") == "apple day"
    assert normalize_answer("“Quoted” — text") == "quoted text"
    assert normalize_answer("The") == ""


def test_sentence_bounds_and_query(samples: dict[str, Sample]) -> None:
    text = "Evan L. Morris was born in Ohio. He worked for Roche! Then he left."
    start = text.index("Roche")
    first, last = sentence_bounds(text, start, start + 5)
    assert text[first:last] == "He worked for Roche!"
    assert text[slice(*sentence_bounds(text, 0, 4))] == "Evan L. Morris was born in Ohio."
    sample = samples["mixed"]
    for i in range(len(sample.masks)):
        query = mask_query(sample, i)
        assert MASK_TOKEN not in query
        assert all(m.text not in query for m in sample.masks)
    assert (
        mask_query(sample, 1)
        == "Badham was born in in Worcestershire, the daughter of a herbalist and homeopath."
    )


def test_check_answerability_fills_masks(
    lucene_retriever: LuceneRetriever, samples: dict[str, Sample]
) -> None:
    checked = check_answerability(list(samples.values()), lucene_retriever, k=5)
    flags = {s.sample_id: [(m.text, m.answerable) for m in s.masks] for s in checked}
    assert flags["s-747"] == [("Twycross Zoo", True), ("Evesham", False)]
    assert flags["s-0"] == [("Genentech", False), ("Patton Boggs", False)]
    assert flags["s-748"] == [("Twycross Zoo", True)]
    twycross = checked[0].masks[0]
    assert twycross.answer_rank is not None and 1 <= twycross.answer_rank <= 5
    assert checked[0].masks[1].answer_rank is None
    # Without the exclusion, the source passage itself answers every mask.
    unexcluded = check_answerability([replace(samples["mixed"], exclude_doc_ids=())], lucene_retriever, k=5)
    assert all(m.answerable for m in unexcluded[0].masks)


def test_keep_policies_and_fractions(lucene_retriever: LuceneRetriever, samples: dict[str, Sample]) -> None:
    checked = check_answerability(list(samples.values()), lucene_retriever, k=5)
    assert [keep_sample(s, "all_answerable") for s in checked] == [False, False, True]
    assert [keep_sample(s, "any_answerable") for s in checked] == [True, False, True]
    assert all(keep_sample(s, "record_only") for s in checked)
    assert answerable_fraction_by_type(checked) == {"entity": 0.4}
    as_date = replace(checked[2], masks=(replace(checked[2].masks[0], type="date"),))
    assert answerable_fraction_by_type([*checked[:2], as_date]) == {"date": 1.0, "entity": 0.25}
    assert answerable_fraction_by_type(samples.values()) == {}


def test_mask_offsets_are_validated(samples: dict[str, Sample]) -> None:
    sample = samples["all"]
    assert mask_offsets_error(sample) is None
    shifted = replace(sample.masks[0], char_start=sample.masks[0].char_start + 1)
    assert "does not match" in (mask_offsets_error(replace(sample, masks=(shifted,))) or "")
    outside = replace(sample.masks[0], char_end=10**6)
    assert "outside" in (mask_offsets_error(replace(sample, masks=(outside,))) or "")


def _facts(sample: Sample) -> tuple:
    return sample.sample_id, tuple((m.text, m.answerable, m.answer_rank is not None) for m in sample.masks)


def _check(
    samples: list[Sample], index: Path, config: AnswerabilityConfig, kept: list, rejected: list
) -> None:
    retriever_config = RetrieverConfig(index=str(index), threads=1)
    with beam.Pipeline(runner="FnApiRunner", options=PipelineOptions()) as pipeline:
        outputs = (
            pipeline | beam.Create(samples, reshuffle=False) | CheckAnswerability(retriever_config, config)
        )
        assert_that(outputs.samples | "Facts" >> beam.Map(_facts), equal_to(kept), label="kept")
        reasons = outputs.rejected | "Reasons" >> beam.Map(
            lambda r: (r.record_id, r.stage, r.reason) if isinstance(r, Rejection) else r
        )
        assert_that(reasons, equal_to(rejected), label="rejected")


def test_check_answerability_transform(wiki18_index: Path, samples: dict[str, Sample]) -> None:
    broken = replace(
        samples["all"], sample_id="s-broken", masks=(replace(samples["all"].masks[0], char_end=10**6),)
    )
    inputs = [samples["mixed"], samples["none"], samples["all"], broken]
    # batch_size=2 makes process() flush mid-bundle as well as in finish_bundle.
    _check(
        inputs,
        wiki18_index,
        AnswerabilityConfig(k=5, keep="all_answerable", batch_size=2),
        kept=[("s-748", (("Twycross Zoo", True, True),))],
        rejected=[
            ("s-747", "answerability", "unanswerable"),
            ("s-0", "answerability", "unanswerable"),
            ("s-broken", "answerability", "bad_mask_offsets"),
        ],
    )


def test_record_only_keeps_every_valid_sample(wiki18_index: Path, samples: dict[str, Sample]) -> None:
    _check(
        list(samples.values()),
        wiki18_index,
        AnswerabilityConfig(k=5, keep="record_only", batch_size=64),
        kept=[
            ("s-747", (("Twycross Zoo", True, True), ("Evesham", False, False))),
            ("s-0", (("Genentech", False, False), ("Patton Boggs", False, False))),
            ("s-748", (("Twycross Zoo", True, True),)),
        ],
        rejected=[],
    )


# --- The job end to end: `ramp data build` -> index of its passages -> answerability ------------------

ROOT = Path(__file__).resolve().parent.parent
SUBSET_LINES = 150


def _read_samples(directory: Path) -> list[Sample]:
    files = sorted(directory.glob("samples-*.parquet"))
    return [Sample.from_row(r) for f in files for r in pq.read_table(f).to_pylist()]


def _read_rejections(directory: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(directory.glob("rejected-*.jsonl")) for line in f.open()]


def _only_in_own_passage(sample: Sample, mask: Mask, corpus: dict[str, str]) -> bool:
    target = normalize_answer(mask.text)
    return [pid for pid, text in corpus.items() if contains_answer(text, target)] == [sample.passage_id]


@pytest.fixture(scope="module")
def job_input(wiki18_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real build of 150 wiki-18 lines, a Lucene index of its passages, and a samples directory with
    its samples plus unparseable rows, an unreadable file and a constructed exclusion case."""
    root = tmp_path_factory.mktemp("answerability-job")
    subset = root / "wiki18-subset.jsonl"
    with wiki18_corpus.open(encoding="utf-8") as f:
        subset.write_text("".join(itertools.islice(f, SUBSET_LINES)), encoding="utf-8")
    built = root / "built"
    run_build([str(subset)], str(built), load_data_config(None, "dpr", []))
    index = root / "index"
    build_index([str(built)], index, threads=1, shards=1, progress=False)

    corpus = {
        r["passage_id"]: normalize_answer(f"{r['title']} {r['text']}")
        for f in sorted(built.glob("passages-*.parquet"))
        for r in pq.read_table(f).to_pylist()
    }
    samples_dir = root / "samples"
    samples_dir.mkdir()
    for f in built.glob("samples-*.parquet"):
        shutil.copy(f, samples_dir / f.name)
    built_samples = _read_samples(built)
    # A span found in no passage but its own: searching without that passage must not find it; the
    # same sample with nothing excluded must (its own passage answers), so the exclusion is what decides.
    source, mask = next(
        (s, m)
        for s in sorted(built_samples, key=lambda s: s.sample_id)
        for m in s.masks
        if m.type == "entity" and _only_in_own_passage(s, m, corpus)
    )
    mask = replace(mask, answerable=None, answer_rank=None)
    masked = mask_text(source.passage, [(mask.char_start, mask.char_end)])
    single = replace(source, masked_passage=masked, masks=(mask,), answers=(mask.text,))
    constructed = [
        replace(single, sample_id="constructed-excluded", exclude_doc_ids=(source.passage_id,)),
        replace(single, sample_id="constructed-unexcluded", exclude_doc_ids=()),
    ]
    pq.write_table(
        pa.Table.from_pylist([s.to_row() for s in constructed], schema=SAMPLE_SCHEMA),
        samples_dir / "samples-constructed.parquet",
    )
    pq.write_table(
        pa.table({"sample_id": ["bad-1", None], "passage": ["text", "text"]}),
        samples_dir / "samples-bad-rows.parquet",
    )
    (samples_dir / "samples-corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    return {
        "samples_dir": samples_dir,
        "index": index,
        "corpus": corpus,
        "valid": built_samples + constructed,
        "inputs": len(built_samples) + len(constructed) + 2 + 1,
        "root": root,
    }


def _run_job(job_input: dict, keep: KeepPolicy) -> tuple[dict, Path]:
    out = job_input["root"] / f"out-{keep}"
    stats = run_answerability(
        str(job_input["samples_dir"]),
        str(out),
        RetrieverConfig(index=str(job_input["index"]), threads=1),
        AnswerabilityConfig(k=5, keep=keep),
    )
    assert json.loads((out / "stats.json").read_text()) == stats
    return stats, out


def _check_accounting(job_input: dict, stats: dict, out: Path) -> tuple[list[Sample], list[dict]]:
    kept, rejected = _read_samples(out), _read_rejections(out)
    assert stats["input_samples"] == job_input["inputs"] == stats["kept"] + stats["rejected"]
    assert (stats["kept"], stats["rejected"]) == (len(kept), len(rejected))
    unparseable = [r for r in rejected if r["reason"] == "unparseable"]
    assert sorted((r["stage"], r["record_id"]) for r in unparseable) == sorted(
        [
            ("read", "bad-1"),
            ("read", str(job_input["samples_dir"] / "samples-bad-rows.parquet")),
            ("read", str(job_input["samples_dir"] / "samples-corrupt.parquet")),
        ]
    )
    valid_ids = sorted(s.sample_id for s in job_input["valid"])
    checked = [r["record_id"] for r in rejected if r["reason"] != "unparseable"]
    assert sorted([s.sample_id for s in kept] + checked) == valid_ids
    masks_in = Counter(m.type for s in job_input["valid"] for m in s.masks)
    assert stats["masks_checked_by_type"] == dict(sorted(masks_in.items()))
    for sample in kept:
        assert all(m.answerable is not None for m in sample.masks)
        for mask in sample.masks:
            # An answerable span is in some passage the sample does not exclude (never only its own).
            others = [t for pid, t in job_input["corpus"].items() if pid not in sample.exclude_doc_ids]
            found = any(contains_answer(t, normalize_answer(mask.text)) for t in others)
            assert mask.answerable == (mask.answer_rank is not None)
            assert not mask.answerable or (found and 1 <= (mask.answer_rank or 0) <= 5)
    return kept, rejected


def test_job_all_answerable(job_input: dict) -> None:
    stats, out = _run_job(job_input, "all_answerable")
    kept, rejected = _check_accounting(job_input, stats, out)
    assert kept and all(all(m.answerable for m in s.masks) for s in kept)
    assert {r["reason"] for r in rejected} == {"unparseable", "unanswerable"}
    assert stats["rejected_by_reason"]["unanswerable"] == stats["rejected"] - 3
    assert "constructed-excluded" in {r["record_id"] for r in rejected}
    assert "constructed-unexcluded" in {s.sample_id for s in kept}


@pytest.fixture(scope="module")
def record_only(job_input: dict) -> tuple[dict, list[Sample]]:
    stats, out = _run_job(job_input, "record_only")
    kept, _ = _check_accounting(job_input, stats, out)
    return stats, kept


def test_job_record_only_keeps_everything(job_input: dict, record_only: tuple[dict, list[Sample]]) -> None:
    stats, kept = record_only
    assert stats["kept"] == len(job_input["valid"]) and stats["rejected_by_reason"] == {"unparseable": 3}
    by_id = {s.sample_id: s for s in kept}
    assert by_id["constructed-excluded"].masks[0].answerable is False
    assert by_id["constructed-unexcluded"].masks[0].answerable is True
    # Every span found in its own passage only is unanswerable once that passage is excluded.
    for sample in kept:
        for mask in sample.masks:
            if sample.exclude_doc_ids and _only_in_own_passage(sample, mask, job_input["corpus"]):
                assert mask.answerable is False, (sample.sample_id, mask.text)
    fractions = {kind: round(f, 4) for kind, f in answerable_fraction_by_type(kept).items()}
    assert stats["answerable_fraction_by_type"] == fractions
    assert sum(fractions.values()) > 0 and all(f < 1 for f in fractions.values())


def test_cli_any_answerable(job_input: dict, record_only: tuple[dict, list[Sample]]) -> None:
    out = job_input["root"] / "out-cli"
    command = [sys.executable, "-m", "ramp", "data", "answerability"]
    command += ["--samples", str(job_input["samples_dir"]), "--output", str(out)]
    command += ["--index", str(job_input["index"]), "--set", "answerability.keep=any_answerable"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(ok)" in done.stdout and "answerable masks by type" in done.stdout
    # No third-party start-up noise: Beam's missing-GCP note, Lucene's and Anserini's INFO lines.
    assert "apitools not found" not in done.stderr and "INFO" not in done.stderr + done.stdout
    stats = json.loads((out / "stats.json").read_text())
    kept, _ = _check_accounting(job_input, stats, out)
    assert stats["keep"] == "any_answerable"
    assert all(any(m.answerable for m in s.masks) for s in kept)
    # The same checks as record_only's, filtered by the policy.
    assert {s.sample_id for s in kept} == {
        s.sample_id for s in record_only[1] if keep_sample(s, "any_answerable")
    }


def test_cli_needs_one_retriever(job_input: dict) -> None:
    out = job_input["root"] / "out-none"
    command = [sys.executable, "-m", "ramp", "data", "answerability"]
    command += ["--samples", str(job_input["samples_dir"]), "--output", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "exactly one of --index and --retriever-url" in done.stderr
