"""SimpleDeepSearcher's curation (``ramp data curate``) on hand-written trajectories: each criterion keeps
or rejects with its reason, one trajectory per question (fewest searches), easy questions dropped by seed,
hardest first, near duplicates left out, a size limit; count in = kept + rejected; reruns byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ramp.agent.protocol import format_result_block
from ramp.cli import app
from ramp.cot.curate import CurateConfig, curate, read_solve_rates, repeated_ngram_share
from ramp.cot.trajectories import TRAJECTORY_SCHEMA, Trajectory, read_trajectories
from ramp.data.rejections import Rejection
from ramp.retrieval.base import Hit

QUESTIONS = {
    "q-river": "Which river flows through the capital of the country where Anna Berg was born?",
    "q-film": "Who directed the film in which the author of Blue Harbour first appeared?",
    "q-bridge": "In which year did the engineer of the Kessel bridge graduate?",
    "q-river-copy": "Which river flows through the capital of the country where Anna Berg was born ?",
}


def trajectory(
    sample_id: str,
    searches: list[tuple[str, list[str]]],
    *,
    think: str = "I should look this up.",
    answer: str = "Danube",
    verified: bool = True,
    teacher: str = "builtin",
    round_: int = 0,
    broken: bool = False,
) -> Trajectory:
    messages = [
        {"role": "system", "content": "Search, then answer."},
        {"role": "user", "content": QUESTIONS.get(sample_id, f"Question {sample_id} about a thing?")},
    ]
    for query, docs in searches:
        messages.append({"role": "assistant", "content": f"<think>{think}</think><search>{query}</search>"})
        hits = [Hit(doc_id=d, title=d, text=f"text of {d}", score=1.0) for d in docs]
        messages.append({"role": "tool", "content": format_result_block(hits)})
    final = f"<think>Now I know.</think><answer>{answer}</answer>" + (" trailing" if broken else "")
    messages.append({"role": "assistant", "content": final})
    return Trajectory(
        sample_id=sample_id,
        kind="qa",
        teacher=teacher,
        teacher_model="",
        round=round_,
        messages=tuple(messages),
        answer=answer,
        fills=(answer,),
        golds=(answer,),
        score=1.0,
        reward=1.2,
        verified=verified,
        num_masks=0,
        queries=tuple(q for q, _ in searches),
        retrieved_doc_ids=tuple(tuple(d) for _, d in searches),
        exclude_doc_ids=(),
    )


def test_repeated_ngram_share():
    assert repeated_ngram_share("a b c a b c a b c") == pytest.approx(3 / 7)
    assert repeated_ngram_share("one two") == repeated_ngram_share("one two three") == 0.0  # nothing repeats


def test_each_criterion_rejects_with_its_reason():
    rambling = " ".join(f"word{i}" for i in range(301))
    cases = {
        "not_verified": trajectory("s1", [("a", ["d1"])], verified=False),
        "bad_format": trajectory("s2", [("b", ["d2"])], broken=True),
        "long_think": trajectory("s3", [("c", ["d3"])], think=rambling),
        "hesitant": trajectory("s4", [("d", ["d4"])], think="Wait, wait. Hmm, wait... wait."),
        "repetitive": trajectory("s5", [("e", ["d5"])], think=" ".join(["the same phrase"] * 30)),
        "search_count": trajectory("s6", []),
        "redundant_searches": trajectory("s7", [("f", ["d7", "d8"]), ("g", ["d7", "d9"])]),
    }
    good = trajectory("s8", [("h", ["d10"]), ("i", ["d11"])])
    result = curate([*cases.values(), good], {}, CurateConfig(max_query_overlap=None))
    assert [t.sample_id for t in result.kept] == ["s8"]
    assert {r.reason: r.record_id.split(":")[0] for r in result.rejected} == {
        reason: t.sample_id for reason, t in cases.items()
    }
    assert all(isinstance(r, Rejection) and r.stage == "curate" and r.detail for r in result.rejected)
    too_long = curate([good], {}, CurateConfig(max_words=5))
    assert [r.reason for r in too_long.rejected] == ["too_long"]
    capped = curate([good], {}, CurateConfig(max_searches=1))
    assert [r.reason for r in capped.rejected] == ["search_count"]


def test_one_per_question_difficulty_diversity_and_limit():
    trajectories = [
        # q-film: three valid trajectories; the one with the fewest searches (2) is kept
        trajectory(
            "q-film", [("film author", ["f1"]), ("film director", ["f2"]), ("x", ["f3"])], teacher="openai"
        ),
        trajectory("q-film", [("blue harbour author", ["f4"]), ("first film director", ["f5"])]),
        trajectory(
            "q-film",
            [("blue harbour", ["f6"]), ("director", ["f7"])],
            round_=1,
            think="Longer thinking, much longer than the first one.",
        ),
        # q-river: solved by every draft (easy); q-river-copy: near-duplicate question of q-river
        trajectory("q-river", [("anna berg birthplace", ["r1"]), ("capital river", ["r2"])]),
        trajectory("q-river-copy", [("where was anna berg born", ["r3"]), ("river of the capital", ["r4"])]),
        # q-bridge: one search, hard (solve rate 0.25)
        trajectory("q-bridge", [("kessel bridge engineer graduated", ["b1"])]),
        # q-x, q-y: easy-ish but with queries that repeat q-bridge's
        trajectory("q-x", [("kessel bridge engineer graduated", ["x1"])]),
    ]
    rates = {"q-film": 0.5, "q-river": 1.0, "q-river-copy": 0.75, "q-bridge": 0.25, "q-x": 0.9}
    keep_easy = curate(trajectories, rates, CurateConfig(easy_drop=0.0))
    # hardest first: q-bridge (0.25), q-film (0.5), q-river-copy (0.75), q-x (0.9), q-river (1.0)
    assert [t.sample_id for t in keep_easy.kept] == ["q-bridge", "q-film", "q-river-copy"]
    assert keep_easy.kept[1].num_searches == 2 and keep_easy.kept[1].round == 0  # fewest searches, then words
    reasons = {(r.record_id, r.reason) for r in keep_easy.rejected}
    assert ("q-film:openai:0", "not_best_of_question") in reasons
    assert ("q-film:builtin:1", "not_best_of_question") in reasons
    assert ("q-x:builtin:0", "similar_queries") in reasons
    assert ("q-river:builtin:0", "similar_question") in reasons  # q-river-copy (harder) came first
    assert len(keep_easy.kept) + len(keep_easy.rejected) == len(trajectories)
    always_drop = curate(trajectories, rates, CurateConfig(easy_drop=1.0))
    assert ("q-river:builtin:0", "too_easy") in {(r.record_id, r.reason) for r in always_drop.rejected}
    limited = curate(trajectories, rates, CurateConfig(easy_drop=0.0, limit=2))
    assert [t.sample_id for t in limited.kept] == ["q-bridge", "q-film"]
    assert ("q-river-copy:builtin:0", "over_limit") in {(r.record_id, r.reason) for r in limited.rejected}


def test_easy_drop_is_seeded():
    easy = [trajectory(f"e{i}", [(f"query {i}", [f"d{i}"])]) for i in range(40)]
    rates = {f"e{i}": 1.0 for i in range(40)}
    first = curate(easy, rates, CurateConfig(easy_drop=0.8, seed=3))
    again = curate(easy, rates, CurateConfig(easy_drop=0.8, seed=3))
    other = curate(easy, rates, CurateConfig(easy_drop=0.8, seed=4))
    kept = [t.sample_id for t in first.kept]
    assert kept == [t.sample_id for t in again.kept] != [t.sample_id for t in other.kept]
    assert 2 <= len(kept) <= 16  # about 20% of 40 survive


def write_trajectories(directory: Path, trajectories: list[Trajectory], failed: dict[str, int]) -> None:
    directory.mkdir(parents=True)
    table = pa.Table.from_pylist([t.to_row() for t in trajectories], schema=TRAJECTORY_SCHEMA)
    pq.write_table(table, directory / "trajectories-00000-of-00001.parquet")
    lines = [
        Rejection(sample_id, "cot", "not_verified", "score below threshold").to_json()
        for sample_id, count in failed.items()
        for _ in range(count)
    ]
    lines.append(Rejection("q-zzz", "cot", "max_turns", "no answer").to_json())  # not a verification failure
    (directory / "rejected-00000-of-00001.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_ramp_data_curate_command(tmp_path):
    source = tmp_path / "trajectories"
    trajectories = [
        trajectory("q-film", [("blue harbour author", ["f4"]), ("first film director", ["f5"])]),
        trajectory("q-bridge", [("kessel bridge engineer graduated", ["b1"])]),
        trajectory("q-river", [("anna berg birthplace", ["r1"]), ("capital river", ["r2"])]),
        trajectory("s2", [("b", ["d2"])], broken=True),
    ]
    write_trajectories(source, trajectories, {"q-film": 1, "q-bridge": 3})
    assert read_solve_rates(source, trajectories) == {
        "q-film": 0.5,
        "q-bridge": 0.25,
        "q-river": 1.0,
        "s2": 1.0,
    }
    runner = CliRunner()
    args = ["data", "curate", "--trajectories", str(source), "--output", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--set", "easy_drop=1.0"])
    assert result.exit_code == 0, result.output
    assert "curated 4 trajectories: kept 2, rejected 2 (bad_format 1, too_easy 1)" in result.output
    kept = read_trajectories(tmp_path / "out")
    assert [t.sample_id for t in kept] == ["q-bridge", "q-film"]
    dead = [
        json.loads(line) for line in (tmp_path / "out" / "rejected-curation.jsonl").read_text().splitlines()
    ]
    assert sorted(d["reason"] for d in dead) == ["bad_format", "too_easy"]
    stats = json.loads((tmp_path / "out" / "curate_stats.json").read_text())
    assert stats["in"] == stats["kept"] + stats["rejected"] == 4 and stats["config"]["easy_drop"] == 1.0
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert runner.invoke(app, [*args, "--set", "easy_drop=1.0"]).exit_code == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == first  # byte-identical rerun
    same = runner.invoke(app, ["data", "curate", "--trajectories", str(source), "--output", str(source)])
    assert same.exit_code != 0 and "must differ" in str(same.exception or same.output)
    typo = runner.invoke(app, [*args, "--set", "limt=3"])
    assert typo.exit_code != 0 and "limt" in str(typo.exception or typo.output)
