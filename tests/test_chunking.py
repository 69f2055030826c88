"""Bounded-memory local runs (``pipelines.chunks``): the Beam jobs over their input in chunks, each chunk a
stage of ``ramp.stages``.

Real parts throughout: the FnApiRunner, spaCy, a Lucene index, a killed subprocess. The build input is 200
wiki-18 lines plus an unparseable line and a blank line, cut into three chunks of about 47 KB.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from ramp.pipelines.answerability import AnswerabilityJob, run_answerability
from ramp.pipelines.chunks import chunk_file_name, pack, sum_stats
from ramp.pipelines.cot_builder import CotJob, run_cot
from ramp.pipelines.ramp_data import dpr_article, line_ranges, load_data_config, run_build
from ramp.pipelines.runner import LOCAL, is_local_runner

from ramp.config import load_config
from ramp.cot.config import CotConfig
from ramp.data.stats import compute_stats, output_files
from ramp.retrieval.config import AnswerabilityConfig, RetrieverConfig
from ramp.retrieval.indexing import build_index, iter_documents, resolve_corpus

CHUNK_MB = 0.045  # ~47 KB: the 136 KB input makes three chunks


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by relative path (the CLI's Beam logs aside): its bytes, a chunk
    marker's fingerprint (markers also hold run times and input modification times)."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.parent.name != "logs")
    return {
        str(p.relative_to(directory)): (
            json.loads(p.read_text())["fingerprint"].encode()
            if re.fullmatch(r"c\d{4}(\.first)?\.json", p.name)
            else p.read_bytes()
        )
        for p in files
    }


def _mtimes(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``directory``: its modification time (ns) and inode (a replaced file has a
    new one)."""
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_ino) for p in directory.rglob("*")}


def _rows(directory: Path, prefix: str) -> list[dict[str, Any]]:
    rows = [r for f in sorted(directory.glob(f"{prefix}-*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _lines(directory: Path) -> list[str]:
    return sorted(line for f in directory.glob("rejected-*.jsonl") for line in f.read_text().splitlines())


@pytest.fixture(scope="module")
def build_input(wiki18_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with wiki18_corpus.open(encoding="utf-8") as f:
        lines = list(islice(f, 200))
    lines[60:60] = ["{not json\n"]
    lines[130:130] = ["\n"]
    path = tmp_path_factory.mktemp("chunk-input") / "wiki18-200.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def builds(build_input: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same input built in one pass and in chunks."""
    root = tmp_path_factory.mktemp("chunk-builds")
    config = load_data_config(None, "dpr", [])  # the default config: k_mix balanced, two phases in chunks
    single = run_build([str(build_input)], str(root / "single"), config, chunk_mb=0)
    chunked = run_build([str(build_input)], str(root / "chunked"), config, chunk_mb=CHUNK_MB)
    return {"root": root, "config": config, "single": single, "chunked": chunked}


def test_line_ranges_cover_the_file_at_line_starts(tmp_path: Path) -> None:
    titles = ["A", "A", "A", "B", "C", "C", "C", "C", "D"]
    lines = [json.dumps({"id": str(i), "contents": f'"{t}"\n{"word " * 20}'}) for i, t in enumerate(titles)]
    path = tmp_path / "p.jsonl"
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)
    starts = [0, *(i + 1 for i, b in enumerate(data) if b == ord("\n"))][: len(lines)]
    width = len(lines[0]) + 1
    for group in (False, True):
        ranges = line_ranges(str(path), 2 * width, dpr_article if group else None)
        assert b"".join(data[s : len(data) if e is None else e] for s, e, _ in ranges) == data
        assert [s for s, _, _ in ranges] == [starts[n - 1] for _, _, n in ranges]  # line numbers match
        if group:  # a cut never falls between two lines of one article
            cut_lines = [n - 1 for _, _, n in ranges[1:]]
            assert all(titles[i] != titles[i - 1] for i in cut_lines)
            assert [n for _, _, n in ranges] == [1, 4, 9]
        else:
            assert [n for _, _, n in ranges] == [1, 3, 5, 7, 9]


def test_helpers() -> None:
    assert pack(list("abcde"), [3, 3, 5, 1, 1], 6) == [["a", "b"], ["c", "d"], ["e"]]
    name = chunk_file_name("samples-00003-of-00004.parquet", "c0007")
    assert name == "samples-00003-of-00004.c0007.parquet"
    assert is_local_runner([]) and is_local_runner(["--runner=DirectRunner"])
    assert not is_local_runner(["--runner", "DataflowRunner"])
    assert not is_local_runner(["--runner=FlinkRunner"])
    assert sum_stats([{"n": 1, "by": {"b": 1}, "k": "x"}, {"n": 2, "by": {"a": 1, "b": 1}, "k": "x"}]) == {
        "n": 3,
        "by": {"a": 1, "b": 2},
        "k": "x",
    }
    with pytest.raises(ValueError, match="disagree on 'k'"):
        sum_stats([{"k": "x"}, {"k": "y"}])


class _ToyJob:
    """A two-phase job without Beam: each file's line count, then each file written with the total."""

    name, output_patterns, summary_files, two_phase = "toy", ("out-*.txt",), (), True
    settings = {"suffix": "lines"}

    def __init__(self) -> None:
        self.calls: list[str] = []

    def inputs(self, part: list[str]) -> list[str]:
        return part

    def outputs(self, part: list[str]) -> list[str]:
        return ["out-00000-of-00001.txt"]

    def run(self, part: list[str], directory: str) -> dict[str, Any]:
        raise AssertionError("a chunked run")

    def first(self, part: list[str], directory: str) -> dict[str, Any]:
        self.calls.append(f"first {Path(part[0]).name}")
        Path(directory).mkdir(parents=True)
        text = "".join(Path(p).read_text() for p in part)
        (Path(directory) / "copy.txt").write_text(text)
        return {"lines": text.count("\n")}

    def second(self, first: str, counts: dict, totals: dict, directory: str) -> dict[str, Any]:
        self.calls.append(f"second {counts['lines']}")
        Path(directory).mkdir(parents=True)
        text = (Path(first) / "copy.txt").read_text()
        (Path(directory) / "out-00000-of-00001.txt").write_text(
            f"{text}of {totals['lines']} {self.settings['suffix']}"
        )
        return {"lines": counts["lines"]}

    def merge(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return sum_stats(parts)


def test_the_driver_reruns_what_a_changed_input_decides(tmp_path: Path) -> None:
    """Two phases, three files of about one chunk each: unchanged, nothing runs or is written; one file
    changed, its first phase reruns and, its count changed, every chunk redraws with the new total (their
    first phases, deleted once they were complete, run again)."""
    from ramp.pipelines.chunks import run_chunked

    files = [tmp_path / f"in-{i}.txt" for i in range(3)]
    for i, path in enumerate(files):
        path.write_text("line\n" * (i + 1))
    out = tmp_path / "out"

    def run(job: _ToyJob) -> dict[str, Any]:
        sizes = [p.stat().st_size for p in files]
        return run_chunked(job, str(out), [str(p) for p in files], sizes, chunk_mb=5 / 2**20)

    job = _ToyJob()
    assert run(job) == {"lines": 6} and len(job.calls) == 6
    assert (out / "out-00000-of-00001.c0002.txt").read_text() == "line\nline\nline\nof 6 lines"
    assert not list((out / ".chunks").glob("*.first*"))  # first phases deleted once every chunk is done
    before = _mtimes(out)
    job = _ToyJob()
    assert run(job) == {"lines": 6} and job.calls == [] and _mtimes(out) == before

    files[0].write_text("line\n" * 4)  # chunk 0's count changes: the total changes
    job = _ToyJob()
    assert run(job) == {"lines": 9}
    assert job.calls == [
        "first in-0.txt",
        "second 4",
        "first in-1.txt",
        "second 2",
        "first in-2.txt",
        "second 3",
    ]
    assert (out / "out-00000-of-00001.c0001.txt").read_text() == "line\nline\nof 9 lines"


def test_chunked_build_holds_the_same_samples_as_one_pass(builds: dict[str, Any]) -> None:
    single, chunked = builds["root"] / "single", builds["root"] / "chunked"
    assert len(list(chunked.glob("samples-*-of-00004.c000[0-2].parquet"))) == 12  # three chunks of 4 shards
    assert not list(single.glob("*.c0*.*")) and not (single / ".chunks").exists()
    assert _rows(chunked, "samples") == _rows(single, "samples")  # same ids, masks, every field
    assert _rows(chunked, "passages") == _rows(single, "passages")
    assert _lines(chunked) == _lines(single)  # the unparseable line keeps its file line number
    assert any('wiki18-200.jsonl:61"' in line for line in _lines(chunked))
    stats = builds["chunked"]
    assert stats == builds["single"]
    assert stats["input_records"] == stats["samples"] + stats["rejected"] == 201
    assert json.loads((chunked / "stats.json").read_text()) == stats


def test_readers_read_the_chunked_layout(builds: dict[str, Any]) -> None:
    chunked, stats = builds["root"] / "chunked", builds["chunked"]
    assert compute_stats(str(chunked)) == stats  # `ramp data stats` without stats.json
    assert len(output_files(str(chunked), "samples-", ".parquet")) == 12  # answerability / cot inputs
    corpus = resolve_corpus([chunked])  # the index builder
    assert len(corpus) == 12 and sum(1 for _ in iter_documents(corpus)) == stats["passages"]
    import datasets

    loaded = datasets.load_dataset("parquet", data_files=f"{chunked}/samples-*.parquet", split="train")
    assert loaded.num_rows == stats["samples"]


@pytest.mark.parametrize("kill_at", ["c0000.first.json", "c0000.json"])
def test_a_killed_run_restarts_where_it_stopped(
    builds: dict[str, Any], build_input: Path, kill_at: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed once chunk 0's first phase (span finding) is complete, or once chunk 0 is complete (every
    first phase done): the restart skips what was complete and ends with the same files."""
    out = builds["root"] / f"killed-{kill_at}"
    command = [sys.executable, "-m", "ramp", "data", "build", "--input", str(build_input), "--format"]
    command += ["dpr", "--output", str(out), "--chunk-mb", str(CHUNK_MB)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 900  # a guard against a hang only: a loaded machine is slow
        while not (out / ".chunks" / kill_at).exists():
            assert process.poll() is None and time.monotonic() < deadline, f"{kill_at} never written"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert not (out / "stats.json").exists()
    first = {p: p.stat().st_mtime_ns for p in out.glob("*.c0000.*")}
    caplog.set_level(logging.INFO, logger="ramp.pipelines.chunks")
    stats = run_build([str(build_input)], str(out), builds["config"], chunk_mb=CHUNK_MB)
    assert _tree(out) == _tree(builds["root"] / "chunked")  # same files, same bytes
    if kill_at == "c0000.json":
        assert first and {p: p.stat().st_mtime_ns for p in out.glob("*.c0000.*")} == first  # skipped
        assert "1 of 3 chunks already complete" in caplog.text  # its counts are in its marker
        assert "first phase of 2 of 2 chunks already complete" in caplog.text
    else:
        assert re.search(r"first phase of [12] of 3 chunks already complete", caplog.text)
    assert stats == builds["chunked"]
    assert stats["input_records"] == stats["samples"] + stats["rejected"]


def test_half_written_chunks_are_redone(builds: dict[str, Any], build_input: Path) -> None:
    out = builds["root"] / "half"
    shutil.copytree(builds["root"] / "chunked", out)
    (out / ".chunks" / "c0001.json").unlink()  # chunk 1: files renamed, marker never written
    (out / "samples-00000-of-00004.c0001.parquet").write_bytes(b"half")
    (out / "passages-00002-of-00004.c0002.parquet").unlink()  # chunk 2: a file lost
    (out / "samples-00000-of-00004.parquet").write_bytes(b"an older one-pass run")
    (out / "stats.json").unlink()
    untouched = {p: p.stat().st_mtime_ns for p in out.glob("*.c0000.*")}
    run_build([str(build_input)], str(out), builds["config"], chunk_mb=CHUNK_MB)
    assert _tree(out) == _tree(builds["root"] / "chunked")
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.c0000.*")} == untouched


def test_rerun_touches_nothing_and_a_changed_setting_redraws(
    builds: dict[str, Any], build_input: Path
) -> None:
    """Unchanged: every chunk skipped and no file touched (a moved output directory keeps its markers).
    A changed setting (the masking seed): every chunk reruns, and the samples follow the new seed."""
    out = builds["root"] / "resume"
    shutil.copytree(builds["root"] / "chunked", out)
    before = _mtimes(out)
    assert run_build([str(build_input)], str(out), builds["config"], chunk_mb=CHUNK_MB) == builds["chunked"]
    assert _mtimes(out) == before

    config = builds["config"].model_copy(update={"seed": builds["config"].seed + 1})
    stats = run_build([str(build_input)], str(out), config, chunk_mb=CHUNK_MB)
    changed = {p for p, state in _mtimes(out).items() if before.get(p) != state}
    assert {str(p) for p in out.glob("samples-*.c000[0-2].parquet")} <= changed
    assert _rows(out, "passages") == _rows(builds["root"] / "chunked", "passages")  # the same passages ...
    assert _rows(out, "samples") != _rows(builds["root"] / "chunked", "samples")  # ... masked anew
    assert json.loads((out / "manifest.json").read_text())["data_config"]["seed"] == config.seed
    marker = json.loads((out / ".chunks" / "c0002.json").read_text())
    assert marker["settings"]["settings"]["seed"] == config.seed
    assert stats["input_records"] == stats["samples"] + stats["rejected"] == 201


def _third(builds: dict[str, Any]) -> float:
    """A chunk size (MB) that cuts the chunked build's samples files into about three chunks."""
    sizes = sorted(f.stat().st_size for f in (builds["root"] / "chunked").glob("samples-*.parquet"))
    return (sum(sizes) / 3 + sizes[-1] / 2) / 2**20


@pytest.fixture(scope="module")
def index(builds: dict[str, Any]) -> Path:
    """A Lucene index of the chunked build's passages (the index builder reads the chunked layout)."""
    path = builds["root"] / "index"
    manifest = build_index([builds["root"] / "chunked"], path, threads=1, shards=1, progress=False)
    assert manifest["documents"] == builds["chunked"]["passages"]
    return path


@pytest.mark.parametrize("keep", ["redraw", "any_answerable"])
def test_answerability_in_chunks_matches_one_pass(builds: dict[str, Any], index: Path, keep: str) -> None:
    """``redraw`` (the default, with the samples' ``k_mix: balanced``) runs chunks in two phases."""
    samples, root = str(builds["root"] / "chunked"), builds["root"]
    args = (RetrieverConfig(index=str(index), threads=1), AnswerabilityConfig.model_validate({"keep": keep}))
    single = run_answerability(samples, str(root / f"ans-1-{keep}"), *args, chunk_mb=0)
    chunked = run_answerability(samples, str(root / f"ans-n-{keep}"), *args, chunk_mb=_third(builds))
    one, many = root / f"ans-1-{keep}", root / f"ans-n-{keep}"
    assert len(list((many / ".chunks").glob("c*.json"))) >= 2
    assert not list((many / ".chunks").glob("*.first*"))  # first phases removed once their chunk is done
    assert _rows(many, "samples") == _rows(one, "samples")
    assert _lines(many) == _lines(one)
    assert chunked == single  # fractions recomputed from summed counts, not averaged
    assert chunked["input_samples"] == chunked["kept"] + chunked["rejected"] == builds["chunked"]["samples"]
    assert AnswerabilityJob(*args, builds["config"], LOCAL).merge([single]) == single


def test_cot_in_chunks_matches_one_pass(builds: dict[str, Any], index: Path) -> None:
    root = builds["root"]
    samples = root / "cot-samples"  # two of chunk 0's samples files: the teacher is the slow part
    samples.mkdir()
    for path in sorted((root / "chunked").glob("samples-*.c0000.parquet"))[:2]:
        shutil.copy(path, samples / path.name)
    config = load_config(CotConfig, "cot", ["teacher.kind=builtin", f"retriever.index={index}"])
    single = run_cot(samples, root / "cot-1", config, chunk_mb=0)
    half = sum(p.stat().st_size for p in samples.iterdir()) / 2 / 2**20
    chunked = run_cot(samples, root / "cot-n", config, chunk_mb=half)
    assert len(list((root / "cot-n" / ".chunks").glob("c*.json"))) >= 2
    assert _rows(root / "cot-n", "trajectories") == _rows(root / "cot-1", "trajectories")
    assert _lines(root / "cot-n") == _lines(root / "cot-1")
    assert chunked == single and json.loads((root / "cot-n" / "stats.json").read_text()) == single
    assert chunked["samples_in"] == chunked["kept"] + chunked["rejected"] == len(_rows(samples, "samples"))
    assert CotJob(config, LOCAL).merge([single]) == single
