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

from ramp.cli import run
from ramp.data.answerability import (
    KeepPolicy,
    agreeing_hit,
    answerable_fraction_by_type,
    check_answerability,
    keep_sample,
    mask_offsets_error,
    mask_query,
)
from ramp.data.rejections import Rejection
from ramp.data.samples import MASK_TOKEN, SAMPLE_SCHEMA, Mask, Sample, mask_text
from ramp.retrieval.base import Hit
from ramp.retrieval.config import AnswerabilityConfig, RetrieverConfig
from ramp.retrieval.env import SearchEnv
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever, split_contents
from ramp.text import contains, normalize


def normalize_answer(text: str) -> str:
    return normalize(text, "ramp")


contains_answer = contains


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


def test_mask_query_is_the_sentence_without_masks(samples: dict[str, Sample]) -> None:
    masked = "Evan L. Morris was born in [mask]. He worked for [mask] and [mask]! Then he left."
    assert mask_query(masked, 0) == "Evan L. Morris was born in ."
    assert mask_query(masked, 1) == mask_query(masked, 2) == "He worked for and !"
    assert mask_query("[mask] was founded in 1990. It grew.", 0) == "was founded in 1990."
    assert mask_query(masked, 1, max_words=2) == "for and"
    with pytest.raises(IndexError):
        mask_query(masked, 3)
    sample = samples["mixed"]
    for i in range(len(sample.masks)):
        query = mask_query(sample.masked_passage, i)
        assert MASK_TOKEN not in query
        assert all(m.text not in query for m in sample.masks)
    assert (
        mask_query(sample.masked_passage, 1)
        == "Badham was born in in Worcestershire, the daughter of a herbalist and homeopath."
    )


def _hit(doc_id: str, text: str, title: str = "Other") -> Hit:
    return Hit(doc_id=doc_id, title=title, text=text, score=1.0)


def test_short_span_in_an_unrelated_hit_is_no_answer() -> None:
    query = "The expedition of Captain Cook reached the island with ships in"
    unrelated = _hit("9", "The band released two albums. Its singer left in 1990.")
    assert agreeing_hit([unrelated], "two", query, min_context_words=2) is None
    assert agreeing_hit([unrelated], "1990", query, min_context_words=2) is None
    # bare containment (no context required) is what used to mark it answerable
    assert agreeing_hit([unrelated], "two", query, min_context_words=0) == (1, "9")
    related = _hit("4", "Cook's expedition reached the island with two ships in 1770.")
    assert agreeing_hit([unrelated, related], "two", query, min_context_words=2) == (2, "4")
    # the span must sit in the agreeing sentence itself, not elsewhere in the hit
    split = _hit("5", "Cook's expedition reached the island. The band had two singers.")
    assert agreeing_hit([split], "two", query, min_context_words=2) is None
    # a hit about the span (its title) agrees through its whole text
    about = _hit("6", "A British explorer, Captain Cook led an expedition to the island.", title="James Cook")
    assert agreeing_hit([about], "James Cook", "the island expedition of", 2) == (1, "6")


def _env(retriever: LuceneRetriever) -> SearchEnv:
    """The answerability stage's search environment (its default ``search`` section)."""
    return SearchEnv(retriever, AnswerabilityConfig().search)


def test_check_answerability_fills_masks(
    lucene_retriever: LuceneRetriever, samples: dict[str, Sample]
) -> None:
    checked = check_answerability(list(samples.values()), _env(lucene_retriever))
    flags = {s.sample_id: [(m.text, m.answerable) for m in s.masks] for s in checked}
    assert flags["s-747"] == [("Twycross Zoo", True), ("Evesham", False)]
    assert flags["s-0"] == [("Genentech", False), ("Patton Boggs", False)]
    assert flags["s-748"] == [("Twycross Zoo", True)]
    twycross = checked[0].masks[0]
    assert twycross.answer_rank is not None and 1 <= twycross.answer_rank <= 5
    assert twycross.answer_doc_id == "748"
    assert checked[0].masks[1].answer_rank is None
    # Without the exclusion, the source passage itself answers every mask.
    unexcluded = check_answerability([replace(samples["mixed"], exclude_doc_ids=())], _env(lucene_retriever))
    assert all(m.answerable for m in unexcluded[0].masks)


def test_keep_policies_and_fractions(lucene_retriever: LuceneRetriever, samples: dict[str, Sample]) -> None:
    checked = check_answerability(list(samples.values()), _env(lucene_retriever))
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
        AnswerabilityConfig(keep="all_answerable", batch_size=2),
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
        AnswerabilityConfig(keep="record_only", batch_size=64),
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
    for path in built.glob("samples-*.parquet"):
        shutil.copy(path, samples_dir / path.name)
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
        AnswerabilityConfig(keep=keep),
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


def test_job_redraw_draws_k_among_answerable_spans(job_input: dict) -> None:
    stats, out = _run_job(job_input, "redraw")
    kept, rejected = _read_samples(out), _read_rejections(out)
    assert stats["input_samples"] == job_input["inputs"] == stats["kept"] + stats["rejected"]
    assert {r["reason"] for r in rejected} <= {"unparseable", "unanswerable"}
    valid = {s.sample_id: s for s in job_input["valid"]}
    spans_in = Counter(m.type for s in valid.values() for m in (s.spans or s.masks))
    assert stats["masks_checked_by_type"] == dict(sorted(spans_in.items()))  # every eligible span checked
    assert kept and {s.num_masks for s in kept} >= {1, 2}
    for sample in kept:
        source = valid[sample.sample_id]
        assert sample.passage == source.passage and sample.spans
        assert all(m.answerable and m.answer_doc_id not in sample.exclude_doc_ids for m in sample.masks)
        assert {(m.char_start, m.char_end) for m in sample.masks} <= {
            (m.char_start, m.char_end) for m in sample.spans
        }
        assert (
            mask_text(sample.passage, [(m.char_start, m.char_end) for m in sample.masks])
            == sample.masked_passage
        )
        assert f"{sample.num_masks} masked span" in sample.prompt
    # a sample is rejected only when no answerable span can be masked (none, or only the opening one)
    for record in rejected:
        if record["reason"] == "unanswerable":
            assert record["detail"].startswith("0/") or "at the start of the passage" in record["detail"]


def test_output_equal_to_samples_is_one_error_line(
    capsys: pytest.CaptureFixture[str], wiki18_index: Path, tmp_path: Path
) -> None:

    args = ["data", "answerability", "--samples", str(tmp_path), "--output", str(tmp_path)]
    code = run([*args, "--index", str(wiki18_index)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"error: --output must differ from the samples directory {tmp_path}"]
