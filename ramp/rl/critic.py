"""The critic: a value model for PPO with GAE (Search-R1's PPO), the trainer's third role.

The value model is the policy checkpoint's transformer trunk with a fresh scalar head (verl's and
Search-R1's choice: the critic starts from the same checkpoint as the actor, so its features already read
the search protocol; ``critic.model`` may name another checkpoint with the same tokenizer, e.g. a smaller
one). The head starts at zero, so the first values are 0. The value at position t is the model's
estimate for the prefix up to token t, i.e. before the policy samples token t+1: the positions of the
actor's ``response_mask``. It is trained with PPO's clipped value loss on the same rollouts, with its own
optimizer, schedule and micro-batches; prompts, retrieved result blocks and appended tokens carry no
loss (the same mask as the actor's).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from transformers import AutoModel

from ramp.rl.actor import FULL, Batch, collate, stack_rows
from ramp.rl.config import RLConfig
from ramp.rl.core_algos import value_loss
from ramp.rl.distributed import Dist, full_state_dict, micro_batches, shard, split
from ramp.rl.episodes import Episode
from ramp.rl.metrics import StepMetrics
from ramp.seeding import stable_seed
from ramp.train.health import HealthMonitor


class ValueModel(nn.Module):
    """A causal LM's trunk (``model``, as in ``*ForCausalLM``, so FSDP2's ``shard`` applies) and a scalar
    value head on its last hidden states."""

    def __init__(self, trunk: Any) -> None:
        super().__init__()
        self.model = trunk
        self.value_head = nn.Linear(trunk.config.hidden_size, 1, dtype=trunk.dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` values, one per prefix."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.value_head(hidden).squeeze(-1).float()


def load_value_model(config: RLConfig, device: torch.device) -> ValueModel:
    path = config.critic.model or config.policy.model
    if not path:
        raise ValueError("critic.model and policy.model are empty: give an HF checkpoint directory")
    dtype = torch.bfloat16 if config.policy.dtype == "bfloat16" else torch.float32
    trunk: Any = AutoModel.from_pretrained(path, dtype=dtype)
    if config.policy.gradient_checkpointing:
        trunk.gradient_checkpointing_enable()
    trunk.config.use_cache = False
    return ValueModel(trunk).to(device).train()


def response_values(model: ValueModel, batch: Batch) -> torch.Tensor:
    """``[B, S-1]``: the value of the prefix before each predicted token, 0 where nothing was sampled."""
    values = model(batch.input_ids, batch.attention_mask)[:, :-1]
    return values * batch.response_mask


class Critic:
    """The value model, its optimizer (AdamW) and LR schedule."""

    def __init__(self, config: RLConfig, dist_info: Dist, pad_id: int) -> None:
        self.ccfg, self.tcfg, self.dist, self.pad_id = config.critic, config.trainer, dist_info, pad_id
        self.agg = config.algorithm.loss_agg_mode
        self.model: Any = load_value_model(config, dist_info.device)
        if dist_info.world > 1:
            self.model = shard(self.model)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.ccfg.lr, weight_decay=self.ccfg.weight_decay
        )
        warmup = self.ccfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )

    def compute_values(self, episodes: Sequence[Episode], metrics: StepMetrics) -> None:
        """Every episode's values before any update (``episode.values``), and their mean on sampled tokens."""
        total, tokens = 0.0, 0.0
        with torch.no_grad():
            for chunk in micro_batches(episodes, self.tcfg.micro_batch_size, self.dist):
                batch = collate(chunk, self.pad_id, self.dist.device)
                values = response_values(self.model, batch)
                for row, episode in enumerate(chunk):
                    episode.values = values[row]
                total += float(values.sum())
                tokens += float(batch.response_mask.sum())
        metrics.add("critic/values_mean", total, tokens)

    def update(
        self, episodes: Sequence[Episode], step: int, metrics: StepMetrics, health: HealthMonitor
    ) -> None:
        """``ppo_epochs`` passes over the episodes (its own shuffle), ``mini_batches`` optimizer steps each,
        towards ``episode.returns``; a non-finite loss or gradient norm is never applied."""
        for epoch in range(self.tcfg.ppo_epochs):
            order = list(episodes)
            random.Random(stable_seed(self.tcfg.seed, "critic-shuffle", step, epoch)).shuffle(order)
            for mini in split(order, self.tcfg.mini_batches):
                self._update(mini, step, metrics, health)
        self.scheduler.step()
        metrics.add("critic/lr", float(self.scheduler.get_last_lr()[0]))

    def _update(
        self, mini: Sequence[Episode], step: int, metrics: StepMetrics, health: HealthMonitor
    ) -> None:
        agg_kw = {
            "global_tokens": max(1.0, self.dist.sum(sum(e.num_sampled for e in mini))),
            "global_seqs": max(1.0, self.dist.sum(sum(e.num_sampled > 0 for e in mini))),
        }
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for chunk in micro_batches(mini, self.tcfg.micro_batch_size, self.dist):
            batch = collate(chunk, self.pad_id, self.dist.device)
            loss, clipfrac = self.micro_batch_loss(batch, chunk, agg_kw)
            (loss * self.dist.world).backward()  # FSDP averages over ranks; the loss divides by all tokens
            loss_sum += float(loss.detach())
            tokens = float(batch.response_mask.sum())
            metrics.add("critic/vf_clipfrac", clipfrac * tokens, tokens)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.ccfg.grad_clip)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if health.check(step + 1, vf_loss=self.dist.sum(loss_sum), critic_grad_norm=grad_norm):
            self.optimizer.step()
        metrics.add("critic/vf_loss", loss_sum)
        metrics.add("critic/grad_norm", grad_norm)

    def micro_batch_loss(
        self, batch: Batch, chunk: Sequence[Episode], agg_kw: dict[str, float]
    ) -> tuple[torch.Tensor, float]:
        """The clipped value loss of one micro-batch (its share of the mini-batch's) and its clip fraction."""
        mask = batch.response_mask
        vpreds = response_values(self.model, batch)
        old = stack_rows([e.values for e in chunk], mask)
        returns = stack_rows([e.returns for e in chunk], mask)
        loss, loss_metrics = value_loss(vpreds, returns, old, mask, self.ccfg.value_clip, self.agg, **agg_kw)
        return loss, loss_metrics["vf_clipfrac"]

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": full_state_dict(self.model),
            "optimizer": get_optimizer_state_dict(self.model, self.optimizer, options=FULL),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_model_state_dict(self.model, state["model"], options=FULL)
        set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"], options=FULL)
        self.scheduler.load_state_dict(state["scheduler"])
