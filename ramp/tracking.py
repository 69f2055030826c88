"""MLflow tracking shared by every training and evaluation stage.

The default store is a local sqlite file, ``runs/mlflow.db`` (see it with
``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``); ``MLFLOW_TRACKING_URI`` or an explicit
``tracking_uri`` selects any other store.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

DEFAULT_STORE = Path("runs") / "mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    """``explicit``, else ``$MLFLOW_TRACKING_URI``, else the sqlite store ``runs/mlflow.db``."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    DEFAULT_STORE.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_STORE.resolve()}"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts as ``a.b.c`` params; values stringified and cut to MLflow's 6,000 chars."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


def ensure_experiment(name: str, uri: str | None = None) -> None:
    """Create ``name`` with its artifacts beside a sqlite store (``<db dir>/mlartifacts``), not in MLflow's
    default ``./mlruns`` under whatever directory the command ran in; other stores keep their default."""
    store = tracking_uri(uri)
    client = MlflowClient(store)
    if not store.startswith("sqlite:///") or client.get_experiment_by_name(name) is not None:
        return
    artifacts = Path(store.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
    client.create_experiment(name, artifact_location=artifacts.as_uri())


@contextmanager
def mlflow_run(
    experiment: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    uri: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[Any]:
    """Start (and always end) one MLflow run in ``experiment``; yields the ``mlflow`` module.

    ``run_id`` continues an existing run (a resumed job): its params were logged when it started.
    """
    # MLflow exports the URI it is given into os.environ for child processes; put it back afterwards, so a
    # later run in this process (or a command it starts) still gets its own default.
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri(uri))
    try:
        ensure_experiment(experiment, uri)
        mlflow.set_experiment(experiment)
        if run_id is not None:
            with mlflow.start_run(run_id=run_id):
                yield mlflow
            return
        with mlflow.start_run(run_name=run_name, tags=dict(tags or {})):
            if params:
                mlflow.log_params(flatten_params(params))
            yield mlflow
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
