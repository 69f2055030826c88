"""Where a stage's library chatter goes: ``OUTPUT/logs/NAME.log``, so the console keeps the progress bars,
errors and results (``verbose`` keeps everything on the console instead).

:func:`quiet_logs` wraps one stage (a Beam job, ``ramp pretrain train``, ``ramp finetune sft``, a stage of an
experiment): logging records (Beam, megatron, torch, mlflow, ...), Python warnings (megatron's "Apex is not
installed", deprecations) and file descriptor 2 (C++ code, the JVM, Beam's worker processes) go to the
file; ``sys.stderr`` stays the console. Libraries that print to the console through loggers of their
own are brought in too (mlflow: its console handler, or, when first imported inside the block, none).
Contexts nest: an inner stage writes its own file and keeps the outer context's console.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

MLFLOW_LOGGING = "MLFLOW_CONFIGURE_LOGGING"  # false: mlflow adds no console handler when imported
# (console, file handler) of each open context, innermost last
_open: list[tuple[TextIO, logging.Handler]] = []


def log_path(output: str | Path, name: str) -> Path:
    """``OUTPUT/logs/NAME.log`` for a local output; a local temp file for a remote one (``gs://…``)."""
    if "://" in str(output):
        return Path(tempfile.gettempdir()) / "ramp-logs" / f"{name}-{os.getpid()}.log"
    return Path(output) / "logs" / f"{name}.log"


@contextmanager
def quiet_logs(output: str | Path, name: str, verbose: bool = False) -> Iterator[Path | None]:
    """Send logging records, Python warnings and file descriptor 2 to :func:`log_path` while the block runs;
    ``sys.stderr`` stays the console. Prints ``(logs: PATH)`` after the block when something was written
    (an empty log is removed). Yields the path (None when ``verbose``: nothing is redirected)."""
    if verbose:
        yield None
        return
    path = log_path(output, name)
    created = [d for d in (path.parent, *path.parents) if not d.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    root = logging.getLogger()
    outer = _open[-1] if _open else None
    saved_stderr, saved_level, saved_fd = sys.stderr, root.level, os.dup(2)
    saved_showwarning, mlflow_set = warnings.showwarning, MLFLOW_LOGGING in os.environ
    console = outer[0] if outer else _console()
    try:
        with open(path, "a", encoding="utf-8") as log:
            handler = logging.StreamHandler(log)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            if outer:
                root.removeHandler(outer[1])
            adopted = _adopt_loggers(handler)
            _open.append((console, handler))
            os.dup2(log.fileno(), 2)
            sys.stderr = console
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            warnings.showwarning = _to_file(log)
            os.environ.setdefault(MLFLOW_LOGGING, "false")
            try:
                yield path
            finally:
                if not mlflow_set:
                    os.environ.pop(MLFLOW_LOGGING, None)
                warnings.showwarning = saved_showwarning
                root.removeHandler(handler)
                root.setLevel(saved_level)
                _release_loggers(adopted, handler)
                _open.pop()
                if outer:
                    root.addHandler(outer[1])
                sys.stderr = saved_stderr
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
                if not outer:
                    console.close()
    finally:  # also when the stage fails
        if path.exists() and path.stat().st_size:
            print(f"(logs: {path})", file=sys.stderr)
        else:  # nothing was logged (e.g. the stage stopped at a missing input): leave no trace
            path.unlink(missing_ok=True)
            for directory in created:
                if directory.exists() and not any(directory.iterdir()):
                    directory.rmdir()


def _to_file(log: TextIO) -> Any:
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, *_: Any) -> None:
        log.write(warnings.formatwarning(message, category, filename, lineno))
        log.flush()

    return show


def _adopt_loggers(handler: logging.Handler) -> list[tuple[logging.Logger, list[logging.Handler]]]:
    """Loggers that print to the console themselves (``propagate`` off, e.g. mlflow's) write to ``handler``
    instead while the context is open; returns what to restore."""
    adopted = []
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and not logger.propagate and logger.handlers:
            adopted.append((logger, list(logger.handlers)))
            logger.handlers = [handler]
    return adopted


def _release_loggers(
    adopted: list[tuple[logging.Logger, list[logging.Handler]]], handler: logging.Handler
) -> None:
    for logger, handlers in adopted:
        if logger.handlers == [handler]:
            logger.handlers = handlers


def _console() -> TextIO:
    """A line-buffered text stream on a duplicate of file descriptor 2 as it is now (the terminal)."""
    return os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")


def redirect_output(log: str | Path) -> None:
    """Point file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``) at ``log`` (appending): a spawned
    worker's whole output, the engines' start-up chatter and every progress bar included, belongs there."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
