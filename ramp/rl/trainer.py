"""The RL trainer loop, in verl's shape (``RayPPOTrainer.fit``): roles built once, then per step

rollouts (rewards, dynamic sampling) → log-probs before the update (old, reference) → advantages →
health check → PPO-style updates → new weights into the rollout engine → metrics, curriculum, checkpoint.

Roles: :class:`~ramp.rl.actor.Actor` (policy, optimizer, reference),
:class:`~ramp.rl.rollout.RolloutWorker` (engine, retriever, rewards, dynamic sampling) and, for estimators
that read values (``gae``: PPO as Search-R1 runs it), :class:`~ramp.rl.critic.Critic` (the value model).
The advantage estimator is chosen by name (``algorithm.adv_estimator``, :mod:`ramp.rl.core_algos`): an
outcome estimator (``grpo``) gives each episode one advantage from the scores of its group; a critic
estimator gets token-level rewards (the episode's score on its last sampled token, minus
``algorithm.kl_in_reward`` × KL to the reference per sampled token) and the critic's values, and gives
per-token advantages and the critic's returns. The critic's values are computed beside the actor's
log-probs (step 2) and it is updated beside the actor (step 5); during ``critic.head_start_steps`` only
the critic is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ramp.rl.actor import Actor, stack_rows
from ramp.rl.checkpoint import (
    CHECKPOINT,
    HISTORY,
    POLICY_DIR,
    append_history,
    load_checkpoint,
    save_checkpoint,
    save_policy,
    write_history,
)
from ramp.rl.config import RLConfig
from ramp.rl.core_algos import (
    SumOverRanks,
    get_adv_estimator,
    get_kl_penalty,
    needs_critic,
    outcome_token_rewards,
)
from ramp.rl.critic import Critic
from ramp.rl.distributed import full_state_dict, init_distributed
from ramp.rl.episodes import Episode, build_curriculum, load_tasks
from ramp.rl.metrics import StepMetrics
from ramp.rl.plots import plot_rewards
from ramp.rl.rollout import RolloutWorker
from ramp.tracking import mlflow_run
from ramp.train.health import HealthMonitor, last_good_checkpoint

StepCallback = Callable[[int, dict[str, float]], None]


class RLTrainer:
    def __init__(self, config: RLConfig) -> None:
        tcfg = config.trainer
        if tcfg.threads is not None:
            torch.set_num_threads(tcfg.threads)
        self.config, self.tcfg = config, tcfg
        self.dist = init_distributed()
        self.out = Path(tcfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.actor = Actor(config, self.dist)
        self.critic = Critic(config, self.dist, self.actor.pad_id) if config.critic.enable else None
        self.curriculum = build_curriculum(load_tasks(config), config)
        self.rollout = RolloutWorker(config, self.dist, self.actor.tokenizer, self.curriculum)
        self.compute_advantages = get_adv_estimator(config.algorithm.adv_estimator)
        self.health = HealthMonitor(tcfg.health, self._last_good)
        self.start_step = self.saved_step = 0
        self.run_id: str | None = None
        self.history: list[dict[str, float]] = []
        if tcfg.resume and (self.out / CHECKPOINT).exists():
            self._resume()

    def fit(self, on_step_end: StepCallback | None = None) -> Path:
        """Train to ``trainer.total_steps``; ``on_step_end(step, metrics)`` runs after each checkpoint."""
        tracking: Any = nullcontext(None)
        if self.dist.main:
            params = self.config.model_dump(mode="json")
            tracking = mlflow_run(
                self.tcfg.experiment, self.tcfg.run_name, params, uri=self.tcfg.mlflow_uri, run_id=self.run_id
            )
        try:
            with tracking as mlflow:
                if mlflow is not None:
                    self.run_id = mlflow.active_run().info.run_id
                    self.health.log = lambda metrics, step: mlflow.log_metrics(metrics, step=step)
                for step in range(self.start_step, self.tcfg.total_steps):
                    began, metrics = time.perf_counter(), StepMetrics()
                    # 1. Rollouts, rewards and dynamic sampling: this rank's share of whole groups.
                    episodes = self.rollout.generate(step, metrics)
                    update_began = time.perf_counter()
                    # 2. Log-probs of the policy that sampled (and of the reference), the critic's values,
                    # before any update.
                    self.actor.compute_log_probs(episodes, metrics)
                    if self.critic is not None:
                        self.critic.compute_values(episodes, metrics)
                    # 3. Advantages (groups are whole on each rank).
                    self._advantages(episodes, metrics)
                    # 4. Health of the policy before its update: entropy and response length.
                    reduced = metrics.reduce(self.dist)
                    healthy = self.health.check(
                        step + 1,
                        entropy=reduced.get("health/entropy"),
                        truncated_share=reduced["health/truncated_share"],
                    )
                    # 5. PPO-style updates (a non-finite one is not applied); the new weights into the engine.
                    if healthy and self.critic is not None:
                        self.critic.update(episodes, step, metrics, self.health)
                    if healthy and step >= self.config.critic.head_start_steps:
                        self.actor.update(episodes, step, metrics, self.health)
                        self.rollout.sync_weights(full_state_dict(self.actor.policy))
                    metrics.add("time/update_s", time.perf_counter() - update_began)
                    # 6. Metrics, curriculum, checkpoint.
                    logged = self._end_step(step, metrics, began, mlflow)
                    if on_step_end is not None:
                        on_step_end(step + 1, logged)
                self._save_policy(mlflow)
        finally:
            self.rollout.close()
        self.dist.barrier()
        return self.out

    def _advantages(self, episodes: Sequence[Episode], metrics: StepMetrics) -> None:
        if needs_critic(self.config.algorithm.adv_estimator):
            kl, tokens = assign_token_advantages(episodes, self.config, self.dist.sum_all)
            if self.config.algorithm.kl_in_reward > 0:
                metrics.add("actor/reward_kl", kl, tokens)
            return
        if not episodes:
            return
        scores = torch.tensor([e.score for e in episodes])
        groups = [e.group_id for e in episodes]
        advantages = self.compute_advantages(scores, groups, eps=self.config.algorithm.adv_eps)
        for episode, advantage in zip(episodes, advantages.tolist(), strict=True):
            episode.advantage = advantage

    def _end_step(self, step: int, metrics: StepMetrics, began: float, mlflow: Any) -> dict[str, float]:
        for name, value in self.health.end_step().items():
            metrics.add(name, value)
        metrics.add("curriculum/stage", float(self.curriculum.stage))
        logged = metrics.reduce(self.dist)
        logged["curriculum/advanced"] = float(self.curriculum.record(logged["reward/answer"]))
        logged["time/step_s"] = time.perf_counter() - began
        logged["step"] = float(step + 1)
        self.history.append(logged)
        save = (step + 1) % self.tcfg.save_every == 0 or step + 1 == self.tcfg.total_steps
        state = self._state(step + 1) if save else None  # gathering FSDP2 shards: every rank takes part
        if self.dist.main:
            mlflow.log_metrics({k: v for k, v in logged.items() if k != "step"}, step=step + 1)
            append_history(self.out / HISTORY, logged)
            if state is not None:
                save_checkpoint(self.out / CHECKPOINT, state)
        if save:
            self.saved_step = step + 1
        self.dist.barrier()
        return logged

    def _state(self, step: int) -> dict[str, Any]:
        return {
            **self.actor.state_dict(),
            **({"critic": self.critic.state_dict()} if self.critic is not None else {}),
            "curriculum": self.curriculum.state_dict(),
            "health": self.health.state_dict(),
            "step": step,
            "mlflow_run_id": self.run_id,
            "history": self.history,
        }

    def _resume(self) -> None:
        state = load_checkpoint(self.out / CHECKPOINT)
        self.actor.load_state_dict(state)
        if self.critic is not None:
            if "critic" not in state:
                raise ValueError(
                    f"{self.out / CHECKPOINT} has no critic state (a run without critic.enable): "
                    "use another trainer.output_dir or trainer.resume=false"
                )
            self.critic.load_state_dict(state["critic"])
        self.curriculum.load_state_dict(state["curriculum"])
        if "health" in state:
            self.health.load_state_dict(state["health"])
        self.start_step = self.saved_step = state["step"]
        self.run_id, self.history = state["mlflow_run_id"], state["history"]
        self.rollout.sync_weights(full_state_dict(self.actor.policy))
        if self.dist.main:  # steps after the checkpoint (a kill between saves) are redone: drop their lines
            write_history(self.out / HISTORY, self.history)

    def _last_good(self) -> str:
        return last_good_checkpoint(self.saved_step, self.out / CHECKPOINT)

    def _save_policy(self, mlflow: Any) -> None:
        """The final policy as an HF checkpoint, and the reward curve."""
        final = full_state_dict(self.actor.policy)
        if not self.dist.main:
            return
        save_policy(self.actor.policy, self.actor.tokenizer, final, self.out / POLICY_DIR)
        if self.history:
            plot_rewards(self.history, self.out / "reward_curve.png")
            mlflow.log_artifact(str(self.out / "reward_curve.png"))


def assign_token_advantages(
    episodes: Sequence[Episode], config: RLConfig, sum_over_ranks: SumOverRanks
) -> tuple[float, float]:
    """Per-token advantages and the critic's returns of every episode (``algorithm.adv_estimator``, e.g.
    gae), from token-level rewards (the score on the last sampled token, minus ``kl_in_reward`` × KL per
    sampled token) and the critic's values. Every rank takes part in the whitening's sums, with or without
    episodes. Returns the KL summed over sampled tokens and their count."""
    algo = config.algorithm
    width = max([len(e.rollout.token_ids) - 1 for e in episodes] + [1])
    like = torch.zeros((len(episodes), width))
    mask = stack_rows([torch.tensor(e.sampled[1:], dtype=torch.float32) for e in episodes], like)
    rewards = outcome_token_rewards(torch.tensor([e.score for e in episodes]), mask)
    kl = torch.zeros_like(mask)
    if algo.kl_in_reward > 0:
        old = stack_rows([e.old_log_prob for e in episodes], like)
        ref = stack_rows([e.ref_log_prob for e in episodes], like)
        kl = get_kl_penalty(algo.kl_penalty)(old, ref) * mask
        rewards = rewards - algo.kl_in_reward * kl
    values = stack_rows([e.values for e in episodes], like)
    advantages, returns = get_adv_estimator(algo.adv_estimator)(
        rewards, values, mask, algo.gamma, algo.lam, sum_over_ranks=sum_over_ranks
    )
    for row, episode in enumerate(episodes):
        positions = len(episode.rollout.token_ids) - 1
        episode.token_advantages = advantages[row, :positions]
        episode.returns = returns[row, :positions]
    return float(kl.sum()), float(mask.sum())
