"""An exported RAMP run for the verl tests (``tests/test_verl_*.py``, run in ``.venv-verl``): the RL task's
samples and a QA set through ``ramp rl export-verl``, a tiny policy saved as an HF checkpoint, and verl's
own config loader (hydra over ``verl.trainer.config``) composing a stage of the run."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from rl_task import build_corpus
from tiny_model import tiny_model, tiny_tokenizer
from typer.testing import CliRunner

from ramp.cli import app

STAGES = (1, 2)
QA = [{"id": i, "question": f"Where was person {i} born?", "golden_answers": ["Paris"]} for i in range(2)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def save_policy(out: Path) -> Path:
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def export_run(root: Path, port: int, *extra: str) -> dict[str, Path]:
    """Corpus, samples, a tiny policy and the exported run (``out``) under ``root``."""
    corpus, samples = build_corpus(root / "task")
    qa = root / "qa.jsonl"
    qa.write_text("".join(json.dumps(row) + "\n" for row in QA), encoding="utf-8")
    policy = save_policy(root / "policy")
    out = root / "verl"
    args = ["rl", "export-verl", "--samples", str(samples), "--qa", f"hotpotqa={qa}", "--output", str(out)]
    args += ["--set", f"curriculum.stages={list(STAGES)}", "--set", f"policy.model={policy}"]
    args += ["--set", f"retriever.index={root / 'index'}", "--retriever-port", str(port)]
    args += ["--max-prompt-length", "256", "--set", "search.max_context_tokens=1024", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return {"corpus": corpus, "samples": samples, "policy": policy, "out": out, "index": root / "index"}


def compose_stage(out: Path, stage: str, overrides: list[str]) -> Any:
    """``stage``'s config as ``verl.trainer.main_ppo --config-path out --config-name stage`` builds it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(out), version_base=None):
        return compose(config_name=stage, overrides=overrides)
