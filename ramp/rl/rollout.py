"""Rollout generation for one RL step: the curriculum serves prompts, the rollout engine (``hf`` or
``vllm``, on its own copy of the policy's weights) runs multi-turn search episodes through the retriever,
rewards score them, and dynamic sampling keeps groups whose score has spread, generating more batches
until the train batch is full. Every draw is seeded from (trainer seed, step, generation batch, task id,
sample index), so one process and N ranks see the same episodes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from ramp.agent.backends import build_backend
from ramp.agent.rollout import RolloutLoop
from ramp.retrieval.config import build_retriever
from ramp.retrieval.env import SearchEnv
from ramp.rl.config import RLConfig
from ramp.rl.core_algos import fill_train_batch
from ramp.rl.curriculum import MaskCurriculum
from ramp.rl.distributed import Dist
from ramp.rl.episodes import Episode, answer_words, score_rollouts
from ramp.rl.metrics import StepMetrics
from ramp.seeding import stable_seed


def build_rollout_backend(config: RLConfig, dist_info: Dist) -> Any:
    """The rollout engine, on its own copy of the policy's weights (updated every step)."""
    backend = config.backend
    if backend.kind == "hf" and not backend.hf.model:
        backend = backend.model_copy(
            update={"hf": backend.hf.model_copy(update={"model": config.policy.model})}
        )
    if backend.kind == "hf" and backend.hf.device == "auto":
        device = str(dist_info.device)
        backend = backend.model_copy(update={"hf": backend.hf.model_copy(update={"device": device})})
    if backend.kind == "vllm" and not backend.vllm.model:
        backend = backend.model_copy(
            update={"vllm": backend.vllm.model_copy(update={"model": config.policy.model})}
        )
    return build_backend(backend)


def trim_to_quota(episodes: list[Episode], target: int, dist_info: Dist) -> list[Episode]:
    """Keep whole groups, ``target`` groups over all ranks (lower ranks first), in generation order."""
    order: list[str] = []
    for e in episodes:
        if e.group_id not in order:
            order.append(e.group_id)
    counts = dist_info.gather(len(order))
    quota = max(0, min(len(order), target - sum(counts[: dist_info.rank])))
    keep = set(order[:quota])
    return [e for e in episodes if e.group_id in keep]


class RolloutWorker:
    def __init__(self, config: RLConfig, dist_info: Dist, tokenizer: Any, curriculum: MaskCurriculum) -> None:
        self.config, self.dist, self.tokenizer, self.curriculum = config, dist_info, tokenizer, curriculum
        self.backend = build_rollout_backend(config, dist_info)
        self.env = SearchEnv(build_retriever(config.retriever), config.search, owns_retriever=True)

    def generate(self, step: int, metrics: StepMetrics) -> list[Episode]:
        """Rollouts, rewards and dynamic sampling for step ``step`` (0-based): this rank's share of the kept
        episodes (whole groups). Metrics of every generated episode and the timings go to ``metrics``."""
        algo, tcfg = self.config.algorithm, self.config.trainer
        follow_schedule = getattr(self.env.retriever, "set_step", None)  # e.g. a simulated engine's noise
        if follow_schedule is not None:
            metrics.add("search/noise_probability", follow_schedule(step, tcfg.total_steps))
        generated: list[Episode] = []

        def generate_batch(batch_number: int) -> list[Episode]:
            episodes = self._generate_batch(step, batch_number, metrics)
            generated.extend(episodes)
            return episodes

        if algo.filter_groups:
            kept, gen_batches = fill_train_batch(
                generate_batch,
                group_of=lambda e: e.group_id,
                metric_of=lambda e: e.filter_value(algo.filter_metric),
                target_groups=tcfg.train_batch_size,
                max_num_gen_batches=algo.max_num_gen_batches,
                global_count=lambda n: int(self.dist.sum(n)),
            )
        else:
            kept, gen_batches = generate_batch(0), 1
        kept = trim_to_quota(kept, tcfg.train_batch_size, self.dist)
        add_episode_metrics(metrics, generated, kept, self.config)
        metrics.add("train/gen_batches", gen_batches)
        return kept

    def _generate_batch(self, step: int, batch_number: int, metrics: StepMetrics) -> list[Episode]:
        drawn = self.curriculum.sample(self.config.trainer.gen_batch_size)  # the same draw on every rank
        mine = drawn[self.dist.rank :: self.dist.world]
        seed = stable_seed(self.config.trainer.seed, "rollout", step, batch_number) % 2**31
        loop = RolloutLoop(
            self.backend, self.env, self.config.rollout.model_copy(update={"seed": seed}), self.tokenizer
        )
        t0 = time.perf_counter()
        rollouts = loop.run(mine, progress=self.config.trainer.progress and self.dist.main) if mine else []
        metrics.add("time/rollout_s", time.perf_counter() - t0 - loop.stats.retrieve_s)
        metrics.add("time/retrieval_s", loop.stats.retrieve_s)
        t0 = time.perf_counter()
        episodes = score_rollouts(rollouts, f"{step}.{batch_number}", self.config)
        metrics.add("time/reward_s", time.perf_counter() - t0)
        return episodes

    def sync_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Push the policy's full weights into the rollout engine (``update_weights`` where it has one)."""
        update = getattr(self.backend, "update_weights", None)
        if update is not None:
            update(state_dict)
            return
        model = getattr(self.backend, "model", None)
        if model is None:
            raise TypeError(f"{type(self.backend).__name__} can neither update_weights nor load a state dict")
        model.load_state_dict(state_dict)
        self.backend.clear_cache()

    def close(self) -> None:
        self.env.close()


def add_episode_metrics(
    metrics: StepMetrics, generated: Sequence[Episode], kept: Sequence[Episode], config: RLConfig
) -> None:
    """Rewards (total, answer, format, per k), lengths, searches, answer words and the truncated share over
    every generated episode of the step; names are added on every rank, with weight 0 where it has none."""
    n = float(len(generated))
    for name, value in (
        ("reward/total", lambda e: e.total),
        ("reward/answer", lambda e: e.answer),
        ("reward/format", lambda e: e.format),
        ("reward/score", lambda e: e.score),
        ("response/sampled_tokens", lambda e: float(e.num_sampled)),
        ("response/searches", lambda e: float(len(e.rollout.queries))),
        ("response/answer_words", answer_words),
        ("health/truncated_share", lambda e: float(e.truncated)),
    ):
        metrics.add(name, sum(value(e) for e in generated), n)
    metrics.add("train/episodes", n)
    metrics.add("train/kept_episodes", float(len(kept)))
    for k in config.curriculum.stages if config.data.task == "ramp" else []:
        of_k = [e for e in generated if e.k == k]
        metrics.add(f"count/k{k}", float(len(of_k)))
        metrics.add(f"reward/k{k}", sum(e.answer for e in of_k), float(len(of_k)))
        metrics.add(f"response/answer_words_k{k}", sum(answer_words(e) for e in of_k), float(len(of_k)))
