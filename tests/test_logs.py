"""``ramp.logs.quiet_logs``: library logging, Python warnings and file descriptor 2 go to
OUTPUT/logs/NAME.log; the console keeps what the stage itself prints to ``sys.stderr`` (progress, errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STAGE = """
import logging, os, sys, warnings
from ramp.logs import quiet_logs

def chatter(tag):
    warnings.warn(f"Apex is not installed ({tag})")
    logging.getLogger("megatron.core.datasets").warning(f"megatron record ({tag})")
    os.write(2, f"C++ line ({tag})\\n".encode())
    print(f"progress ({tag})", file=sys.stderr, flush=True)

out = sys.argv[1]
with quiet_logs(out, "outer", verbose=sys.argv[2] == "verbose"):
    chatter("outer")
    with quiet_logs(out, "inner"):
        chatter("inner")
    chatter("outer again")
print("done", file=sys.stderr)
"""


def _run(tmp: Path, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", STAGE, str(tmp), mode], capture_output=True, text=True, timeout=120, check=True
    )


def test_library_chatter_goes_to_the_stage_log_and_progress_stays_on_the_console(tmp_path: Path):
    console = _run(tmp_path, "quiet").stderr
    assert (
        "progress (outer)" in console
        and "progress (inner)" in console
        and "progress (outer again)" in console
    )
    assert "Apex" not in console and "megatron record" not in console and "C++ line" not in console
    assert f"(logs: {tmp_path / 'logs' / 'outer.log'})" in console and "done" in console
    outer = (tmp_path / "logs" / "outer.log").read_text()
    inner = (tmp_path / "logs" / "inner.log").read_text()
    for tag in ("outer", "outer again"):
        assert all(
            f"{what} ({tag})" in outer for what in ("Apex is not installed", "megatron record", "C++ line")
        )
    assert all(
        f"{what} (inner)" in inner for what in ("Apex is not installed", "megatron record", "C++ line")
    )
    assert "(inner)" not in outer  # a nested stage writes its own file only


def test_verbose_keeps_everything_on_the_console(tmp_path: Path):
    console = _run(tmp_path, "verbose").stderr
    assert "Apex is not installed (outer)" in console and "C++ line (outer again)" in console
    assert "megatron record (outer)" in console
    assert not (tmp_path / "logs" / "outer.log").exists()
