"""The masking job end to end on Beam's FnApiRunner with the real spaCy model and real Wikipedia text."""

import bz2
import hashlib
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ramp.pipelines.io import ParquetFormat, WriteJsonlShards, WriteParquetShards, shard_path
from ramp.pipelines.ramp_data import load_data_config, plan_read_tasks, run_build
from ramp.pipelines.runner import BeamRun

from ramp.data.audit import mask_problems
from ramp.data.masking import title_forms
from ramp.data.samples import MASK_TOKEN, Sample, unmask
from ramp.retrieval.indexing import corpus_fingerprint
from ramp.seeding import stable_seed
from ramp.text import normalize

ROOT = Path(__file__).resolve().parent.parent
DPR = ROOT / "data" / "wiki18-sample-1000.jsonl"
XML = ROOT / "data" / "enwiki-sample-106-articles.xml.bz2"


def rows(directory: Path, prefix: str) -> list[dict]:
    found = sorted(directory.glob(f"{prefix}-*.parquet"))
    assert found, f"no {prefix} shards in {directory}"
    return sorted(
        (r for f in found for r in pq.read_table(f).to_pylist()),
        key=lambda r: r.get("sample_id", r.get("passage_id")),
    )


def rejections(directory: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted(directory.glob("rejected-*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def build(inputs, out: Path, fmt: str, *overrides: str, workers: int = 1) -> dict:
    config = load_data_config(None, fmt, overrides)
    return run_build([str(i) for i in inputs], str(out), config, BeamRun(workers))


def check_accounting(out: Path, stats: dict) -> None:
    assert stats["input_records"] == stats["samples"] + stats["rejected"]
    assert stats["samples"] == len(rows(out, "samples"))
    assert stats["rejected"] == len(rejections(out))
    assert json.loads((out / "stats.json").read_text()) == stats


# --- DPR input ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dpr_input(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dpr") / "wiki18-200.jsonl"
    path.write_text(
        "".join(DPR.read_text(encoding="utf-8").splitlines(keepends=True)[:200]), encoding="utf-8"
    )
    return path


@pytest.fixture(scope="module")
def dpr_run(dpr_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("dpr-out")
    return out, build([dpr_input], out, "dpr")


def test_dpr_samples_unmask_to_their_passage_with_valid_masks(dpr_run):
    out, stats = dpr_run
    check_accounting(out, stats)
    assert stats["input_records"] == 200 and stats["samples"] > 150
    passages = {r["passage_id"]: r for r in rows(out, "passages")}
    assert len(passages) == 200
    for sample in rows(out, "samples"):
        text = sample["passage"]
        assert passages[sample["passage_id"]]["text"] == text
        assert unmask(sample["masked_passage"], sample["answers"]) == text
        assert 1 <= sample["num_masks"] == len(sample["masks"]) <= 4
        assert not sample["masked_passage"].startswith(MASK_TOKEN)
        assert sample["exclude_doc_ids"] == [sample["passage_id"]]
        spans = [(m["char_start"], m["char_end"]) for m in sample["masks"]]
        assert spans == sorted(spans)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end < start  # neither overlapping nor touching
        for mask in sample["masks"]:
            assert text[mask["char_start"] : mask["char_end"]] == mask["text"]
            assert not {normalize(mask["text"], "ramp")} & title_forms(sample["title"])
            assert mask["type"] in {"entity", "date", "number"}
        # no digit-less number/date, no content word of a mask visible elsewhere, no touching masks
        assert mask_problems(Sample.from_row(sample)) == ([], [], [])
        assert {(m["char_start"], m["char_end"]) for m in sample["masks"]} <= {
            (m["char_start"], m["char_end"]) for m in sample["spans"]
        }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["corpus_fingerprint"] == corpus_fingerprint(sorted(out.glob("passages-*.parquet")))
    assert manifest["data_config"]["masking"]["k_mix"] == "balanced"


def test_outputs_load_with_hf_datasets(dpr_run):
    out, stats = dpr_run
    files = sorted(str(p) for p in out.glob("samples-*.parquet"))
    loaded = datasets.load_dataset(
        "parquet", data_files=files, split="train", cache_dir=str(out / "hf-cache")
    )
    assert len(loaded) == stats["samples"]
    assert loaded[0]["masks"][0].keys() >= {"text", "type", "label", "char_start", "char_end"}


OUTPUTS = [("passages", "parquet"), ("rejected", "jsonl"), ("samples", "parquet")]


def output_digests(directory: Path) -> dict[str, str]:
    """sha256 of every output file (not folders such as a datasets cache), by name."""
    return {
        f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(directory.iterdir()) if f.is_file()
    }


def test_outputs_byte_identical_across_reruns_and_worker_counts(dpr_run, dpr_input, tmp_path):
    out, stats = dpr_run
    assert stats["rejected"] > 0  # all three outputs have rows
    rerun, two_workers = tmp_path / "rerun", tmp_path / "two-workers"
    build([dpr_input], rerun, "dpr")
    build([dpr_input], two_workers, "dpr", workers=2)
    expected = output_digests(out)
    assert sorted(expected) == sorted(
        ["stats.json", "manifest.json"]
        + [f"{name}-{shard:05d}-of-00004.{ext}" for name, ext in OUTPUTS for shard in range(4)]
    )
    assert output_digests(rerun) == expected
    assert output_digests(two_workers) == expected


def test_exclude_article_groups_dpr_passages_by_title(dpr_input, tmp_path):
    lines = dpr_input.read_text(encoding="utf-8").splitlines()[:40]
    small = tmp_path / "in.jsonl"
    small.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    build([small], out, "dpr", "masking.exclude=article")
    by_title: dict[str, set[str]] = {}
    for passage in rows(out, "passages"):
        by_title.setdefault(passage["title"], set()).add(passage["passage_id"])
    assert any(len(ids) > 1 for ids in by_title.values())
    for sample in rows(out, "samples"):
        assert sample["exclude_doc_ids"][0] == sample["passage_id"]
        assert set(sample["exclude_doc_ids"]) == by_title[sample["title"]]


# --- bad input: the dead letter --------------------------------------------------------------------


def test_fuzzed_input_every_record_accounted_for(tmp_path):
    good = DPR.read_bytes().splitlines()[200:212]
    no_entity = "the cat sat on the mat and then it went to sleep on the warm soft rug by the door"
    bad = [
        b'{"id": "broken", "contents": "\\"T\\"\\ntext"',  # malformed JSON
        b'{"id": "latin1", "contents": "\\"Caf\xe9\\"\\nCaf\xe9 text"}',  # not UTF-8
        json.dumps({"id": "empty", "contents": '"Empty"\n   '}).encode(),
        json.dumps({"id": "huge", "contents": '"Huge"\n' + "Paris is big. " * 5000}).encode(),
        json.dumps({"id": "short", "contents": '"Short"\nParis in 1900.'}).encode(),
        json.dumps({"id": "plain", "contents": f'"Plain"\n{no_entity}'}).encode(),
        json.dumps({"id": "notitle", "contents": "no title line"}).encode(),
        json.dumps([1, 2]).encode(),
        b"",  # blank lines are not records
    ]
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"\n".join(good[:6] + bad + good[6:]) + b"\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "ramp", "data", "build", "--input", str(path), "--format", "dpr",
         "--output", str(out), "--set", "filter.max_chars=20000"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    printed = subprocess.run(
        [sys.executable, "-m", "ramp", "data", "stats", str(out), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=True,
    ).stdout  # fmt: skip
    stats = json.loads(printed)
    check_accounting(out, stats)
    assert stats["input_records"] == len(good) + len(bad) - 1
    reasons = {r["record_id"].rsplit(":", 1)[-1] if r["stage"] == "read" else r["record_id"]: r["reason"]
               for r in rejections(out)}  # fmt: skip
    line_of = {raw: n for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1)}
    assert reasons[str(line_of[bad[0]])] == "unparseable"
    assert reasons[str(line_of[bad[1]])] == "not_utf8"
    assert reasons[str(line_of[bad[7]])] == "unparseable"
    assert {k: reasons[k] for k in ("empty", "huge", "short", "plain", "notitle")} == {
        "empty": "empty",
        "huge": "too_large",
        "short": "too_short",
        "plain": "no_eligible_span",
        "notitle": "unparseable",
    }
    assert stats["samples"] + sum(r["reason"] == "starts_with_mask" for r in rejections(out)) >= 10
    assert (
        "input records"
        in subprocess.run(
            [sys.executable, "-m", "ramp", "data", "stats", str(out)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout
    )


# --- MediaWiki XML -----------------------------------------------------------------------------------


def xml_parts() -> tuple[str, list[str], str]:
    """(header, pages, footer) of the bundled dump."""
    text = bz2.decompress(XML.read_bytes()).decode("utf-8")
    first = text.index("  <page>")
    pages = re.findall(r"  <page>.*?</page>\n", text, re.DOTALL)
    return text[:first], pages, "</mediawiki>\n"


def small_xml_pages(articles: int) -> list[str]:
    """All redirects / non-article pages plus the ``articles`` shortest articles, in dump order."""
    _, pages, _ = xml_parts()
    real = [p for p in pages if "<redirect" not in p and "<ns>0</ns>" in p]
    keep = set(sorted(real, key=len)[:articles])
    return [p for p in pages if p in keep or p not in real]


def multistream(pages: list[str], per_stream: int = 7) -> tuple[bytes, list[bytes]]:
    """A dump as concatenated bz2 streams (header, ``per_stream`` pages each, footer) and its index lines."""
    header, _, footer = xml_parts()
    streams, index = [bz2.compress(header.encode())], []
    for i in range(0, len(pages), per_stream):
        offset = sum(map(len, streams))
        chunk = pages[i : i + per_stream]
        index += [f"{offset}:{page_id(p)}:title".encode() for p in chunk]
        streams.append(bz2.compress("".join(chunk).encode("utf-8")))
    streams.append(bz2.compress(footer.encode()))
    return b"".join(streams), index


def page_id(page: str) -> str:
    found = re.search(r"<id>(\d+)</id>", page)
    assert found
    return found.group(1)


@pytest.fixture(scope="module")
def xml_run(tmp_path_factory):
    header, _, footer = xml_parts()
    pages = small_xml_pages(10)
    path = tmp_path_factory.mktemp("xml") / "small.xml.bz2"
    path.write_bytes(bz2.compress((header + "".join(pages) + footer).encode("utf-8")))
    out = tmp_path_factory.mktemp("xml-out")
    return pages, path, out, build([path], out, "xml")


def test_xml_pages_become_clean_passages(xml_run):
    pages, _, out, stats = xml_run
    check_accounting(out, stats)
    articles = [p for p in pages if "<redirect" not in p and "<ns>0</ns>" in p]
    assert stats["skipped_by_reason"] == {"namespace": 1, "redirect": 99}
    passages = rows(out, "passages")
    assert {p["article_id"] for p in passages} == {page_id(p) for p in articles}
    for article_id in {p["article_id"] for p in passages}:
        indexes = sorted(p["passage_index"] for p in passages if p["article_id"] == article_id)
        assert indexes == list(range(len(indexes)))
    for passage in passages:
        assert passage["passage_id"] == f"{passage['article_id']}#{passage['passage_index']}"
        for markup in ("{{", "}}", "[[", "]]", "<ref", "'''", "{|"):
            assert markup not in passage["text"]
        assert len(passage["text"].split()) <= 300
    # salient spans only (digits in numbers and dates, no leaking or touching masks): these first pages are
    # list-like disambiguation pages, so a third of their passages have no fact to mask
    assert stats["samples"] > 0.6 * len(passages)
    assert set(stats["rejected_by_reason"]) <= {"no_eligible_span", "starts_with_mask", "too_short"}


def test_multistream_dump_read_in_parallel_ranges_gives_same_passages(xml_run, tmp_path):
    pages, _, out, _ = xml_run
    data, index = multistream(pages)
    dump = tmp_path / "enwiki-test-pages-articles-multistream.xml.bz2"
    dump.write_bytes(data)
    page_streams = len({line.split(b":")[0] for line in index})
    (tmp_path / "enwiki-test-pages-articles-multistream-index.txt.bz2").write_bytes(
        bz2.compress(b"\n".join(index) + b"\n")
    )

    tasks = plan_read_tasks([str(tmp_path / "*")], "xml", 3)
    assert len(tasks) == -(-page_streams // 3) and all(t.start is not None for t in tasks)
    multi_out = tmp_path / "out"
    stats = build([tmp_path / "*.xml.bz2"], multi_out, "xml", "source.streams_per_task=3")
    assert rows(multi_out, "passages") == rows(out, "passages")
    assert rows(multi_out, "samples") == rows(out, "samples")
    assert stats["skipped_by_reason"] == {"namespace": 1, "redirect": 99}
    assert stats["rejected"] == len(rejections(out))


def test_truncated_bz2_keeps_what_was_read(xml_run, tmp_path):
    pages, _, out, _ = xml_run
    data, _ = multistream(pages)  # a valid .xml.bz2 of many streams: those before the cut stay readable
    truncated = tmp_path / "truncated.xml.bz2"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    trunc_out = tmp_path / "out"
    stats = build([truncated], trunc_out, "xml")
    check_accounting(trunc_out, stats)
    breaks = [r for r in rejections(trunc_out) if r["reason"] == "truncated_input"]
    assert len(breaks) == 1 and breaks[0]["stage"] == "read"
    full = {p["passage_id"]: p for p in rows(out, "passages")}
    kept = rows(trunc_out, "passages")
    assert 0 < len(kept) < len(full)
    assert all(full[p["passage_id"]] == p for p in kept)


def test_broken_xml_is_a_rejection(tmp_path):
    header, pages, _ = xml_parts()
    article = next(p for p in sorted(pages, key=len) if "<redirect" not in p and "<ns>0</ns>" in p)
    path = tmp_path / "broken.xml"
    path.write_text(
        header + article + "  <page><title>Cut</title><ns>0</ns><id>1</id><revision><text>x</tex", "utf-8"
    )
    out = tmp_path / "out"
    stats = build([path], out, "xml")
    check_accounting(out, stats)
    assert stats["rejected_by_reason"].get("broken_xml") == 1
    assert {p["article_id"] for p in rows(out, "passages")} == {page_id(article)}


# --- deterministic sharded writers (pipelines.io) -----------------------------------------------------


def test_sharded_writers_sort_by_key_keep_empty_shards_and_load_with_datasets(tmp_path):
    schema = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("n", pa.int64())])
    rows = [{"id": f"r{i}", "n": i} for i in reversed(range(7))]
    lines = [{"b": 1, "a": 2}, {"a": 1}, {"a": 1}]  # no unique key, one duplicate
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        _ = (
            pipeline
            | "Rows" >> beam.Create(rows)
            | WriteParquetShards(str(tmp_path / "rows"), schema, 8, lambda r: r["id"], row_group_rows=2)
        )
        _ = pipeline | "Lines" >> beam.Create(lines) | WriteJsonlShards(str(tmp_path / "lines"), 2)

    files = sorted(tmp_path.glob("rows-*.parquet"))
    assert [f.name for f in files] == [f"rows-{i:05d}-of-00008.parquet" for i in range(8)]
    by_shard = {i: pq.read_table(f) for i, f in enumerate(files)}
    assert any(t.num_rows == 0 for t in by_shard.values()) and all(
        t.schema == schema for t in by_shard.values()
    )
    for shard, table in by_shard.items():
        ids = table.column("id").to_pylist()
        assert ids == sorted(ids) and all(stable_seed(i) % 8 == shard for i in ids)
        assert pq.ParquetFile(files[shard]).metadata.num_row_groups == -(-len(ids) // 2)
        again = tmp_path / "again.parquet"
        ParquetFormat(schema, 2, "zstd").write(str(again), table.to_pylist())
        assert again.read_bytes() == files[shard].read_bytes()
    loaded = datasets.load_dataset(
        "parquet", data_files=[str(f) for f in files], split="train", cache_dir=str(tmp_path / "hf")
    )
    assert sorted(loaded["id"]) == sorted(r["id"] for r in rows)

    shards = [Path(shard_path(str(tmp_path / "lines"), i, 2, ".jsonl")).read_text() for i in range(2)]
    for text in shards:
        assert text.splitlines() == sorted(text.splitlines())
    assert sorted(line for text in shards for line in text.splitlines()) == sorted(
        json.dumps(line, sort_keys=True) for line in lines
    )
