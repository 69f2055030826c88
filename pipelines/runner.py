"""What every job shares to run: its Beam options and its Metrics counters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

# Runners whose shuffle lives in this machine's memory: jobs run on them in chunks (pipelines.chunks).
LOCAL_RUNNERS = frozenset({"DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner"})


def runner_name(extra_args: Sequence[str]) -> str | None:
    """The ``--runner`` of Beam arguments (the last one given), or None."""
    name = None
    for i, arg in enumerate(extra_args):
        if arg.startswith("--runner="):
            name = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(extra_args):
            name = extra_args[i + 1]
    return name


def is_local_runner(extra_args: Sequence[str]) -> bool:
    """True when the arguments leave the job on a local, in-memory runner (the default FnApiRunner)."""
    name = runner_name(extra_args)
    return name is None or name.rsplit(".", 1)[-1] in LOCAL_RUNNERS


def pipeline_options(workers: int, extra_args: Sequence[str] = ()) -> PipelineOptions:
    """Beam options: the given ones, else the local FnApiRunner (``workers`` > 1: that many processes)."""
    defaults: dict[str, Any] = {}
    if runner_name(extra_args) is None:
        defaults["runner"] = "FnApiRunner"
        if workers > 1:
            defaults.update(direct_running_mode="multi_processing", direct_num_workers=workers)
    return PipelineOptions(list(extra_args), **defaults)


@dataclass(frozen=True)
class BeamRun:
    """How a job's pipelines run: local worker processes and Beam pipeline options (e.g. a runner)."""

    workers: int = 1
    pipeline_args: tuple[str, ...] = ()

    @property
    def parallel(self) -> bool:
        """More than one worker: several local processes, or a remote runner."""
        return self.workers > 1 or not is_local_runner(self.pipeline_args)

    def run(self, build: Callable[[beam.Pipeline], object], namespace: str) -> dict[str, int]:
        """Wire a pipeline with ``build``, run it to the end and return its counters of ``namespace``."""
        pipeline = beam.Pipeline(options=pipeline_options(self.workers, self.pipeline_args))
        build(pipeline)
        result = pipeline.run()
        result.wait_until_finish()
        return counter_totals(result, namespace)


LOCAL = BeamRun()  # the default: one local worker process, FnApiRunner


def counter_totals(result: Any, namespace: str) -> dict[str, int]:
    """The committed value of each counter of ``namespace`` in a finished pipeline ``result``, by name."""
    counters = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
    totals: dict[str, int] = {}
    for counter in counters:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + counter.committed
    return totals


ALLOWED_PREFIX = "allowed_m"  # counter of passages by how many masks they allow: allowed_m3, ...


def count_allowed(namespace: str, m: int) -> None:
    """Count one passage allowing ``m`` masks (first phase of a two-phase chunk)."""
    Metrics.counter(namespace, f"{ALLOWED_PREFIX}{m}").inc()


def split_allowed(counters: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``(passages by m, the other counters)`` of a finished first phase."""
    by_m = {n.removeprefix(ALLOWED_PREFIX): c for n, c in counters.items() if n.startswith(ALLOWED_PREFIX)}
    others = {n: c for n, c in counters.items() if not n.startswith(ALLOWED_PREFIX)}
    return dict(sorted(by_m.items())), others
