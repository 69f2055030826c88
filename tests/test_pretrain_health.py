"""The Megatron SFT loop's health check on CPU: a NaN at step k stops the run with one line and leaves the
step k-1 checkpoint intact (resumed, it continues on the clean run's curve); in skip mode the NaN step's
update is dropped and training goes on."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import ramp.pretrain.train as pretrain_train
import torch
from mlflow import MlflowClient
from pretrain_helpers import make_trajectories, save_tiny_hf, write_trajectories
from ramp.pretrain.prepare import run_prepare
from ramp.pretrain.train import run_training

from ramp.train.checkpoint import iteration_dir, latest_iteration
from ramp.train.config import PretrainConfig
from ramp.train.health import TrainingHealthError

STEPS, FAULT = 5, 3


def config(tmp: Path, name: str, **health: str) -> PretrainConfig:
    return PretrainConfig.model_validate(
        {
            "prepare": {"seq_length": 256, "num_shards": 1},
            "data": {"blend": ["1.0", str(tmp / "shards")]},
            "model": {"hf": str(tmp / "hf"), "init": "random"},
            "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1},
            "train": {
                "steps": STEPS,
                "micro_batch_size": 1,
                "global_batch_size": 1,
                "seed": 3,
                "health": health,
            },
            "checkpoint": {"dir": str(tmp / f"ckpt-{name}"), "save_interval": 1},
            "tracking": {
                "experiment": "pretrain-health",
                "run_name": name,
                "log_interval": 1,
                "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            },
        }
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pretrain-health")
    save_tiny_hf(tmp / "hf", hidden=32)
    trajectories = make_trajectories(8, passage_chars=80, result_chars=60, short_prompts=True)
    run_prepare(
        write_trajectories(trajectories, tmp / "trajectories"), tmp / "shards", config(tmp, "prepare")
    )
    return tmp


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nan_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The model's embeddings turn NaN in the forward of ``step`` (one micro-batch per step)."""
    build = pretrain_train.build_gpt_model

    def build_with_fault(*args: Any, **kwargs: Any) -> Any:
        model = build(*args, **kwargs)
        calls: list[int] = []

        def fault(_module: Any, _args: Any, output: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return output * float("nan") if len(calls) == step else output

        model.embedding.register_forward_hook(fault)
        return model

    monkeypatch.setattr(pretrain_train, "build_gpt_model", build_with_fault)


def test_nan_at_step_k_stops_and_the_last_good_checkpoint_resumes_on_the_clean_curve(shards, monkeypatch):
    clean = run_training(config(shards, "clean"))["losses"]
    faulty, root = config(shards, "faulty"), shards / "ckpt-faulty"
    nan_at_step(monkeypatch, FAULT)
    with pytest.raises(TrainingHealthError) as err:
        run_training(faulty)
    assert str(err.value) == (
        "training health: stopped at step 3: non-finite loss (nan); non-finite grad_norm (nan); "
        f"the last good checkpoint is step 2 in {root}"
    )
    assert latest_iteration(root) == 2 and not iteration_dir(root, 3).exists()
    monkeypatch.undo()  # the fault fixed, the same config resumes from step 2
    resumed = run_training(faulty)
    assert resumed["start_step"] == 2
    for step in range(FAULT, STEPS + 1):
        assert resumed["losses"][step] == pytest.approx(clean[step], rel=1e-6), step


def test_skip_mode_drops_the_nan_step_and_trains_on(shards, monkeypatch):
    nan_at_step(monkeypatch, FAULT)
    summary = run_training(config(shards, "skip", on_breach="skip"))
    losses = summary["losses"]
    assert math.isnan(losses[FAULT]) and all(math.isfinite(losses[s]) for s in losses if s != FAULT)
    assert losses[STEPS] < losses[1]  # the weights were never touched by the NaN step: training goes on
    client = MlflowClient(f"sqlite:///{shards / 'mlflow.db'}")
    skipped = client.get_metric_history(summary["run_id"], "health/skipped_updates")
    assert [(m.step, m.value) for m in skipped] == [(s, float(s == FAULT)) for s in range(1, STEPS + 1)]
    assert client.get_metric_history(summary["run_id"], "health/skipped_steps")[-1].value == 1.0
