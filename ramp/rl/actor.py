"""The actor: the policy being trained (and the frozen reference when a KL term is on, in the loss or the
reward). Before an update
it computes the log-probs of the step's episodes under the policy that sampled them; then PPO-style
mini-batch updates (``ppo_epochs`` × ``mini_batches`` optimizer steps) with the loss chosen by name in
:mod:`ramp.rl.core_algos`.

Tensors are right-padded sequences; position t of ``response_mask`` marks token t+1 as sampled by the
policy. The output layer runs only at those positions (:func:`response_log_probs`): prompts, retrieved
result blocks and padding, most tokens of a search episode, never reach the vocabulary matmul.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from ramp.rl.config import RLConfig
from ramp.rl.core_algos import aggregate, entropy_from_logits, get_kl_penalty, get_policy_loss
from ramp.rl.distributed import Dist, full_state_dict, micro_batches, shard, split
from ramp.rl.episodes import Episode
from ramp.rl.metrics import StepMetrics
from ramp.seeding import stable_seed
from ramp.train.health import HealthMonitor

FULL = StateDictOptions(full_state_dict=True)


def load_policy(config: RLConfig, device: torch.device) -> tuple[Any, Any]:
    """The HF policy (train mode, no KV cache) and its tokenizer."""
    if not config.policy.model:
        raise ValueError("policy.model is empty: give an HF checkpoint directory")
    dtype = torch.bfloat16 if config.policy.dtype == "bfloat16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(config.policy.model)
    model: Any = AutoModelForCausalLM.from_pretrained(config.policy.model, dtype=dtype)
    model.to(device)
    if config.policy.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model.train(), tokenizer


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, S]
    response_mask: torch.Tensor  # [B, S-1]: 1 where token t+1 was sampled by the policy
    advantages: torch.Tensor  # [B] (one per episode) or [B, S-1] (per token: gae)


def collate(episodes: Sequence[Episode], pad_id: int, device: torch.device) -> Batch:
    if not episodes:  # a rank without data still joins the collectives with one empty row
        return Batch(
            torch.full((1, 2), pad_id, device=device),
            torch.ones((1, 2), dtype=torch.long, device=device),
            torch.zeros((1, 1), device=device),
            torch.zeros(1, device=device),
        )
    width = max(len(e.rollout.token_ids) for e in episodes)
    ids = torch.full((len(episodes), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(episodes), width), dtype=torch.long)
    response = torch.zeros((len(episodes), width - 1))
    for row, episode in enumerate(episodes):
        tokens = episode.rollout.token_ids
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention[row, : len(tokens)] = 1
        response[row, : len(tokens) - 1] = torch.tensor(episode.sampled[1:], dtype=torch.float32)
    if episodes[0].token_advantages is not None:
        advantages = stack_rows([e.token_advantages for e in episodes], response)
    else:
        advantages = torch.tensor([e.advantage for e in episodes], dtype=torch.float32)
    return Batch(ids.to(device), attention.to(device), response.to(device), advantages.to(device))


def response_log_probs(
    model: Any, batch: Batch, temperature: float, with_entropy: bool = False, loss_positions_only: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[B, S-1]`` log-prob of every sampled token under ``model`` (logits / temperature, as sampled) and
    its entropy; 0 at positions without loss.

    The output layer runs only at the sampled positions: the model's forward gets them as a boolean
    ``logits_to_keep`` mask (transformers gathers those rows of the last hidden states before the LM head),
    so FSDP2's hooks around the forward stay in charge. A model without ``logits_to_keep`` (or one that
    returns every position anyway) is gathered afterwards, as is ``loss_positions_only=False`` (the
    benchmark's baseline).
    """
    mask = batch.response_mask.bool()
    kwargs = {}
    if loss_positions_only and "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = F.pad(mask, (0, 1))  # hidden state t predicts token t+1; the last: none
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs).logits
    if logits.dim() == 3:  # [B, S, V]: every position
        logits = logits[:, :-1][mask]
    logits = logits.float() / temperature
    targets = batch.input_ids[:, 1:][mask]
    picked = torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)
    log_probs = torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask, picked)
    if not with_entropy:
        return log_probs, None
    entropy = torch.zeros_like(log_probs).masked_scatter(mask, entropy_from_logits(logits))
    return log_probs, entropy


def stack_rows(rows: Sequence[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
    """Per-token rows (computed in other micro-batches, so of other widths) fitted to ``like``'s shape."""
    out = torch.zeros_like(like)
    for i, row in enumerate(rows):
        if row is not None:
            width = min(row.shape[0], out.shape[1])
            out[i, :width] = row[:width]
    return out


class Actor:
    """The policy, its optimizer and LR schedule, and the reference model (KL term only)."""

    def __init__(self, config: RLConfig, dist_info: Dist) -> None:
        algo, tcfg = config.algorithm, config.trainer
        self.algo, self.tcfg, self.dist = algo, tcfg, dist_info
        self.temperature = config.rollout.temperature
        self.policy, self.tokenizer = load_policy(config, dist_info.device)
        self.reference = None
        if algo.kl_coef > 0 or algo.kl_in_reward > 0:
            self.reference, _ = load_policy(config, dist_info.device)
            self.reference.eval().requires_grad_(False)
        if dist_info.world > 1:
            self.policy = shard(self.policy)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay
        )
        warmup = tcfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
        )
        self.loss_fn = get_policy_loss(algo.policy_loss)
        self.kl_fn = get_kl_penalty(algo.kl_penalty) if algo.kl_coef > 0 else None  # the loss term
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def compute_log_probs(self, episodes: Sequence[Episode], metrics: StepMetrics) -> None:
        """Old (and reference) log-probs of every episode, before any update; the policy's entropy on its
        sampled tokens goes to ``health/entropy``."""
        with torch.no_grad():
            for chunk in micro_batches(episodes, self.tcfg.micro_batch_size, self.dist):
                batch = collate(chunk, self.pad_id, self.dist.device)
                old, entropy = response_log_probs(self.policy, batch, self.temperature, with_entropy=True)
                ref = None
                if self.reference is not None:
                    ref = response_log_probs(self.reference, batch, self.temperature)[0]
                for row, episode in enumerate(chunk):
                    episode.old_log_prob = old[row]
                    episode.ref_log_prob = ref[row] if ref is not None else None
                assert entropy is not None
                metrics.add("health/entropy", float(entropy.sum()), float(batch.response_mask.sum()))

    def update(
        self, episodes: Sequence[Episode], step: int, metrics: StepMetrics, health: HealthMonitor
    ) -> None:
        """``ppo_epochs`` passes over the episodes (shuffled by seed and step), ``mini_batches`` optimizer
        steps each; an update whose loss or gradient norm is not finite is never applied."""
        for epoch in range(self.tcfg.ppo_epochs):
            order = list(episodes)
            random.Random(stable_seed(self.tcfg.seed, "shuffle", step, epoch)).shuffle(order)
            for mini in split(order, self.tcfg.mini_batches):
                self._update(mini, step, metrics, health)
        self.scheduler.step()
        metrics.add("actor/lr", float(self.scheduler.get_last_lr()[0]))

    def _update(
        self, mini: Sequence[Episode], step: int, metrics: StepMetrics, health: HealthMonitor
    ) -> None:
        # token-mean / seq-mean denominators over the whole mini-batch on every rank
        agg_kw = {
            "global_tokens": max(1.0, self.dist.sum(sum(e.num_sampled for e in mini))),
            "global_seqs": max(1.0, self.dist.sum(sum(e.num_sampled > 0 for e in mini))),
        }
        self.optimizer.zero_grad(set_to_none=True)
        pg_loss_sum, kl_sum = 0.0, 0.0
        for chunk in micro_batches(mini, self.tcfg.micro_batch_size, self.dist):
            batch = collate(chunk, self.pad_id, self.dist.device)
            loss, pg_loss, kl = self._micro_batch_loss(batch, chunk, agg_kw, metrics)
            # FSDP averages gradients over ranks; the loss already divides by the global count.
            (loss * self.dist.world).backward()
            pg_loss_sum += pg_loss
            kl_sum += kl
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.tcfg.grad_clip)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if health.check(step + 1, loss=self.dist.sum(pg_loss_sum + kl_sum), grad_norm=grad_norm):
            self.optimizer.step()
        metrics.add("actor/pg_loss", pg_loss_sum)
        if self.kl_fn is not None:
            metrics.add("actor/kl", kl_sum)
        metrics.add("actor/grad_norm", grad_norm)

    def _micro_batch_loss(
        self, batch: Batch, chunk: Sequence[Episode], agg_kw: dict[str, float], metrics: StepMetrics
    ) -> tuple[torch.Tensor, float, float]:
        """The clipped policy loss (+ KL and entropy terms when on) of one micro-batch: its share of the
        mini-batch's loss. Returns the loss to backpropagate and the plain values of its two parts."""
        algo, mask = self.algo, batch.response_mask
        log_prob, entropy = response_log_probs(self.policy, batch, self.temperature, with_entropy=True)
        assert entropy is not None
        old = stack_rows([e.old_log_prob for e in chunk], mask)
        pg_loss, pg_metrics = self.loss_fn(
            log_prob,
            old,
            batch.advantages,
            mask,
            clip_low=algo.clip_low,
            clip_high=algo.clip_high,
            clip_c=algo.clip_c,
            agg=algo.loss_agg_mode,
            **agg_kw,
        )
        loss, kl_value = pg_loss, 0.0
        if algo.entropy_coef > 0:
            loss = loss - algo.entropy_coef * aggregate(entropy, mask, algo.loss_agg_mode, **agg_kw)
        if self.kl_fn is not None:
            ref = stack_rows([e.ref_log_prob for e in chunk], mask)
            kl = aggregate(self.kl_fn(log_prob, ref), mask, algo.loss_agg_mode, **agg_kw)
            loss, kl_value = loss + algo.kl_coef * kl, float(kl.detach())
        tokens = float(mask.sum())
        metrics.add("actor/clipfrac", pg_metrics["clipfrac"] * tokens, tokens)
        metrics.add("actor/approx_kl", pg_metrics["approx_kl"] * tokens, tokens)
        metrics.add("actor/entropy", float(entropy.detach().sum()), tokens)
        return loss, float(pg_loss.detach()), kl_value

    def state_dict(self) -> dict[str, Any]:
        """Full (unsharded) model and optimizer states and the schedule: the same on every rank."""
        return {
            "model": full_state_dict(self.policy),
            "optimizer": get_optimizer_state_dict(self.policy, self.optimizer, options=FULL),
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_model_state_dict(self.policy, state["model"], options=FULL)
        set_optimizer_state_dict(self.policy, self.optimizer, state["optimizer"], options=FULL)
        self.scheduler.load_state_dict(state["scheduler"])
