"""The ``ramp`` command: one entry point for every stage. Sub-commands import their engines lazily.

A user mistake (:class:`ramp.errors.UserError`, a missing or existing file, a bad option) prints one line
``error: …`` and exits with code 2; ``--debug`` (anywhere before ``--``) or ``RAMP_DEBUG=1`` shows its
traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated

import typer
from typer._click.exceptions import (  # typer >= 0.29 vendors click
    ClickException,
    NoArgsIsHelpError,
    UsageError,
)

from ramp.cli.cot import cot_command
from ramp.cli.data import data_app
from ramp.cli.eval import eval_app
from ramp.cli.experiment import experiment_app
from ramp.cli.finetune import finetune_app
from ramp.cli.index import index_app
from ramp.cli.options import BEAM_COMMAND
from ramp.cli.pretrain import pretrain_app
from ramp.cli.rl import rl_app
from ramp.cli.serve import serve_retriever_command
from ramp.cli.sim import sim_app
from ramp.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="RAMP: teach LLMs to search.")
app.add_typer(data_app, name="data", help="Build masked RAMP samples and CoT trajectories from Wikipedia.")
app.add_typer(index_app, name="index", help="Build and inspect search indexes (BM25, dense).")
app.add_typer(
    eval_app, name="eval", help="Evaluate policies on QA datasets (MLflow-tracked) and compare runs."
)
app.add_typer(rl_app, name="rl", help="DAPO reinforcement learning and the verl export.")
app.add_typer(
    finetune_app,
    name="finetune",
    help="Fine-tune on QA sets: SFT through the Megatron stage, or DAPO RL with the QA prompt.",
)
app.add_typer(
    pretrain_app,
    name="pretrain",
    help="Megatron-core RAMP pretraining: shards, training, conversion, launch.",
)
app.add_typer(
    sim_app, name="sim", help="The simulated search engine (ZeroSearch): training pairs and fine-tuning."
)
app.add_typer(experiment_app, name="experiment", help="End to end: the demo and the RAMP-effect experiment.")
app.command("serve-retriever")(serve_retriever_command)
data_app.command("cot", context_settings=BEAM_COMMAND)(cot_command)


class _HideBeamApitoolsWarning(logging.Filter):
    """Beam's GCP IO logs "apitools not found ..." on the root logger whenever it is imported without the
    GCP extras; RAMP does not use BigQuery, so that one message is dropped (every other one is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and record.getMessage().startswith("apitools not found"))


_HIDE_BEAM_APITOOLS_WARNING = _HideBeamApitoolsWarning()


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error (or set RAMP_DEBUG=1).")
    ] = False,
) -> None:
    """RAMP: teach LLMs to search."""  # ``--debug`` is declared here for --help; :func:`run` acts on it


# A user's mistakes: printed as one line, exit code 2. Anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ClickException,
    UserError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def _message(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    elif isinstance(err, ClickException):
        where = f" (see `{err.ctx.command_path} --help`)" if isinstance(err, UsageError) and err.ctx else ""
        text = err.format_message() + where
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def run(args: Sequence[str]) -> int:
    """Run ``ramp ARGS`` and return its exit code: 2 and one ``error:`` line on a user mistake."""
    logging.getLogger().addFilter(_HIDE_BEAM_APITOOLS_WARNING)
    argv = list(args)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end] or os.environ.get("RAMP_DEBUG", "") not in ("", "0")
    argv = ["--debug"] * debug + [a for a in argv[:end] if a != "--debug"] + argv[end:]
    command = typer.main.get_command(app)
    try:
        result = command.main(argv, prog_name="ramp", standalone_mode=False)
    except NoArgsIsHelpError as err:
        typer.echo(err.format_message())
        return err.exit_code
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {_message(err)}", err=True)
        return 2
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
