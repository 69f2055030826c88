"""Options shared by ``ramp`` commands, as annotated parameter types, and what they turn into.

The retriever options (``--index`` / ``--retriever-url``) mean the same in every command that searches:
:func:`load_with_retriever` is the one place that turns them and a recipe into a validated config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel

from ramp.config import load_config
from ramp.errors import UserError
from ramp.retrieval.config import RetrieverConfig, check_retriever, retriever_location

M = TypeVar("M", bound=BaseModel)

Overrides = Annotated[list[str] | None, typer.Option("--set", help="key=value config override; repeatable.")]
Workers = Annotated[int, typer.Option("--workers", min=1, help="Local worker processes.")]
ChunkMb = Annotated[
    float | None,
    typer.Option(
        "--chunk-mb", min=0, help="Local runs: input MB per chunk (bounds memory; default 4; 0: one pass)."
    ),
]
PipelineOptions = Annotated[
    list[str] | None,
    typer.Option("--pipeline-option", help="Beam pipeline option, e.g. --runner=DataflowRunner."),
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", help="Show library logs and warnings on the console (default: OUTPUT/logs/NAME.log)."
    ),
]
Index = Annotated[
    str | None,
    typer.Option(
        "--index", help="Local index directory (sets retriever.kind=lucene, or dense for a dense index)."
    ),
]
RetrieverUrl = Annotated[
    str | None,
    typer.Option(
        "--retriever-url", help="URL of a running `ramp serve-retriever` (sets retriever.kind=http)."
    ),
]
# A Beam job's command: Beam options may also follow ``--`` (e.g. ``-- --runner=FlinkRunner``).
BEAM_COMMAND = {"allow_extra_args": True, "ignore_unknown_options": True}


def beam_args(ctx: typer.Context, pipeline_options: list[str] | None) -> list[str]:
    """The Beam options of a command: its ``--pipeline-option`` values, then those after ``--``."""
    return [*(pipeline_options or []), *ctx.args]


def load_with_retriever(
    model: type[M],
    config: str | Path,
    overrides: Sequence[str] | None,
    index: str | None,
    retriever_url: str | None,
    *,
    section: str = "retriever",
    required: bool = False,
) -> M:
    """Load recipe ``config`` into ``model`` with its retriever section (dotted ``section``) pointed at
    ``--index`` or ``--retriever-url`` (else left as the recipe says, unless ``required``), then check the
    retriever is there (index directory, or a server that answers) so a wrong one fails before any work."""
    location = retriever_location(index, retriever_url)
    if required and not location:
        raise UserError("give exactly one of --index and --retriever-url")
    values = {f"{section}.{key}": value for key, value in location.items()}
    cfg = load_config(model, config, overrides or [], values=values)
    retriever: Any = cfg
    for part in section.split("."):
        retriever = getattr(retriever, part)
    if not isinstance(retriever, RetrieverConfig):
        raise TypeError(f"{model.__name__}.{section} is not a RetrieverConfig")
    check_retriever(retriever)
    return cfg
