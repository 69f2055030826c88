"""The entry of a RAMP-effect worker process: its whole output goes to its log before anything heavy loads.

A spawned worker imports its target's module first; this module is light, so Beam's, torch's and the
trainers' start-up chatter (and every progress bar of the stages it runs) lands in
``OUTPUT/logs/worker-NAME.log`` and the parent's console keeps one line per stage.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def run_job(log: str, args: tuple[Any, ...]) -> None:
    """Point file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``) at ``log``, then run the job."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from ramp.cli.ramp_effect import run_seed_job

    run_seed_job(*args)
