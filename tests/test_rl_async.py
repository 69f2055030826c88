"""Asynchronous RL (``trainer.mode: async``) and the ASearcher recipe on CPU: a tiny warm-started Qwen2 and
a real Lucene index (tests/rl_task.py). The decoupled loss's formula, the staleness rule under a fixed
schedule (the queue full, then two versions pushed: exactly the queued batches are dropped), the episode
count invariant, and the recipe end to end (async, decoupled loss, context management, group-mean
advantages)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from rl_task import PEOPLE, SEARCH, build_corpus, warm_start_policy
from test_rl_trainer import history, overrides

from ramp.config import load_config
from ramp.data.samples import Sample
from ramp.recipes import load_recipe
from ramp.retrieval.env import SearchEnv
from ramp.rl.async_rollout import AsyncRollout
from ramp.rl.config import RLConfig
from ramp.rl.core_algos import decoupled_policy_loss, group_mean_advantages, policy_loss
from ramp.rl.distributed import full_state_dict
from ramp.rl.metrics import StepMetrics
from ramp.rl.trainer import RLTrainer


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    from ramp.retrieval.indexing import build_index
    from ramp.retrieval.lucene import LuceneRetriever

    root = tmp_path_factory.mktemp("rl-async")
    corpus, samples_dir = build_corpus(root)
    build_index([corpus], root / "index", threads=1, shards=1, progress=False)
    retriever = LuceneRetriever(root / "index", threads=1)
    samples = [Sample.from_row(r) for r in pq.read_table(samples_dir).to_pylist()]
    torch.set_num_threads(1)
    warm_start_policy(
        root / "sft", [s for s in samples if s.num_masks == 1], SearchEnv(retriever, SEARCH), 150
    )
    retriever.close()
    rows = [
        {"id": f"q{i}", "question": f"Where was {n} born?", "golden_answers": [c]}
        for i, (n, c) in enumerate(PEOPLE)
    ]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_decoupled_loss_weights_by_prox_over_behaviour_and_caps():
    torch.manual_seed(0)
    new, old = torch.randn(2, 5) * 0.1 - 1, torch.randn(2, 5) * 0.1 - 1
    adv, mask = torch.tensor([1.0, -0.5]), torch.ones(2, 5)
    same, _ = decoupled_policy_loss(new, old, adv, mask, behaviour_log_prob=old.clone())
    assert torch.allclose(same, policy_loss(new, old, adv, mask)[0])  # on-policy: the DAPO loss
    behaviour = old - 0.5  # the behaviour policy gave these tokens less: weight e^0.5 on every token
    weighted, metrics = decoupled_policy_loss(new, old, adv, mask, behaviour_log_prob=behaviour)
    assert torch.allclose(weighted, same * torch.exp(torch.tensor(0.5)))
    assert metrics["behaviour_capped"] == 0.0
    behaviour[0] = old[0] - 2.0  # weight e^2 > 5: the first sequence gets no loss
    capped, metrics = decoupled_policy_loss(new, old, adv, mask, behaviour_log_prob=behaviour)
    only_second = policy_loss(new, old, adv, mask * torch.tensor([[0.0], [1.0]]), global_tokens=10)[0]
    assert torch.allclose(capped, only_second * torch.exp(torch.tensor(0.5)))
    assert metrics["behaviour_capped"] == 0.5


def test_group_mean_advantages_do_not_divide_by_the_std():
    adv = group_mean_advantages(torch.tensor([1.0, 0.0, 0.5, 0.2, 0.2]), ["a", "a", "b", "c", "c"])
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, 0.0, 0.0, 0.0]))


def _async_config(task_dir: Path, out: Path, **extra: object) -> RLConfig:
    sets = overrides(
        task_dir,
        out,
        **{
            "trainer.mode": "async",
            "rollout.n": 4,
            "trainer.gen_batch_size": 2,
            "trainer.train_batch_size": 2,
            "algorithm.filter_groups": "false",
            "algorithm.policy_loss": "decoupled",
            "trainer.micro_batch_size": 16,
            "trainer.mini_batches": 1,
            **extra,
        },
    )
    return load_config(RLConfig, "configs/rl.yaml", sets)


def test_stale_batches_are_dropped_and_every_episode_is_counted(task_dir, tmp_path):
    config = _async_config(
        task_dir, tmp_path / "run", **{"trainer.max_staleness": 1, "trainer.queue_size": 2}
    )
    trainer = RLTrainer(config)
    rollout = trainer.rollout
    assert isinstance(rollout, AsyncRollout)
    per_batch = config.trainer.gen_batch_size * config.rollout.n
    try:
        first = rollout.generate(0, StepMetrics())  # starts the producer; version 0 throughout
        assert len(first) == per_batch and {e.version for e in first} == {0}
        deadline = time.monotonic() + 120
        while not rollout.queue.full():  # the schedule: two more batches queued, a third being sampled
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(2):  # two versions pushed: the three version-0 batches are now 2 behind
            rollout.sync_weights(full_state_dict(trainer.actor.policy))
        metrics = StepMetrics()
        fresh = rollout.generate(1, metrics)
        assert {e.version for e in fresh} == {2} and len(fresh) == per_batch
        assert rollout.counts["dropped"] == 3 * per_batch
        reduced = metrics.reduce(trainer.dist)
        assert reduced["async/dropped_stale"] == 3 * per_batch and reduced["async/staleness"] == 0.0
        assert reduced["async/policy_version"] == 2 and reduced["train/gen_batches"] == 4
    finally:
        rollout.close()
    waiting = sum(len(item[0]) for item in list(rollout.queue.queue)) + len(rollout.carry)
    counts = rollout.counts
    assert counts["produced"] == counts["trained"] + counts["dropped"] + waiting  # none lost, none twice


def test_asearcher_recipe_trains_asynchronously_end_to_end(task_dir, tmp_path):
    out = tmp_path / "asearcher"
    stage = load_recipe("asearcher").stages[0]
    runner = {
        **{k: v for k, v in (s.split("=", 1) for s in overrides(task_dir, out))},
        "data.qa": task_dir / "qa.jsonl",
        "rollout.n": 4,
        "rollout.max_turns": 32,
        "rollout.max_new_tokens_per_turn": 24,
        "rollout.max_total_new_tokens": 96,
        "rollout.context.keep_results": 1,  # short enough that the tiny policy's rollouts drop results
        "search.top_k": 2,
        "algorithm.max_num_gen_batches": 20,
        "trainer.total_steps": 3,
        "trainer.train_batch_size": 2,
        "trainer.gen_batch_size": 2,
    }
    runner.pop("curriculum.stages")
    runner.pop("data.samples")
    config = stage.config([f"{k}={v}" for k, v in runner.items()])
    assert isinstance(config, RLConfig) and config.trainer.mode == "async"
    trainer = RLTrainer(config)
    trainer.fit()
    steps = history(out)
    assert [h["step"] for h in steps] == [1.0, 2.0, 3.0]
    for h in steps:
        assert h["async/staleness"] <= config.trainer.max_staleness
        assert h["train/kept_episodes"] >= 0 and "actor/behaviour_capped" in h and "response/turns" in h
    assert any(h["response/dropped_results"] > 0 for h in steps)
    counts = trainer.rollout.counts
    assert counts["trained"] == 3 * config.trainer.train_batch_size * config.rollout.n
    assert (out / "policy" / "config.json").exists()
