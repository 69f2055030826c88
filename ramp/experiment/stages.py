"""A small stage runner: each stage has a name, the command it runs, its inputs and its outputs.

A stage's done-marker (``STATE_DIR/NAME.json``) is written only after the stage finished and produced its
outputs; it records a fingerprint of the command and of every input file (path, size, modification time).
A rerun skips a stage whose marker matches and whose outputs exist; a stage whose marker is missing, whose
command or inputs changed (e.g. an upstream stage ran again), or any stage under ``force`` runs again, on a
clean slate (its outputs are removed first). One line per stage start, skip and finish, with wall times.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ramp.errors import UserError


@dataclass(frozen=True)
class Stage:
    name: str
    command: str  # what the stage runs, as a user would type it (shown, and part of the fingerprint)
    action: Callable[[], object]
    inputs: tuple[Path, ...] = ()  # files or directories the stage reads
    outputs: tuple[Path, ...] = ()  # files or directories it writes: removed before a run, required after


@dataclass(frozen=True)
class StageOutcome:
    name: str
    status: Literal["ran", "skipped"]
    wall_s: float  # of the run that made the outputs (this one, or the one a skip relies on)
    cpu_s: float  # CPU seconds of that run: this process and the worker processes it waited for


@dataclass
class StageRunner:
    state_dir: Path
    echo: Callable[[str], None] = print
    outcomes: list[StageOutcome] = field(default_factory=list)

    def marker(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def run(
        self, stages: Sequence[Stage], force: bool = False, only: Sequence[str] = ()
    ) -> list[StageOutcome]:
        """Run ``stages`` in order (``only``: just those names); a stage that raises stops the run."""
        names = [s.name for s in stages]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise UserError(f"unknown stage(s) {', '.join(unknown)}; the stages are: {', '.join(names)}")
        width = max(len(n) for n in names)
        self.outcomes = []
        for number, stage in enumerate(stages, start=1):
            if only and stage.name not in only:
                continue
            prefix = f"[{number:>2}/{len(stages)}] {stage.name:<{width}}"
            self.outcomes.append(self._run_one(stage, prefix, force))
        return self.outcomes

    def _run_one(self, stage: Stage, prefix: str, force: bool) -> StageOutcome:
        fingerprint = stage_fingerprint(stage)
        done = self.recorded(stage.name)
        finished = done is not None and done.get("fingerprint") == fingerprint
        if done is not None and finished and not force and all(p.exists() for p in stage.outputs):
            self.echo(f"{prefix}  skip   (done; took {done['wall_s']:.1f} s)")
            return StageOutcome(stage.name, "skipped", float(done["wall_s"]), float(done["cpu_s"]))
        self.marker(stage.name).unlink(missing_ok=True)
        for path in stage.outputs:
            _remove(path)
        self.echo(f"{prefix}  start  {stage.command}")
        start, cpu_start = time.monotonic(), _cpu_seconds()
        try:
            stage.action()
        except BaseException:
            self.echo(f"{prefix}  FAILED after {time.monotonic() - start:.1f} s")
            raise
        wall, cpu = time.monotonic() - start, _cpu_seconds() - cpu_start
        missing = [str(p) for p in stage.outputs if not p.exists()]
        if missing:
            raise UserError(f"stage {stage.name} finished without writing {', '.join(missing)}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "fingerprint": fingerprint,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "command": stage.command,
        }
        self.marker(stage.name).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        self.echo(f"{prefix}  done   {wall:.1f} s (CPU {cpu:.1f} s)")
        return StageOutcome(stage.name, "ran", wall, cpu)

    def recorded(self, name: str) -> dict[str, Any] | None:
        """The done-marker of stage ``name`` (None when it never finished)."""
        path = self.marker(name)
        if not path.exists():
            return None
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return record


def stage_fingerprint(stage: Stage) -> str:
    """SHA-256 of the command and of every input file's relative path, size and modification time."""
    digest = hashlib.sha256(stage.command.encode())
    for root in stage.inputs:
        digest.update(f"\0{root}\0".encode())
        if root.is_file():
            stat = root.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
        elif root.is_dir():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                stat = path.stat()
                digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
        else:
            digest.update(b"missing")
    return digest.hexdigest()


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
