"""A pool of spawned worker processes that run an orchestrator's jobs, each job's output in its own log.

A job is a name and the arguments of one ``module:function`` (the pool's target), called as
``function(*args, events)``: ``events`` is a queue whose items reach the caller's ``on_event`` in the order
each worker put them. Workers start when a job first needs one and serve job after job until the pool
closes, so the interpreter start and the heavy imports (torch, transformers, Java) are paid once per
worker, not once per job. A job that fails retires its worker (the next job gets a fresh process, free of
whatever state the failure left); a worker that dies fails the job it held.
"""

from __future__ import annotations

import importlib
import multiprocessing
import queue
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramp.errors import UserError
from ramp.logs import redirect_output

JOB_END = "job-end"  # a worker's last event of a job: (JOB_END, worker index, job name, exit code)


class JobFailed(UserError):
    """A worker's job failed; its log (named in the message) holds the traceback."""


@dataclass(frozen=True)
class Job:
    name: str  # also its log's name: LOG_DIR/NAME.log
    args: tuple[Any, ...]


def serve(index: int, target: str, tasks: Any, events: Any) -> None:
    """A worker's loop: take ``(name, log, args)`` tasks until ``None``; run each with its output in
    ``log``; report its end (exit code 0: done). A failed job ends the loop."""
    module, function = target.split(":")
    while (task := tasks.get()) is not None:
        name, log, args = task
        redirect_output(log)  # before the first import: the engines' start-up chatter lands in the log
        code = 0
        try:
            getattr(importlib.import_module(module), function)(*args, events)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else int(err.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        events.put((JOB_END, index, name, code))
        if code:
            return


class WorkerPool:
    """Up to ``workers`` spawned processes running ``target`` (``module:function``) on jobs, logging to
    ``log_dir``; a context manager (leaving it stops the workers)."""

    def __init__(self, workers: int, target: str, log_dir: Path) -> None:
        self.workers, self.target, self.log_dir = workers, target, Path(log_dir)
        self._context = multiprocessing.get_context("spawn")
        self._events = self._context.Queue()
        self._processes: dict[int, Any] = {}
        self._tasks: dict[int, Any] = {}

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(terminate=exc[0] is not None)

    def run(
        self, jobs: Sequence[Job], on_event: Callable[[Any], None], keep_going: bool = False
    ) -> list[str]:
        """Run ``jobs`` (in order, as workers free up), passing their events to ``on_event``. A failed
        job stops the others and raises :class:`JobFailed`, or with ``keep_going`` the others go on and
        the failed jobs' names are returned."""
        pending, failed = list(jobs), []
        busy: dict[int, str] = {}  # worker index -> its job
        while pending or busy:
            for index in range(self.workers):
                if pending and index not in busy:
                    job = pending.pop(0)
                    self._worker(index).put((job.name, str(self.log_dir / f"{job.name}.log"), job.args))
                    busy[index] = job.name
            try:
                event = self._events.get(timeout=1.0)
            except queue.Empty:  # quiet for a second: a dead worker has no events left in flight
                event = self._death(busy)
                if event is None:
                    continue
            if event[0] != JOB_END:
                on_event(event)
                continue
            _, index, name, code = event
            del busy[index]
            if code:
                self._retire(index)
                if not keep_going:
                    self.close(terminate=True)
                    log = self.log_dir / f"{name}.log"
                    raise JobFailed(f"{name} failed (exit code {code}); see {log}")
                failed.append(name)
        return failed

    def close(self, terminate: bool = False) -> None:
        """Stop every worker: ask each to finish (or, with ``terminate``, kill it) and wait."""
        for index in list(self._processes):
            self._retire(index, terminate)

    def _worker(self, index: int) -> Any:
        """Worker ``index``'s task queue; a live worker, started if it is not."""
        if index not in self._processes:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            tasks = self._context.Queue()
            process = self._context.Process(
                target=serve, args=(index, self.target, tasks, self._events), name=f"worker-{index}"
            )
            process.start()
            self._processes[index], self._tasks[index] = process, tasks
        return self._tasks[index]

    def _death(self, busy: dict[int, str]) -> tuple[Any, ...] | None:
        """A failed job end for the first busy worker that died without reporting one (None: none)."""
        for index, name in busy.items():
            process = self._processes[index]
            if not process.is_alive():
                return (JOB_END, index, name, process.exitcode or 1)
        return None

    def _retire(self, index: int, terminate: bool = False) -> None:
        process, tasks = self._processes.pop(index), self._tasks.pop(index)
        if process.is_alive() and not terminate:
            tasks.put(None)
            process.join(timeout=60)
        if process.is_alive():
            process.terminate()
        process.join()
        tasks.close()
