"""End to end: a served LLM teacher (a scripted OpenAI-compatible server on 127.0.0.1) plays planner,
rewriter and observer over a real Lucene index, through the Beam job (FnApiRunner) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cot_helpers import answerable_samples, write_samples
from datasets import load_dataset
from openai_server import ScriptedOpenAIServer
from ramp.pipelines.cot_builder import run_cot
from typer.testing import CliRunner

from ramp.cli import app
from ramp.config import load_config
from ramp.cot.builder import TrajectoryBuilder
from ramp.cot.config import CotConfig
from ramp.cot.trajectories import read_trajectories
from ramp.data.samples import Sample

# What the scripted teacher does for sample i.
BEHAVIOUR = [
    "right",
    "right_after_two",
    "wrong",
    "planner_error",
    "right",
    "empty_rewrite",
    "keeps_searching",
    "wrong",
]
EXPECTED = {
    "right": None,
    "right_after_two": None,
    "wrong": "not_verified",
    "planner_error": "teacher_error",
    "empty_rewrite": "unparseable_teacher_output",
    "keeps_searching": "max_turns",
}


class ScriptedTeacher:
    """Canned but sample-dependent role outputs, chosen by the masked passage in the prompt."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def _sample(self, prompt: str) -> tuple[Sample, str]:
        for sample, behaviour in zip(self.samples, BEHAVIOUR, strict=False):
            if sample.masked_passage in prompt:
                return sample, behaviour
        raise AssertionError("prompt names no known sample")

    def __call__(self, path: str, body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        sample, behaviour = self._sample(prompt)
        words = sample.masked_passage.replace("[mask]", " ").split()
        if "You are the planner" in prompt:
            if behaviour == "planner_error":
                raise RuntimeError("the teacher model crashed")
            query = " ".join(words[:12])
            return f"<think>Find the {sample.num_masks} masked span(s).</think>\n<search>{query}</search>"
        if "You are the query rewriter" in prompt:
            if behaviour == "empty_rewrite":
                return "Here are the rewrites:\n\n"
            return f"1. {' '.join(words[:12])}\n2. {sample.title} {' '.join(words[12:20])}"
        assert "You are the observer" in prompt
        looked_twice = "second look" in prompt
        if behaviour == "keeps_searching" or (behaviour == "right_after_two" and not looked_twice):
            return f"<think>Not sure yet.</think>\n<search>second look {sample.title}</search>"
        fills = (
            sample.answers if behaviour.startswith("right") else ["Nobody Inparticular"] * sample.num_masks
        )
        lines = "\n".join(f"[{i}] {fill}" for i, fill in enumerate(fills, start=1))
        return f"<think>The results name it.</think>\n<answer>\n{lines}\n</answer>"


@pytest.fixture(scope="module")
def samples(lucene_retriever):
    found = answerable_samples(lucene_retriever, limit=40, max_masks=2)
    assert len(found) >= len(BEHAVIOUR)
    return found[: len(BEHAVIOUR)]


@pytest.fixture(scope="module")
def samples_dir(samples, tmp_path_factory):
    bad = Sample(**{**samples[0].__dict__, "sample_id": "bad-no-mask", "masked_passage": "nothing masked"})
    return write_samples([*samples, bad], tmp_path_factory.mktemp("cot-samples"))


@pytest.fixture(scope="module")
def server(samples):
    with ScriptedOpenAIServer(ScriptedTeacher(samples)) as srv:
        yield srv


def overrides(server: ScriptedOpenAIServer) -> list[str]:
    return [
        "teacher.kind=openai",
        f"teacher.backend.openai.base_url={server.base_url}",
        "teacher.backend.openai.model=scripted-teacher",
        "teacher.backend.openai.max_retries=0",
        "loop.max_turns=3",
        "output.num_shards=2",
        "output.batch_size=3",
    ]


@pytest.fixture(scope="module")
def run_dir(samples_dir, server, wiki18_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("cot-out")
    config = load_config(CotConfig, "cot", [*overrides(server), f"retriever.index={wiki18_index}"])
    stats = run_cot(samples_dir, out, config)
    return out, stats


def test_counts_and_reasons(run_dir, samples):
    out, stats = run_dir
    expected_kept = [s.sample_id for s, b in zip(samples, BEHAVIOUR, strict=True) if EXPECTED[b] is None]
    assert stats["samples_in"] == len(samples) + 1
    assert stats["accounted"] and stats["kept"] + stats["rejected"] == stats["samples_in"]
    assert stats["kept"] == len(expected_kept) and stats["verified_yield"] == pytest.approx(3 / 9)
    assert stats["rejected_by_reason"] == {
        "bad_sample": 1,
        "max_turns": 1,
        "not_verified": 2,
        "teacher_error": 1,
        "unparseable_teacher_output": 1,
    }
    rejected = [
        json.loads(line) for f in sorted(out.glob("rejected-*.jsonl")) for line in f.read_text().splitlines()
    ]
    by_id = {r["record_id"]: r["reason"] for r in rejected}
    for sample, behaviour in zip(samples, BEHAVIOUR, strict=True):
        assert by_id.get(sample.sample_id) == EXPECTED[behaviour]
    assert by_id["bad-no-mask"] == "bad_sample"
    wrong = next(r for r in rejected if r["reason"] == "not_verified")
    assert "score=0.0000" in wrong["detail"] and "Nobody Inparticular" in wrong["payload"]
    assert sorted(t.sample_id for t in read_trajectories(out)) == sorted(expected_kept)


def test_trajectories_merge_the_roles_into_the_agent_format(run_dir, samples):
    out, _ = run_dir
    trajectories = {t.sample_id: t for t in read_trajectories(out)}
    twice = trajectories[samples[1].sample_id]
    assert twice.teacher == "openai" and twice.teacher_model == "scripted-teacher"
    assert twice.queries[-1] == f"second look {samples[1].title}"
    thinks = [m["content"] for m in twice.messages if m["role"] == "assistant"]
    assert thinks[0].startswith("<think>Find the") and "<think>Not sure yet.</think>" in thinks[-2]
    assert thinks[-1].startswith("<think>The results name it.</think>\n<answer>\n[1] ")
    for t in trajectories.values():
        assert t.verified and t.score == 1.0 and list(t.fills) == list(t.golds)
        assert all(t.exclude_doc_ids[0] not in ids for ids in t.retrieved_doc_ids)
        assert [m["role"] for m in t.messages].count("tool") == t.num_searches >= 1


def test_parquet_is_sharded_sorted_and_readable_by_datasets(run_dir):
    out, stats = run_dir
    files = sorted(out.glob("trajectories-*.parquet"))
    assert [f.name for f in files] == [
        "trajectories-00000-of-00002.parquet",
        "trajectories-00001-of-00002.parquet",
    ]
    for f in files:
        ids = pq.read_table(f).column("sample_id").to_pylist()
        assert ids == sorted(ids)
        assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
    dataset = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    assert dataset.num_rows == stats["kept"]
    assert {m["role"] for row in dataset for m in row["messages"]} == {"system", "user", "assistant", "tool"}


def test_cli_rerun_is_byte_identical(run_dir, samples_dir, server, wiki18_index, tmp_path):
    out, _ = run_dir
    args = ["data", "cot", "--samples", str(samples_dir), "--output", str(tmp_path), "--teacher", "openai"]
    args += ["--index", str(wiki18_index)]
    for item in overrides(server):
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "verified yield: 33.3%" in result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in Path(tmp_path).iterdir() if p.name != "logs")  # + Beam's logs
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes(), name


QA_ROWS = [json.loads(line) for line in Path("data/hotpotqa-dev-500.jsonl").read_text().splitlines()[:3]]


def qa_teacher(path: str, body: dict[str, Any]) -> str:
    """Plans a search for the question, rewrites it once, then answers (wrongly for the second one)."""
    prompt = body["messages"][-1]["content"]
    row = next(r for r in QA_ROWS if r["question"] in prompt)
    if "You are the planner" in prompt:
        return f"<think>Look it up.</think>\n<search>{row['question']}</search>"
    if "You are the query rewriter" in prompt:
        return " ".join(row["question"].split()[:6])
    answer = "Nobody Inparticular" if row is QA_ROWS[1] else row["golden_answers"][0]
    return f"<think>Found it.</think>\n<answer>{answer}</answer>"


def test_a_qa_dataset_builds_qa_trajectories(wiki18_index, lucene_retriever, tmp_path):
    questions = tmp_path / "qa.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in QA_ROWS) + "not json\n")
    with ScriptedOpenAIServer(qa_teacher) as server:
        config = load_config(CotConfig, "cot", [*overrides(server), f"retriever.index={wiki18_index}"])
        stats = run_cot(questions, tmp_path / "out", config)
    assert (stats["samples_in"], stats["kept"]) == (4, 2) and stats["accounted"]
    assert stats["rejected_by_reason"] == {"bad_sample": 1, "not_verified": 1}
    kept = {t.sample_id: t for t in read_trajectories(tmp_path / "out")}
    assert set(kept) == {QA_ROWS[0]["id"], QA_ROWS[2]["id"]}
    for t in kept.values():
        row = next(r for r in QA_ROWS if r["id"] == t.sample_id)
        assert t.kind == "qa" and t.num_masks == 0 and list(t.golds) == row["golden_answers"]
        assert row["question"] in t.messages[1]["content"] and t.queries[0] == row["question"]
        assert t.messages[-1]["content"].endswith(f"<answer>\n{row['golden_answers'][0]}\n</answer>")
    # the built-in teacher has no QA mode, and says so
    builtin = load_config(CotConfig, "cot", [f"retriever.index={wiki18_index}"])
    [rejected] = TrajectoryBuilder.from_config(builtin, retriever=lucene_retriever).build(QA_ROWS[:1])
    assert (rejected.reason, rejected.record_id) == ("unsupported_task", QA_ROWS[0]["id"])
    assert "no QA mode" in rejected.detail
