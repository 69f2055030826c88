"""Where a Beam job's own logs go: a file under its output directory, so the console keeps the progress
and the final table (``--verbose`` keeps everything on the console instead)."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def job_log_path(output: str, name: str) -> Path:
    """``OUTPUT/logs/NAME.log`` for a local output; a local temp file for a remote one (``gs://…``)."""
    if "://" in output:
        return Path(tempfile.gettempdir()) / "ramp-logs" / f"{name}-{os.getpid()}.log"
    return Path(output) / "logs" / f"{name}.log"


@contextmanager
def beam_logs(output: str, name: str, verbose: bool) -> Iterator[Path | None]:
    """Send logging records and file descriptor 2 (which Beam's worker processes and the JVM inherit) to
    :func:`job_log_path` while the job runs; ``sys.stderr`` stays the console for progress bars and errors.
    Yields the log path (None when ``verbose``)."""
    if verbose:
        yield None
        return
    path = job_log_path(output, name)
    created = [d for d in (path.parent, *path.parents) if not d.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    root = logging.getLogger()
    saved_stderr, saved_level, saved_fd = sys.stderr, root.level, os.dup(2)
    console = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    with open(path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        os.dup2(log.fileno(), 2)
        sys.stderr = console
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield path
        finally:
            root.removeHandler(handler)
            root.setLevel(saved_level)
            sys.stderr = saved_stderr
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            console.close()
            if path.stat().st_size:
                print(f"(Beam logs: {path})", file=sys.stderr)
            else:  # nothing was logged (e.g. the job stopped at a missing input): leave no trace
                path.unlink()
                for directory in created:
                    if directory.exists() and not any(directory.iterdir()):
                        directory.rmdir()
