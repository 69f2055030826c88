"""The DAPO trainer on CPU with a tiny warm-started Qwen2 and a real Lucene index (see tests/rl_task.py):
the reward rises, a killed run resumes exactly, losses touch only sampled tokens, FSDP2 over gloo runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch
from ramp.finetune.dapo import train
from rl_task import SEARCH, build_corpus, warm_start_policy
from typer.testing import CliRunner

import ramp.rl.actor as actor_module
from ramp.agent.backends.hf import HFBackend
from ramp.agent.config import RolloutConfig
from ramp.agent.rollout import RolloutLoop
from ramp.cli import app, run
from ramp.config import load_config
from ramp.data.samples import Sample
from ramp.retrieval.config import build_retriever
from ramp.retrieval.env import SearchEnv
from ramp.rl.actor import collate
from ramp.rl.config import RLConfig
from ramp.rl.distributed import Dist
from ramp.rl.episodes import load_tasks, score_rollouts
from ramp.rl.rollout import build_rollout_backend
from ramp.rl.trainer import RLTrainer
from ramp.train.health import TrainingHealthError

SFT_STEPS = 150  # the warm start: searches (reward 1.2) or guesses (0.2) about half the time each
RL_STEPS, RL_LR = 10, 3e-4


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    from ramp.retrieval.indexing import build_index
    from ramp.retrieval.lucene import LuceneRetriever

    root = tmp_path_factory.mktemp("rl-task")
    corpus, samples_dir = build_corpus(root)
    build_index([corpus], root / "index", threads=1, shards=1, progress=False)
    retriever = LuceneRetriever(root / "index", threads=1)
    samples = [Sample.from_row(r) for r in pq.read_table(samples_dir).to_pylist()]
    torch.set_num_threads(1)
    warm_start_policy(
        root / "sft", [s for s in samples if s.num_masks == 1], SearchEnv(retriever, SEARCH), SFT_STEPS
    )
    retriever.close()
    return root


def overrides(root: Path, out: Path, **extra: object) -> list[str]:
    base = {
        "policy.model": root / "sft",
        "retriever.index": root / "index",
        "data.samples": root / "samples",
        "data.prompts": root / "prompts.yaml",
        "search.top_k": SEARCH.top_k,
        "search.max_chars_per_doc": SEARCH.max_chars_per_doc,
        "rollout.max_turns": 3,
        "rollout.max_new_tokens_per_turn": 24,
        "rollout.max_total_new_tokens": 48,
        "algorithm.overlong.buffer": 16,
        "curriculum.stages": "[1]",
        "trainer.output_dir": out,
        "trainer.mlflow_uri": f"sqlite:///{out.parent / 'mlflow.db'}",
        "trainer.warmup_steps": 0,
        "trainer.weight_decay": 0,
        "trainer.progress": "false",
        "trainer.threads": 1,
        "trainer.save_every": 1,
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


def cli_sets(sets: list[str]) -> list[str]:
    return [arg for item in sets for arg in ("--set", item)]


def history(out: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def mean_reward(policy: Path, config: RLConfig, n: int = 16) -> float:
    """Mean total reward of ``policy`` over every 1-mask task, n rollouts each, fixed seeds."""
    config = config.model_copy(update={"policy": config.policy.model_copy(update={"model": str(policy)})})
    env = SearchEnv(build_retriever(config.retriever), config.search, owns_retriever=True)
    tasks = [t for t in load_tasks(config) if t.num_masks == 1]
    loop = RolloutLoop(
        build_rollout_backend(config, Dist()), env, config.rollout.model_copy(update={"n": n, "seed": 99})
    )
    episodes = score_rollouts(loop.run(tasks), "eval", config)
    env.close()
    return sum(e.total for e in episodes) / len(episodes)


def test_reward_rises_with_ramp_rl_train(task_dir, tmp_path):
    out = tmp_path / "run"
    sets = overrides(
        task_dir,
        out,
        **{
            "rollout.n": 8,
            "trainer.gen_batch_size": 8,
            "trainer.train_batch_size": 4,
            "trainer.total_steps": RL_STEPS,
            "trainer.lr": RL_LR,
            "trainer.mini_batches": 1,
            "trainer.micro_batch_size": 64,
        },
    )
    result = CliRunner().invoke(app, ["rl", "train", "--config", "configs/rl.yaml", *cli_sets(sets)])
    assert result.exit_code == 0, result.output
    rewards = [h["reward/total"] for h in history(out)]
    assert sum(rewards[-3:]) > sum(rewards[:3]), rewards  # the training curve rises ...
    config = load_config(RLConfig, "configs/rl.yaml", sets)
    before, after = mean_reward(task_dir / "sft", config), mean_reward(out / "policy", config)
    assert after > before + 0.1, (before, after)  # ... and so does the policy's reward on the same seeds
    # what MLflow shows: rewards, per-k, lengths, searches, clipping, entropy, timings, the curve
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("ramp-rl").experiment_id])[0]
    for key in [
        *("reward/total", "reward/answer", "reward/format", "reward/k1", "count/k1"),
        *("response/answer_words_k1", "response/sampled_tokens", "response/searches"),
        *("actor/clipfrac", "actor/entropy", "train/gen_batches", "curriculum/stage"),
        *("time/rollout_s", "time/reward_s", "time/retrieval_s", "time/update_s"),
    ]:
        assert key in run.data.metrics, key
    assert "actor/kl" not in run.data.metrics  # no KL term by default
    assert len(client.get_metric_history(run.info.run_id, "reward/total")) == RL_STEPS
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["reward_curve.png"]


class Killed(Exception):
    pass


def test_killed_run_resumes_where_it_stopped(task_dir, tmp_path):
    small = {
        "rollout.n": 4,
        "trainer.gen_batch_size": 2,
        "trainer.train_batch_size": 1,
        "trainer.total_steps": 3,
    }
    small |= {"trainer.lr": 1e-3, "trainer.micro_batch_size": 4, "algorithm.max_num_gen_batches": 0}
    straight = load_config(RLConfig, "configs/rl.yaml", overrides(task_dir, tmp_path / "a", **small))
    train(straight)

    killed = load_config(RLConfig, "configs/rl.yaml", overrides(task_dir, tmp_path / "b", **small))

    def kill_after_two(step: int, _: dict[str, float]) -> None:
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        train(killed, on_step_end=kill_after_two)
    assert len(history(tmp_path / "b")) == 2 and not (tmp_path / "b" / "policy").exists()
    done: list[int] = []
    train(killed, on_step_end=lambda step, _: done.append(step))
    assert done == [3]  # it continued at step 3

    def comparable(h: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in h.items() if not k.startswith("time/")}

    assert [comparable(h) for h in history(tmp_path / "b")] == [
        comparable(h) for h in history(tmp_path / "a")
    ]
    a = torch.load(tmp_path / "a" / "checkpoint" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint" / "state.pt", weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["curriculum"] == b["curriculum"] and a["step"] == b["step"] == 3
    assert b["mlflow_run_id"] is not None
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(b["mlflow_run_id"], "reward/total")]
    assert steps == [1, 2, 3]  # the resumed run logs into the same MLflow run


def test_losses_touch_only_sampled_tokens(task_dir):
    from ramp.retrieval.lucene import LuceneRetriever

    config = load_config(RLConfig, "configs/rl.yaml", overrides(task_dir, task_dir / "unused"))
    backend = HFBackend.from_config(config.backend.hf.model_copy(update={"model": str(task_dir / "sft")}))
    tasks = load_tasks(config)[:3]
    retriever = LuceneRetriever(task_dir / "index", threads=1)
    loop = RolloutLoop(
        backend,
        SearchEnv(retriever, SEARCH),
        RolloutConfig(n=4, temperature=1.0, max_total_new_tokens=48, max_new_tokens_per_turn=24, max_turns=3),
    )
    rollouts = loop.run(tasks)
    retriever.close()
    episodes = score_rollouts(rollouts, "0.0", config)
    batch = collate(episodes, pad_id=0, device=torch.device("cpu"))
    assert sum(r.num_env_tokens for r in rollouts) > 0  # results were inserted
    assert any(r.finish_reason == "answer" for r in rollouts)  # ... and end tokens appended
    for row, rollout in enumerate(rollouts):
        predicted = batch.response_mask[row].nonzero().squeeze(1) + 1  # token positions carrying loss
        sampled = [i for i, s in enumerate(rollout.sampled_mask) if s]
        assert predicted.tolist() == sampled
        env = {i for i, e in enumerate(rollout.env_mask) if e} | {
            i for i, a in enumerate(rollout.appended_mask) if a
        }
        assert env.isdisjoint(sampled) and all(rollout.logprobs[i] is not None for i in sampled)
        assert episodes[row].num_sampled == rollout.num_sampled_tokens


def test_fsdp2_two_ranks_match_one_process(task_dir, tmp_path):
    """The same step on one process and on two FSDP2 ranks (gloo): every rollout is seeded by its task and
    index, so both see the same episodes, and the token-mean over both ranks' tokens gives the same update."""
    one_step = {"rollout.n": 4, "trainer.gen_batch_size": 2, "trainer.train_batch_size": 2}
    one_step |= {"trainer.total_steps": 1, "algorithm.filter_groups": "false", "trainer.lr": 1e-3}
    # one mini-batch (the same episodes on both sides); uneven micro-batches of 3 on one process
    one_step |= {"trainer.micro_batch_size": 3, "trainer.mini_batches": 1}
    single = overrides(task_dir, tmp_path / "single", **one_step)
    train(load_config(RLConfig, "configs/rl.yaml", single))
    sets = overrides(task_dir, tmp_path / "fsdp", **one_step)
    result = CliRunner().invoke(
        app,
        [
            "rl",
            "train",
            "--nproc",
            "2",
            "--config",
            "configs/rl.yaml",
            *cli_sets(sets),
        ],
    )
    assert result.exit_code == 0, result.output
    (step,) = history(tmp_path / "fsdp")
    (reference,) = history(tmp_path / "single")
    assert step["train/episodes"] == 8 and step["reward/total"] == pytest.approx(reference["reward/total"])
    assert reference["actor/grad_norm"] > 0  # some group had reward spread: a real update
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(task_dir / "sft").state_dict()
    sharded = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "policy").state_dict()
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "single" / "policy").state_dict()
    assert any(not torch.equal(plain[k], start[k]) for k in start)
    for key in start:
        torch.testing.assert_close(sharded[key], plain[key], rtol=0, atol=2e-5)


SMALL = {
    "rollout.n": 4,
    "trainer.gen_batch_size": 2,
    "trainer.train_batch_size": 1,
    "trainer.lr": 1e-3,
    "trainer.mini_batches": 1,  # one update per step: the k-th forward with gradients is step k's
    "trainer.micro_batch_size": 64,
    "algorithm.max_num_gen_batches": 0,
}


def nan_in_update(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """The policy's forward with gradients at ``step`` (its only update) turns NaN, as a bad batch or an
    overflow would; rollouts (the engine's copy) and old log-probs (no gradients) are untouched."""
    load = actor_module.load_policy

    def load_with_fault(config: RLConfig, device: torch.device) -> tuple[Any, Any]:
        model, tokenizer = load(config, device)
        calls: list[int] = []

        def fault(_module: Any, _args: Any, output: torch.Tensor) -> torch.Tensor:
            if not torch.is_grad_enabled():
                return output
            calls.append(1)
            return output * float("nan") if len(calls) == step else output

        model.model.embed_tokens.register_forward_hook(fault)
        return model, tokenizer

    monkeypatch.setattr(actor_module, "load_policy", load_with_fault)


def test_nan_at_step_k_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    task_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    sets = overrides(task_dir, out, **SMALL, **{"trainer.total_steps": 4})
    nan_in_update(monkeypatch, step=3)
    assert run(["rl", "train", "--config", "configs/rl.yaml", *cli_sets(sets)]) == 2
    checkpoint = out / "checkpoint" / "state.pt"
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: training health: stopped at step 3: non-finite loss (nan); non-finite grad_norm (nan); "
        f"the last good checkpoint is step 2 in {checkpoint}"
    )
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 2 and len(history(out)) == 2 and not (out / "policy").exists()
    assert all(bool(torch.isfinite(w).all()) for w in state["model"].values())
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    breach = client.get_metric_history(state["mlflow_run_id"], "health/nonfinite")
    assert [(m.step, m.value) for m in breach] == [(1, 0.0), (2, 0.0), (3, 2.0)]
    monkeypatch.undo()  # the fault fixed: the same command resumes from step 2 and finishes
    train(load_config(RLConfig, "configs/rl.yaml", sets))
    assert [h["step"] for h in history(out)] == [1, 2, 3, 4] and (out / "policy").exists()


def test_skip_mode_drops_the_nan_update_and_trains_on(task_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    sets = overrides(task_dir, out, **SMALL, **{"trainer.total_steps": 3, "trainer.health.on_breach": "skip"})
    nan_in_update(monkeypatch, step=2)
    weights: list[dict[str, torch.Tensor]] = []

    def keep_weights(_step: int, _metrics: dict[str, float]) -> None:
        weights.append(torch.load(out / "checkpoint" / "state.pt", weights_only=False)["model"])

    train(load_config(RLConfig, "configs/rl.yaml", sets), on_step_end=keep_weights)
    steps = history(out)
    assert [h["health/skipped_updates"] for h in steps] == [0.0, 1.0, 0.0]
    assert [h["health/nonfinite"] for h in steps] == [0.0, 2.0, 0.0] and steps[-1][
        "health/skipped_steps"
    ] == 1
    after_1, after_2, after_3 = weights
    assert all(torch.equal(after_2[k], after_1[k]) for k in after_1)  # the NaN update was not applied
    assert any(not torch.equal(after_3[k], after_2[k]) for k in after_2)  # ... and training went on
    assert all(bool(torch.isfinite(w).all()) for w in after_3.values())


def test_a_collapsing_policy_is_stopped(task_dir, tmp_path):
    """After each step the policy's logits are sharpened 30-fold (its final norm scaled): its entropy on
    the sampled tokens falls to about 0, and the run stops once it stayed below min_entropy for 2 steps."""
    out = tmp_path / "run"
    extra = {"trainer.total_steps": 5, "trainer.health.patience": 2, "algorithm.filter_groups": "false"}
    trainer = RLTrainer(load_config(RLConfig, "configs/rl.yaml", overrides(task_dir, out, **SMALL, **extra)))
    entropies: list[float] = []

    def sharpen(_step: int, metrics: dict[str, float]) -> None:
        entropies.append(metrics["health/entropy"])
        with torch.no_grad():
            trainer.actor.policy.model.norm.weight.mul_(30.0)

    with pytest.raises(
        TrainingHealthError, match=r"at step 3: entropy collapse: entropy \S+ below min_entropy"
    ):
        trainer.fit(on_step_end=sharpen)
    assert entropies[0] > 0.05 and entropies[1] < 1e-3, entropies
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=False)["step"] == 2


def test_kl_and_entropy_terms_against_a_reference_model(task_dir, tmp_path):
    """With ``kl_coef`` > 0 a frozen reference joins; after the first of two updates the policy has moved
    away from it, so the mean KL over the step's updates is positive."""
    out = tmp_path / "run"
    terms = {"trainer.total_steps": 1, "trainer.mini_batches": 2, "trainer.train_batch_size": 2}
    terms |= {"algorithm.kl_coef": 0.1, "algorithm.entropy_coef": 0.01}
    train(load_config(RLConfig, "configs/rl.yaml", overrides(task_dir, out, **{**SMALL, **terms})))
    (step,) = history(out)
    assert step["actor/kl"] > 0 and step["actor/entropy"] > 0 and step["actor/grad_norm"] > 0


PPO = {
    "algorithm.adv_estimator": "gae",
    "critic.enable": "true",
    "critic.lr": 1e-3,
    "critic.head_start_steps": 1,  # step 1 trains only the critic
    "algorithm.kl_in_reward": 0.01,
    "algorithm.kl_penalty": "kl",
    "algorithm.filter_groups": "false",
    "rollout.n": 1,
    "trainer.gen_batch_size": 4,
    "trainer.train_batch_size": 4,
    "trainer.total_steps": 3,
    "trainer.lr": 1e-3,
    "trainer.mini_batches": 1,
    "trainer.micro_batch_size": 64,
}


def test_ppo_with_a_critic_logs_its_metrics_and_resumes_exactly(task_dir, tmp_path):
    """Search-R1's PPO: one rollout per prompt, GAE over the critic's values, KL in the reward. A killed run
    resumes the actor and the critic from the checkpoint and ends where a straight run ends."""
    straight = load_config(RLConfig, "configs/rl.yaml", overrides(task_dir, tmp_path / "a", **PPO))
    train(straight)
    steps = history(tmp_path / "a")
    for key in ("critic/vf_loss", "critic/vf_clipfrac", "critic/values_mean", "critic/lr", "actor/reward_kl"):
        assert all(key in h for h in steps), key
    assert "actor/pg_loss" not in steps[0] and "actor/pg_loss" in steps[1]  # the critic's head start
    assert steps[0]["critic/values_mean"] == 0.0 != steps[1]["critic/values_mean"]  # the head starts at 0
    assert steps[0]["actor/reward_kl"] == 0.0 < steps[2]["actor/reward_kl"]  # the policy moved from step 2

    killed = load_config(RLConfig, "configs/rl.yaml", overrides(task_dir, tmp_path / "b", **PPO))

    def kill_after_two(step: int, _: dict[str, float]) -> None:
        if step == 2:
            raise Killed

    with pytest.raises(Killed):
        train(killed, on_step_end=kill_after_two)
    train(killed)

    def comparable(h: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in h.items() if not k.startswith("time/")}

    assert [comparable(h) for h in history(tmp_path / "b")] == [comparable(h) for h in steps]
    a = torch.load(tmp_path / "a" / "checkpoint" / "state.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint" / "state.pt", weights_only=False)
    for part in ("model", "critic"):
        weights_a = a[part] if part == "model" else a[part]["model"]
        weights_b = b[part] if part == "model" else b[part]["model"]
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a), part
    assert float(a["critic"]["model"]["value_head.weight"].abs().sum()) > 0  # the critic learned
