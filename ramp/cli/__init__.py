"""The ``ramp`` command: one entry point for every stage.

Each sub-command is a module of this package that imports its stage's engine at the top. :data:`COMMANDS`
names them; ``ramp --help`` lists them without importing any, and ``ramp NAME ...`` imports only NAME's.

A user mistake (:class:`ramp.errors.UserError`, a missing or existing file, a bad option) prints one line
``error: …`` and exits with code 2; ``--debug`` (anywhere before ``--``) or ``RAMP_DEBUG=1`` shows its
traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer._click.core import Command, Context  # typer >= 0.29 vendors click
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperCommand, TyperGroup

from ramp.errors import UserError

# name -> (module:attribute, a Typer app or a command function), help line; listed in this order
COMMANDS = {
    "serve-retriever": (
        "ramp.cli.serve:serve_retriever_command",
        "Serve a local index (lucene, dense or hybrid) or a simulated search engine "
        "(retriever.kind=simulated) over HTTP (POST /retrieve, GET /health).",
    ),
    "data": ("ramp.cli.data:data_app", "Build masked RAMP samples and CoT trajectories from Wikipedia."),
    "index": ("ramp.cli.index:index_app", "Build and inspect search indexes (BM25, dense)."),
    "eval": ("ramp.cli.eval:eval_app", "Evaluate policies on QA datasets (MLflow-tracked) and compare runs."),
    "rl": ("ramp.cli.rl:rl_app", "DAPO reinforcement learning and the verl export."),
    "finetune": (
        "ramp.cli.finetune:finetune_app",
        "Fine-tune on QA sets: SFT through the Megatron stage, or DAPO RL with the QA prompt.",
    ),
    "pretrain": (
        "ramp.cli.pretrain:pretrain_app",
        "Megatron-core RAMP pretraining: shards, training, conversion, launch.",
    ),
    "sim": (
        "ramp.cli.sim:sim_app",
        "The simulated search engine (ZeroSearch): training pairs and fine-tuning.",
    ),
    "experiment": (
        "ramp.cli.experiment:experiment_app",
        "End to end: the demo and the RAMP-effect experiment.",
    ),
}


class LazyCommand(TyperCommand):
    """A sub-command listed by its name and help; its module is imported when the command line reaches it."""

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(name, help=help)
        self.target = target

    def load(self) -> Command:
        """The command, built as an ``add_typer`` / ``command`` registration on the root builds it."""
        module, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        root = typer.Typer(add_completion=False)
        if not isinstance(found, typer.Typer):
            root.command(self.name)(found)
            return typer.main.get_command(root)
        root.add_typer(found, name=self.name, help=self.help)
        group = typer.main.get_command(root)
        assert isinstance(group, TyperGroup) and self.name is not None
        return group.commands[self.name]

    def make_context(
        self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any
    ) -> Context:
        return self.load().make_context(info_name, args, parent, **extra)


class RampGroup(TyperGroup):
    """The root group: every entry of :data:`COMMANDS`, as a :class:`LazyCommand`."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (target, help) in COMMANDS.items():
            self.add_command(LazyCommand(name, target, help))


app = typer.Typer(
    cls=RampGroup, no_args_is_help=True, add_completion=False, help="RAMP: teach LLMs to search."
)


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
