"""The worker pool (:mod:`ramp.workers`): spawned processes serve job after job, each job's output in its
own log; a failed job retires its worker; a worker that dies fails its job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ramp.workers import Job, JobFailed, WorkerPool

TARGET = f"{__name__}:job"


def job(kind: str, events: Any) -> None:
    """A test job: report this process, print a line to its log, then succeed, fail or die."""
    events.put(("pid", kind, os.getpid()))
    print(f"job {kind} in {os.getpid()}")
    if kind.startswith("fail"):
        raise SystemExit(2)
    if kind.startswith("die"):
        os._exit(3)


def _run(pool: WorkerPool, kinds: list[str], keep_going: bool = False) -> tuple[dict[str, int], list[str]]:
    pids: dict[str, int] = {}
    failed = pool.run([Job(k, (k,)) for k in kinds], lambda e: pids.__setitem__(e[1], e[2]), keep_going)
    return pids, failed


def test_workers_serve_job_after_job_each_logged_apart(tmp_path: Path) -> None:
    with WorkerPool(2, TARGET, tmp_path / "logs") as pool:
        pids, failed = _run(pool, ["a", "b", "c", "d", "e"])
        again, _ = _run(pool, ["f"])  # a second batch on the same pool: no new process
    assert not failed and set(pids) == set("abcde")
    assert len(set(pids.values())) == 2 and again["f"] in pids.values() and os.getpid() not in pids.values()
    for kind, pid in pids.items():
        assert (tmp_path / "logs" / f"{kind}.log").read_text() == f"job {kind} in {pid}\n"


def test_a_failed_job_retires_its_worker_and_fails_the_run_or_is_named(tmp_path: Path) -> None:
    with WorkerPool(1, TARGET, tmp_path / "logs") as pool:
        pids, failed = _run(pool, ["a", "fail-b", "c", "die-d", "e"], keep_going=True)
        assert failed == ["fail-b", "die-d"] and set(pids) >= {"a", "fail-b", "c", "e"}  # die-d may lose its
        assert pids["a"] == pids["fail-b"] != pids["c"] != pids["e"]
        with pytest.raises(JobFailed, match=r"fail-x failed \(exit code 2\); see .*fail-x\.log"):
            _run(pool, ["fail-x", "y"])
    with WorkerPool(1, TARGET, tmp_path / "logs") as pool, pytest.raises(JobFailed, match="exit code 3"):
        _run(pool, ["die-z"])
