"""The stage primitive (``ramp.stages``): content fingerprints of settings and inputs, outputs recorded and
checked, markers written last, skips that write nothing."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from ramp.errors import UserError
from ramp.stages import Stage, StageRunner, run_stage, stage_fingerprint


class Shout(BaseModel):
    suffix: str = "!"


def _toy(tmp: Path, log: list[str], suffix: str = "!") -> list[Stage]:
    """source.txt -> middle/part.txt (upper case) -> final.txt (+ suffix, a setting)."""
    source, middle, final = tmp / "source.txt", tmp / "middle", tmp / "final.txt"

    def make_middle() -> None:
        log.append("middle")
        middle.mkdir()
        (middle / "part.txt").write_text(source.read_text().upper())

    def make_final() -> None:
        log.append("final")
        final.write_text((middle / "part.txt").read_text() + suffix)

    return [
        Stage("middle", make_middle, {"case": "upper"}, (source,), (middle,), "upper source"),
        Stage("final", make_final, Shout(suffix=suffix), (middle,), (final,), "shout middle"),
    ]


def _statuses(runner: StageRunner, stages: list[Stage], **kwargs: object) -> list[str]:
    return [o.status for o in runner.run(stages, **kwargs)]  # type: ignore[arg-type]


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture
def ran(tmp_path: Path) -> tuple[StageRunner, list[str], list[str]]:
    (tmp_path / "source.txt").write_text("a")
    log: list[str] = []
    lines: list[str] = []
    runner = StageRunner(tmp_path / ".stages", lines.append)
    assert _statuses(runner, _toy(tmp_path, log)) == ["ran", "ran"]
    assert (tmp_path / "final.txt").read_text() == "A!"
    return runner, log, lines


def test_unchanged_rerun_skips_and_touches_nothing(tmp_path: Path, ran) -> None:
    runner, log, lines = ran
    before = _mtimes(tmp_path)
    assert _statuses(runner, _toy(tmp_path, log)) == ["skipped", "skipped"]
    assert _mtimes(tmp_path) == before  # no output, no marker rewritten
    assert log == ["middle", "final"]
    assert re.search(r"^\[ 1/2\] middle\s+start  upper source  \(not run before\)$", lines[0], re.M)
    assert any("skip" in line and "took" in line for line in lines)
    marker = json.loads((tmp_path / ".stages/final.json").read_text())
    assert marker["settings"] == {"suffix": "!"} and marker["outputs"] == {"final.txt": 2}
    assert set(marker["inputs"]) == {"middle/part.txt"}  # paths under the state folder's parent: relative


def test_a_changed_setting_reruns_that_stage_only(tmp_path: Path, ran) -> None:
    runner, log, lines = ran
    middle = _mtimes(tmp_path / "middle")
    assert _statuses(runner, _toy(tmp_path, log, suffix="?")) == ["skipped", "ran"]
    assert (tmp_path / "final.txt").read_text() == "A?"  # the output reflects the new value
    assert _mtimes(tmp_path / "middle") == middle
    assert "(settings changed)" in lines[-2]


def test_changed_input_content_reruns_downstream(tmp_path: Path, ran) -> None:
    runner, log, lines = ran
    (tmp_path / "source.txt").write_text("b")  # same size, other content
    assert _statuses(runner, _toy(tmp_path, log)) == ["ran", "ran"]
    assert (tmp_path / "final.txt").read_text() == "B!"
    assert any("(inputs changed: source.txt)" in line for line in lines)


def test_touch_or_identical_rewrite_is_no_change(tmp_path: Path, ran) -> None:
    runner, log, _ = ran
    source = tmp_path / "source.txt"
    os.utime(source, ns=(1, 1))  # touched: other mtime, same content
    assert _statuses(runner, _toy(tmp_path, log)) == ["skipped", "skipped"]
    # an upstream rerun that writes identical bytes does not rerun downstream
    assert _statuses(runner, _toy(tmp_path, log), force=True, only=["middle"]) == ["ran"]
    assert _statuses(runner, _toy(tmp_path, log)) == ["skipped", "skipped"]
    assert log == ["middle", "final", "middle"]


def test_hashes_are_reused_while_size_and_mtime_hold(tmp_path: Path, ran) -> None:
    runner, log, _ = ran
    stage = _toy(tmp_path, log)[0]
    previous = runner.recorded("middle")
    assert previous is not None
    previous["inputs"]["source.txt"]["blake2b"] = "recorded"  # what a re-read would not give
    assert stage_fingerprint(stage, previous, base=tmp_path)[1]["source.txt"]["blake2b"] == "recorded"
    os.utime(tmp_path / "source.txt", ns=(5, 5))
    assert stage_fingerprint(stage, previous, base=tmp_path)[1]["source.txt"]["blake2b"] != "recorded"


def test_half_written_and_lost_outputs_are_redone(tmp_path: Path, ran) -> None:
    runner, log, _ = ran
    (tmp_path / ".stages/final.json").unlink()  # killed before its marker: redone
    (tmp_path / "final.txt").write_text("half")
    assert _statuses(runner, _toy(tmp_path, log)) == ["skipped", "ran"]
    assert (tmp_path / "final.txt").read_text() == "A!"

    (tmp_path / "final.txt").write_text("A!!")  # an output changed size: redone
    assert _statuses(runner, _toy(tmp_path, log)) == ["skipped", "ran"]
    (tmp_path / "middle/part.txt").unlink()  # a file inside an output directory lost
    assert _statuses(runner, _toy(tmp_path, log)) == ["ran", "skipped"]  # rewritten identically
    (tmp_path / "final.txt").unlink()  # an output deleted
    assert _statuses(runner, _toy(tmp_path, log)) == ["skipped", "ran"]
    assert (tmp_path / "final.txt").read_text() == "A!"


def test_a_moved_directory_keeps_its_markers(tmp_path: Path, ran) -> None:
    _, log, _ = ran
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    runner = StageRunner(moved / ".stages", lambda line: None)
    assert _statuses(runner, _toy(moved, log)) == ["skipped", "skipped"]
    moved.rename(tmp_path)


def test_force_only_and_failures(tmp_path: Path, ran) -> None:
    runner, log, _ = ran
    assert _statuses(runner, _toy(tmp_path, log), force=True) == ["ran", "ran"]
    assert _statuses(runner, _toy(tmp_path, log), force=True, only=["final"]) == ["ran"]
    with pytest.raises(UserError, match="unknown stage"):
        runner.run(_toy(tmp_path, log), only=["nope"])

    def broken() -> None:
        raise RuntimeError("boom")

    stages = _toy(tmp_path, log)
    failing = Stage("final", broken, stages[1].settings, stages[1].inputs, stages[1].outputs)
    with pytest.raises(RuntimeError, match="boom"):
        runner.run([stages[0], failing], force=True)
    assert not (tmp_path / ".stages/final.json").exists()  # no marker for a failed stage
    assert not (tmp_path / "final.txt").exists()  # outputs are cleared before a stage runs

    silent = Stage("final", lambda: None, stages[1].settings, stages[1].inputs, stages[1].outputs)
    with pytest.raises(UserError, match="without writing"):
        run_stage(silent, tmp_path / ".stages", echo=lambda line: None)
    assert runner.why(stages[1]) == "not run before"
    assert _statuses(runner, _toy(tmp_path, log)) == ["skipped", "ran"]
    assert runner.done(stages[1])


def test_settings_must_be_json_data(tmp_path: Path) -> None:
    stage = Stage("s", lambda: None, settings={"when": object()})
    with pytest.raises(TypeError, match="JSON-able"):
        stage_fingerprint(stage)
    same = [Stage("s", lambda: None, settings=v) for v in ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1})]
    assert stage_fingerprint(same[0])[0] == stage_fingerprint(same[1])[0]  # canonical: key order ignored
    assert (
        stage_fingerprint(Stage("s", lambda: None, settings=Shout()))[0]
        != stage_fingerprint(Stage("s", lambda: None, settings=Shout(suffix="?")))[0]
    )
