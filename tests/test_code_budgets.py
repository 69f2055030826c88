"""Size and scope budgets of the code: the DAPO entry stays thin, the RL trainer's functions stay short, and
the chunk driver knows no job (every job's specifics live in the job's own module)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Words of the jobs that run on the chunk driver (build, answerability, CoT, synthesis, dense index).
JOB_WORDS = re.compile(
    r"sample|passage|mask|span|answerab|cot|trajector|synth|spacy|dpr|wiki|dense|lucene", re.I
)


def test_the_dapo_entry_is_at_most_150_lines() -> None:
    lines = (ROOT / "finetune/dapo.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"finetune/dapo.py has {len(lines)} lines"


def test_no_rl_function_is_over_100_lines() -> None:
    long = []
    for path in sorted((ROOT / "ramp/rl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 100:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def _docstrings(tree: ast.Module) -> set[int]:
    """``id`` of every docstring constant in ``tree``."""
    owners = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef))]
    return {
        id(owner.body[0].value)
        for owner in owners
        if owner.body
        and isinstance(owner.body[0], ast.Expr)
        and isinstance(owner.body[0].value, ast.Constant)
        and isinstance(owner.body[0].value.value, str)
    }


def test_the_chunk_driver_has_no_job_specific_code() -> None:
    """Its imports are the stage rule, Beam's file systems and the runner check; no name, attribute or
    string in its code (docstrings and comments aside, where jobs serve as examples) is a job's."""
    tree = ast.parse((ROOT / "pipelines/chunks.py").read_text(encoding="utf-8"))
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    ramp = {m for m in imported if m.split(".")[0] == "ramp"}
    assert ramp <= {"ramp.stages", "ramp.pipelines.runner"}, ramp
    docstrings = _docstrings(tree)
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.append(node.value)
        elif isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            words.append(node.name)
        elif isinstance(node, ast.arg):
            words.append(node.arg)
    assert words
    assert not [w for w in words if JOB_WORDS.search(w)]
