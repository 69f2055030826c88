"""`ramp pretrain train` on CPU: loss falls, MLflow, kill/resume continues the same curve, DP=2 equals
DP=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient
from pretrain_helpers import make_trajectories, save_tiny_hf, write_trajectories
from ramp.pretrain.prepare import run_prepare
from ramp.pretrain.train import run_training

from ramp.config import load_config
from ramp.train.checkpoint import LATEST_FILE, iteration_dir
from ramp.train.config import PretrainConfig

STEPS, KILL_AT = 200, 100
# relative: same weights, optimizer state and rows; DP=2 only sums the same per-token losses and gradients
# in another order (fp32).
TOLERANCE = 1e-5


def _config(tmp: Path, name: str, **changes: object) -> tuple[Path, PretrainConfig]:
    data = {
        "prepare": {"seq_length": 384, "num_shards": 2},
        "data": {"blend": ["1.0", str(tmp / "shards")]},
        "model": {"hf": str(tmp / "hf"), "init": "random"},
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 10, "weight_decay": 0.01},
        "train": {"steps": STEPS, "micro_batch_size": 1, "global_batch_size": 2, "seed": 3},
        "checkpoint": {"dir": str(tmp / f"ckpt-{name}"), "save_interval": KILL_AT},
        "tracking": {
            "experiment": "pretrain-test",
            "run_name": name,
            "log_interval": 10,
            "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        },
        "launch": {"gpus_per_node": 2, "script": str(tmp / f"{name}.sbatch")},
    }
    for key, value in changes.items():
        section, field = key.split("__")
        data[section][field] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, load_config(PretrainConfig, path)


def _losses(tmp: Path, run_name: str) -> dict[int, float]:
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("pretrain-test")
    (run,) = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{run_name}'")
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}


def _ramp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "ramp", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, float]]:
    """Shards from short trajectories and one uninterrupted 200-step run (checkpoint at step 100);
    returns the directory and the run's loss at every step."""
    tmp = tmp_path_factory.mktemp("pretrain")
    save_tiny_hf(tmp / "hf", hidden=32)
    trajectories = make_trajectories(24, passage_chars=80, result_chars=60, short_prompts=True)
    _, config = _config(tmp, "full")
    manifest = run_prepare(write_trajectories(trajectories, tmp / "trajectories"), tmp / "shards", config)
    assert manifest["packed"] == 24 and manifest["rows"] < 24  # conversations share rows
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster, and the CPU is shared
    try:
        summary = run_training(config)
    finally:
        torch.set_num_threads(threads)
    assert summary["start_step"] == 0 and sorted(summary["losses"]) == list(range(1, STEPS + 1))
    return tmp, summary["losses"]


def test_loss_falls_and_run_is_in_mlflow(trained: tuple[Path, dict[int, float]]):
    tmp, losses = trained
    first, last = losses[1], sum(losses[s] for s in range(STEPS - 9, STEPS + 1)) / 10
    assert last < 0.5 * first, (first, last)
    logged = _losses(tmp, "full")  # every 10th step, read back through the MLflow client
    assert sorted(logged) == list(range(10, STEPS + 1, 10)) and all(logged[s] == losses[s] for s in logged)
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("pretrain-test").experiment_id], "attributes.run_name = 'full'"
    )
    assert run.data.params["train.global_batch_size"] == "2" and run.data.params["model.init"] == "random"
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(run.data.metrics)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["pretrain.yaml"]


def test_killed_run_resumes_on_the_same_curve_under_dp2(trained: tuple[Path, dict[int, float]]):
    """A run killed right after its step-100 save, resumed in fresh processes by `ramp pretrain launch`
    (torchrun, 2 gloo ranks: DP=2, one row each per step, the same global batch of 2): steps 101-110
    give the uninterrupted DP=1 run's losses."""
    tmp, full = trained
    killed = tmp / "ckpt-resumed"
    shutil.copytree(iteration_dir(tmp / "ckpt-full", KILL_AT), iteration_dir(killed, KILL_AT))
    (killed / LATEST_FILE).write_text(f"{KILL_AT}\n")
    path, _ = _config(tmp, "resumed", tracking__log_interval=1)
    # the same 200-step schedule, stopped 10 steps after the kill
    result = _ramp(
        "pretrain", "launch", "--config", str(path), "--set", f"train.stop_at={KILL_AT + 10}", cwd=tmp
    )
    assert "--nproc-per-node 2" in result.stdout
    resumed = _losses(tmp, "resumed")
    assert sorted(resumed) == list(range(KILL_AT + 1, KILL_AT + 11))
    for step, loss in resumed.items():
        assert loss == pytest.approx(full[step], rel=TOLERANCE, abs=0.0), step
