"""MLflow tracking shared by every training and evaluation stage.

The default store is a local sqlite file, ``runs/mlflow.db`` (see it with
``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``); ``MLFLOW_TRACKING_URI`` or an explicit
``tracking_uri`` selects any other store. MLflow is imported lazily, so ``ramp`` stays light.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def mlflow_run(
    experiment: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """Start (and always end) one MLflow run in ``experiment``; yields the ``mlflow`` module."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(uri))
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {})):
        if params:
            mlflow.log_params(flatten_params(params))
        yield mlflow
