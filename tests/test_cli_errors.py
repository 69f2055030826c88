"""User mistakes get one line ``error: …`` naming what is wrong and what to do, and exit code 2;
``--debug`` (anywhere before ``--``) or ``RAMP_DEBUG=1`` adds the traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ramp.cli import run

BIN = Path(sys.executable).parent


def _error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    code = run(args)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _build(tmp_path: Path, *extra: str) -> list[str]:
    output = str(tmp_path / "out")
    return [
        "data",
        "build",
        "--input",
        str(tmp_path / "nope.jsonl"),
        "--format",
        "jsonl",
        "--output",
        output,
        *extra,
    ]


def _answerability(tmp_path: Path, *extra: str) -> list[str]:
    return ["data", "answerability", "--samples", str(tmp_path), "--output", str(tmp_path / "out"), *extra]


def test_missing_input(capsys, tmp_path):
    line = _error(capsys, _build(tmp_path))
    assert "no input files match" in line and str(tmp_path / "nope.jsonl") in line
    assert not (tmp_path / "out").exists()  # no empty output or log directory left behind


def test_missing_corpus(capsys, tmp_path):
    line = _error(
        capsys, ["index", "build", "--corpus", str(tmp_path / "gone"), "--index", str(tmp_path / "i")]
    )
    assert f"corpus not found: {tmp_path / 'gone'}" in line


def test_missing_option_points_to_help(capsys):
    line = _error(capsys, ["data", "build", "--format", "jsonl"])
    assert "--input" in line and "ramp data build --help" in line


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("masking.max_mask=3", ["masking.max_mask = 3: unknown key", "known keys:", "max_masks"]),
        ("masking.max_masks=0", ["masking.max_masks = 0", "greater than or equal to 1"]),
        ("seed=abc", ["seed = 'abc'", "integer"]),
        ("novalue", ["'novalue'", "key=value"]),
    ],
)
def test_bad_set_key_or_value(capsys, tmp_path, override, needles):
    line = _error(capsys, _build(tmp_path, "--set", override))
    for needle in needles:
        assert needle in line


def test_missing_config_file_lists_the_recipes(capsys, tmp_path):
    line = _error(capsys, _build(tmp_path, "--config", str(tmp_path / "mine.yaml")))
    assert "config not found" in line and "mine.yaml" in line and "data" in line


def test_missing_index(capsys, tmp_path):
    line = _error(capsys, _answerability(tmp_path, "--index", str(tmp_path / "no-index")))
    assert f"index {tmp_path / 'no-index'} does not exist" in line and "ramp index build" in line


def test_unreachable_retriever_url(capsys, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    line = _error(capsys, _answerability(tmp_path, "--retriever-url", url))
    assert f"retriever at {url} is not reachable" in line and "ramp serve-retriever" in line


def test_one_retriever_exactly(capsys, tmp_path):
    both = _answerability(tmp_path, "--index", str(tmp_path), "--retriever-url", "http://127.0.0.1:1")
    assert "exactly one of --index and --retriever-url" in _error(capsys, both)
    assert "exactly one of --index and --retriever-url" in _error(capsys, _answerability(tmp_path))


def test_cot_missing_index(capsys, tmp_path):
    args = ["data", "cot", "--samples", str(tmp_path), "--output", str(tmp_path / "out")]
    line = _error(capsys, [*args, "--index", str(tmp_path / "gone")])
    assert "gone does not exist" in line


def test_port_in_use(capsys, wiki18_index):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = _error(capsys, ["serve-retriever", "--index", str(wiki18_index), "--port", str(port)])
    assert f"port {port} on 127.0.0.1 is in use" in line and "--port" in line


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    for args in (_build(tmp_path, "--debug"), ["--debug", *_build(tmp_path)]):
        assert run(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "FileNotFoundError" in err
        assert err.strip().splitlines()[-1].startswith("error: no input files match")
    monkeypatch.setenv("RAMP_DEBUG", "1")
    assert run(_build(tmp_path)) == 2
    assert "Traceback" in capsys.readouterr().err


def test_console_script_prints_one_line(tmp_path):
    """The installed ``ramp`` script: no rich traceback box, one line, exit code 2."""
    done = subprocess.run(
        [str(BIN / "ramp"), *_build(tmp_path, "--set", "masking.nope=1")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: invalid DataConfig") and "masking.nope" in done.stderr
