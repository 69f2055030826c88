"""The CPU-side parts of the GPU check (``bench/gpu_check.py``): arguments, the wheel list and the pip
commands for the GPU machine, the report (a failing part reported with its error, skipped parts with
their reason) and the one line on a machine without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ramp.config import apply_overrides, load_config, read_yaml
from ramp.qa.config import EvalConfig
from ramp.rl.config import RLConfig
from ramp.train.config import PretrainConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402


def test_arguments():
    args = gpu_check.parse_args([])
    assert args.report == Path("runs/gpu-check/report.json") and args.only is None and args.steps == 12
    args = gpu_check.parse_args(["--only", "parity", "vllm", "--wheels", "w", "--steps", "5"])
    assert args.only == ["parity", "vllm"] and args.wheels == Path("w") and args.steps == 5
    for bad in (["--only", "nothing"], ["--steps", "2"]):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(bad)


def test_every_part_is_checked_or_skipped_with_a_reason():
    assert set(gpu_check.PARTS) == set(gpu_check.PART_FUNCTIONS) | set(gpu_check.SKIPPED)
    assert set(gpu_check.SKIPPED) == {"vllm", "transformer_engine"}
    assert all("64 MiB" in reason for reason in gpu_check.SKIPPED.values())
    assert sum(gpu_check.TIME_LIMITS_S.values()) <= 7.5 * 60  # the install takes the rest of 8 minutes


def test_wheel_list_and_pip_commands(tmp_path):
    pins = gpu_check.requirements()
    names = [p.split("==")[0] for p in pins]
    assert names[0] == "megatron-core" and len(set(names)) == len(names)
    assert not {"torch", "transformers", "pyarrow", "typer"} & set(names)  # the GPU image has them
    command = gpu_check.download_command(tmp_path, pins)
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
    assert "--only-binary=:all:" in command and command[command.index("--python-version") + 1] == "3.12"
    assert command[command.index("--abi") + 1] == "cp312" and "manylinux2014_x86_64" in command
    assert command[-len(pins) :] == pins
    with pytest.raises(FileNotFoundError, match="make gpu-wheels"):
        gpu_check.install_command(tmp_path)
    (tmp_path / "ramp-0.1.0-py3-none-any.whl").write_bytes(b"")
    install = gpu_check.install_command(tmp_path)
    assert {"--no-index", "--no-deps"} <= set(install) and install[install.index("--target") + 1] == str(
        tmp_path / "site"
    )
    assert install[-1].endswith("ramp-0.1.0-py3-none-any.whl") and install[-len(pins) - 1 : -1] == pins
    unpinned = tmp_path / "req.txt"
    unpinned.write_text("megatron-core==0.16.1\npydantic  # any\n")
    with pytest.raises(ValueError, match="pin every package"):
        gpu_check.requirements(unpinned)


def test_report_with_a_failing_part_and_skipped_parts(tmp_path):
    env = {**os.environ, "RAMP_GPU_CHECK_DATA": str(tmp_path / "no-data")}
    started = 0.0
    parts = gpu_check.run_parts(["parity", "vllm", "transformer_engine"], tmp_path, env, steps=3)
    assert parts["parity"]["status"] == "failed" and "make gpu-wheels" in parts["parity"]["error"]
    assert parts["vllm"] == {"status": "skipped", "reason": gpu_check.SKIPPED["vllm"]}
    report = gpu_check.write_report(tmp_path / "out" / "report.json", "NVIDIA H200", parts, started)
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written == report and written["ok"] is False and written["gpu"] == "NVIDIA H200"
    assert set(written["parts"]) == {"parity", "vllm", "transformer_engine"}
    skipped_only = gpu_check.write_report(tmp_path / "r.json", "x", {"vllm": parts["vllm"]}, started)
    assert skipped_only["ok"] is True


def test_a_part_over_its_time_limit_is_reported(tmp_path):
    def runner(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    parts = gpu_check.run_parts(["eval"], tmp_path, dict(os.environ), steps=3, runner=runner)
    assert parts["eval"]["status"] == "failed" and parts["eval"]["error"] == "over its 50 s limit"


def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--report", str(report)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check"
    ]
    assert not report.exists()


def test_the_check_retriever_ranks_by_bm25():
    retriever = gpu_check.PassageBM25(ROOT / "data" / "wiki18-sample-1000.jsonl")
    (hits,) = retriever.search(["Twycross Zoo founder"], k=3)
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score > 0
    assert "Twycross" in hits[0].title + hits[0].text
    (without,) = retriever.search(["Twycross Zoo founder"], k=3, exclude_doc_ids=[{hits[0].doc_id}])
    assert hits[0].doc_id not in {h.doc_id for h in without} and without[0] == hits[1]


def test_the_parts_settings_are_valid_configs(tmp_path):
    """The GPU parts cannot run here; their settings go through the same loaders as `ramp` commands."""
    values = gpu_check.pretrain_values(tmp_path / "data", tmp_path / "hf", tmp_path, "run", steps=12)
    extra = {"parallel.use_distributed_optimizer": True, "parallel.recompute": True}
    pretrain = load_config(PretrainConfig, "pretrain", values={**values, **extra})
    assert pretrain.train.precision == "bf16" and pretrain.parallel.recompute
    assert pretrain.prepare.seq_length == gpu_check.SEQ_LENGTH and pretrain.train.global_batch_size == 16
    rl = load_config(
        RLConfig, "rl", values=gpu_check.rl_values(tmp_path, "http://127.0.0.1:1", tmp_path / "q", tmp_path)
    )
    assert rl.retriever.kind == "http" and rl.data.task == "qa" and rl.trainer.total_steps == 1
    overrides = gpu_check.eval_overrides(tmp_path / "hf", "http://127.0.0.1:1", tmp_path / "q.jsonl")
    evaluation = EvalConfig.model_validate(apply_overrides(read_yaml("eval"), overrides))
    assert evaluation.agent.backend.hf.device == "cuda" and evaluation.retriever.url == "http://127.0.0.1:1"
    assert [(d.name, d.path) for d in evaluation.datasets] == [("hotpotqa", str(tmp_path / "q.jsonl"))]
