"""One resume rule for every resumable thing (the demo's stages, evaluation parts, chunks of Beam jobs).

A stage is done when its marker ``STATE_DIR/NAME.json`` holds the fingerprint of its resolved settings
(canonical JSON) and of its input manifest (every input file's path, size and blake2b content hash), and
every output it recorded (relative paths and sizes) is still there. Otherwise its outputs are removed, it
runs, and its marker is written last, atomically, so a killed run is redone. A skip writes nothing.

Content, not time, decides (as Make's successors Bazel and DVC do): a changed setting reruns the stage;
stages downstream rerun because their inputs' content changed; a touched file or a rerun that wrote
identical bytes reruns nothing. A file's hash is re-used from the previous marker while its size and
``mtime_ns`` are unchanged, so big unchanged inputs are not read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ramp.errors import UserError

Echo = Callable[[str], None]
# A file's content hash by (absolute path, size, mtime_ns): shared by the stages of one runner.
HashCache = dict[tuple[str, int, int], str]


@dataclass(frozen=True)
class Stage:
    name: str
    action: Callable[[], object]
    settings: Any = None  # the stage's resolved settings: a pydantic model, or JSON-able data
    inputs: tuple[Path, ...] = ()  # files or directories it reads
    outputs: tuple[Path, ...] = ()  # files or directories it writes: removed before a run, required after
    command: str = ""  # what a user would type (shown on the console; not part of the fingerprint)


@dataclass(frozen=True)
class StageOutcome:
    name: str
    status: Literal["ran", "skipped"]
    wall_s: float  # of the run that made the outputs (this one, or the one a skip relies on)
    cpu_s: float  # CPU seconds of that run: this process and the worker processes it waited for


def canonical_json(settings: Any) -> str:
    """Settings as canonical JSON: sorted keys, no spaces; pydantic models dumped in JSON mode."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def stage_fingerprint(
    stage: Stage,
    previous: dict[str, Any] | None = None,
    hashes: HashCache | None = None,
    base: Path | None = None,
) -> tuple[str, dict[str, Any]]:
    """The stage's fingerprint and its input manifest (``{path: {size, mtime_ns, blake2b}}``).

    ``previous``: the stage's last marker, whose hashes are re-used for files of unchanged size and
    ``mtime_ns``; ``hashes``: more known hashes (a runner's, across its stages); ``base``: paths under it
    are recorded relative to it (a runner's: the folder of its state directory, so a moved output
    directory keeps its markers)."""
    known = (previous or {}).get("inputs", {})
    manifest: dict[str, Any] = {}
    for root in stage.inputs:
        for key, path in _files(root, base):
            manifest[key] = _file_entry(path, known.get(key), hashes)
    content = {key: [e.get("size"), e.get("blake2b")] for key, e in manifest.items()}
    text = canonical_json({"settings": json.loads(canonical_json(stage.settings)), "inputs": content})
    return hashlib.blake2b(text.encode("utf-8")).hexdigest(), manifest


class StageRunner:
    """Runs stages under the rule above with markers in ``state_dir``; one console line per stage start,
    skip and finish, with wall and CPU time."""

    def __init__(self, state_dir: Path, echo: Echo = print) -> None:
        self.state_dir = Path(state_dir)
        self.echo = echo
        self.hashes: HashCache = {}
        self.base = self.state_dir.parent  # outputs and inputs under it are recorded by relative path

    def marker(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def recorded(self, name: str) -> dict[str, Any] | None:
        """The marker of stage ``name`` (None when it never finished)."""
        try:
            record = json.loads(self.marker(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def why(self, stage: Stage) -> str | None:
        """Why ``stage`` must run (None: it is done)."""
        return self._check(stage)[0]

    def done(self, stage: Stage) -> bool:
        return self.why(stage) is None

    def run(
        self, stages: Sequence[Stage], force: bool = False, only: Sequence[str] = ()
    ) -> list[StageOutcome]:
        """Run ``stages`` in order (``only``: just those names); a stage that raises stops the run."""
        names = [s.name for s in stages]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise UserError(f"unknown stage(s) {', '.join(unknown)}; the stages are: {', '.join(names)}")
        width = max(len(n) for n in names)
        outcomes = []
        for number, stage in enumerate(stages, start=1):
            if not only or stage.name in only:
                prefix = f"[{number:>2}/{len(stages)}] {stage.name:<{width}}"
                outcomes.append(self.run_one(stage, force, prefix))
        return outcomes

    def run_one(self, stage: Stage, force: bool = False, prefix: str | None = None) -> StageOutcome:
        """Skip ``stage`` if it is done (and not ``force``d), else run it on a clean slate."""
        prefix = prefix or stage.name
        reason, fingerprint, manifest = self._check(stage)
        done = self.recorded(stage.name)
        if reason is None and not force and done is not None:
            self.echo(f"{prefix}  skip   (done; took {done['wall_s']:.1f} s)")
            return StageOutcome(stage.name, "skipped", float(done["wall_s"]), float(done["cpu_s"]))
        self.marker(stage.name).unlink(missing_ok=True)
        for path in stage.outputs:
            _remove(path)
        self.echo(f"{prefix}  start  {stage.command or stage.name}  ({reason or 'forced'})")
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
        record = {
            "fingerprint": fingerprint,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "command": stage.command,
            "settings": json.loads(canonical_json(stage.settings)),
            "inputs": manifest,
            "outputs": _output_sizes(stage.outputs, self.base),
        }
        _write_atomically(self.marker(stage.name), json.dumps(record, indent=2, sort_keys=True) + "\n")
        self.echo(f"{prefix}  done   {wall:.1f} s (CPU {cpu:.1f} s)")
        return StageOutcome(stage.name, "ran", wall, cpu)

    def _check(self, stage: Stage) -> tuple[str | None, str, dict[str, Any]]:
        previous = self.recorded(stage.name)
        fingerprint, manifest = stage_fingerprint(stage, previous, self.hashes, self.base)
        if previous is None:
            return "not run before", fingerprint, manifest
        if previous.get("fingerprint") != fingerprint:
            if previous.get("settings") != json.loads(canonical_json(stage.settings)):
                return "settings changed", fingerprint, manifest
            old = previous.get("inputs", {})
            changed = sorted(
                k for k in old.keys() | manifest.keys() if _content(old.get(k)) != _content(manifest.get(k))
            )
            shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            return f"inputs changed: {shown}", fingerprint, manifest
        if not _intact(previous.get("outputs"), stage.outputs, self.base):
            return "outputs missing or changed", fingerprint, manifest
        return None, fingerprint, manifest


def run_stage(stage: Stage, state_dir: Path, echo: Echo = print, force: bool = False) -> StageOutcome:
    """One stage under the rule (its marker in ``state_dir``)."""
    return StageRunner(state_dir, echo).run_one(stage, force)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"stage settings must be JSON-able or pydantic models, got {type(value).__name__}")


def _key(path: Path, base: Path | None) -> str:
    """``path`` relative to ``base`` when it lies under it, else as given."""
    if base is not None:
        absolute, root = os.path.abspath(path), os.path.abspath(base)
        if absolute.startswith(root + os.sep):
            return Path(os.path.relpath(absolute, root)).as_posix()
    return path.as_posix()


def _files(root: Path, base: Path | None) -> list[tuple[str, Path | None]]:
    """``(manifest key, file)`` of an input: the file itself, or every file under a directory by its
    relative path; a missing input is recorded as missing (None)."""
    key = _key(root, base)
    if root.is_file():
        return [(key, root)]
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
        return [(f"{key}/{p.relative_to(root).as_posix()}", p) for p in files]
    return [(key, None)]


def _file_entry(path: Path | None, previous: Any, hashes: HashCache | None) -> dict[str, Any]:
    if path is None:
        return {"missing": True}
    stat = path.stat()
    entry: dict[str, Any] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    unchanged = isinstance(previous, dict) and (previous.get("size"), previous.get("mtime_ns")) == (
        stat.st_size,
        stat.st_mtime_ns,
    )
    if unchanged and previous.get("blake2b"):
        digest = str(previous["blake2b"])
    elif hashes is not None and cache_key in hashes:
        digest = hashes[cache_key]
    else:
        digest = _blake2b(path)
    if hashes is not None:
        hashes[cache_key] = digest
    return {**entry, "blake2b": digest}


def _blake2b(path: Path) -> str:
    digest = hashlib.blake2b()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _content(entry: Any) -> Any:
    return None if not isinstance(entry, dict) else (entry.get("size"), entry.get("blake2b"))


def _output_sizes(outputs: Sequence[Path], base: Path) -> dict[str, int | None]:
    """Every output file's size by path (relative to ``base``); a directory: None, then each file in it."""
    sizes: dict[str, int | None] = {}
    for root in outputs:
        key = _key(root, base)
        if root.is_dir():
            sizes[key] = None
            files = sorted(p for p in root.rglob("*") if p.is_file())
            sizes |= {f"{key}/{p.relative_to(root).as_posix()}": p.stat().st_size for p in files}
        else:
            sizes[key] = root.stat().st_size
    return sizes


def _intact(recorded: Any, outputs: Sequence[Path], base: Path) -> bool:
    """Every declared output exists, and every recorded one as recorded (a directory, or a file's size)."""
    if not isinstance(recorded, dict) or not all(p.exists() for p in outputs):
        return False
    for key, size in recorded.items():
        path = base / key
        if not (path.is_dir() if size is None else path.is_file() and path.stat().st_size == size):
            return False
    return True


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
