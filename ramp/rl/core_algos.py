"""The RL formulas as pure torch functions, registered by name and selected from config (as verl's
``core_algos``): group advantages (``grpo``) and GAE over a value model's values (``gae``), masked
whitening, the clipped policy and value losses and their aggregation modes, the KL penalty, overlong
reward shaping, the dynamic-sampling group filter and the DPO loss on preference pairs.

Shapes: ``[B, T]`` per-token tensors over the response positions (``response_mask`` 1 on tokens the
policy sampled: the loss never touches prompt, retrieved or appended tokens), ``[B]`` per sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Literal, TypeVar

import torch

AggMode = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]
AGG_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")

ADV_ESTIMATORS: dict[str, Callable[..., Any]] = {}
CRITIC_ESTIMATORS: frozenset[str] = frozenset({"gae"})  # estimators that read a value model's values
POLICY_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, dict[str, float]]]] = {}
KL_PENALTIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}

F = TypeVar("F", bound=Callable[..., Any])


def _register(table: dict[str, Any], name: str) -> Callable[[F], F]:
    def decorator(fn: F) -> F:
        if name in table:
            raise ValueError(f"{name!r} is already registered")
        table[name] = fn
        return fn

    return decorator


def get_adv_estimator(name: str) -> Callable[..., Any]:
    return _lookup(ADV_ESTIMATORS, name, "advantage estimator")


def needs_critic(name: str) -> bool:
    """Does advantage estimator ``name`` read a value model (token-level advantages and returns)?"""
    return name in CRITIC_ESTIMATORS


def get_policy_loss(name: str) -> Callable[..., tuple[torch.Tensor, dict[str, float]]]:
    return _lookup(POLICY_LOSSES, name, "policy loss")


def get_kl_penalty(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return _lookup(KL_PENALTIES, name, "KL penalty")


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}")
    return table[name]


def _groups(rewards: torch.Tensor, group_ids: Sequence[Hashable]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The rewards as float32 and the row indices of each group, in order of first appearance."""
    if rewards.dim() != 1 or len(group_ids) != rewards.shape[0]:
        raise ValueError(f"rewards must be [B] with one group id each; got {tuple(rewards.shape)}")
    members: dict[Hashable, list[int]] = {}
    for i, gid in enumerate(group_ids):
        members.setdefault(gid, []).append(i)
    groups = [torch.tensor(rows, dtype=torch.long) for rows in members.values()]
    return rewards.detach().to(torch.float32), groups


@_register(ADV_ESTIMATORS, "grpo")
def grpo_advantages(rewards: torch.Tensor, group_ids: Sequence[Hashable], eps: float = 1e-6) -> torch.Tensor:
    """(r - group mean) / (group std + eps), unbiased std; a group of one gets mean 0 and std 1.

    ``group_ids`` are the prompts' unique ids (strings), one per sequence, never row numbers.
    """
    scores, groups = _groups(rewards, group_ids)
    out = torch.empty_like(scores)
    for index in groups:
        group = scores[index]
        if len(index) == 1:
            mean, std = torch.zeros(()), torch.ones(())
        else:
            mean, std = group.mean(), group.std(unbiased=True)
        out[index] = (group - mean) / (std + eps)
    return out


@_register(ADV_ESTIMATORS, "group_mean")
def group_mean_advantages(
    rewards: torch.Tensor, group_ids: Sequence[Hashable], eps: float = 1e-6
) -> torch.Tensor:
    """r - group mean, not divided by the group's std (AReaL's ``group_adv_norm: false``, as ASearcher
    trains; a group of one gets 0). ``eps`` is unused: the outcome estimators share one signature."""
    scores, groups = _groups(rewards, group_ids)
    out = torch.empty_like(scores)
    for index in groups:
        out[index] = scores[index] - scores[index].mean()
    return out


SumOverRanks = Callable[[list[float]], list[float]]


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, sum_over_ranks: SumOverRanks | None = None
) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-8), mean and unbiased variance over ``mask``-1 entries (verl's
    ``masked_whiten``: means divide by count + 1e-8, variance times count / (count - 1)).

    ``sum_over_ranks`` (element-wise sums over ranks, e.g. ``Dist.sum_all``) makes the statistics those
    of the whole batch when each rank holds a share of it; None: this tensor is the whole batch.
    """
    total = sum_over_ranks or (lambda xs: xs)
    mask = mask.to(values.dtype)
    value_sum, count = total([float((values * mask).sum()), float(mask.sum())])
    if count < 2:
        raise ValueError(f"whitening needs at least 2 unmasked values, got {count:g}")
    mean = value_sum / (count + 1e-8)
    (squares,) = total([float(((values - mean) ** 2 * mask).sum())])
    var = squares / (count + 1e-8) * count / (count - 1)
    return (values - mean) * (var + 1e-8) ** -0.5


@_register(ADV_ESTIMATORS, "gae")
def gae_advantages(
    token_level_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    *,
    sum_over_ranks: SumOverRanks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over ``[B, T]`` tokens, as verl's ``compute_gae_advantage_return``.

    A reverse scan: at a sampled token (mask 1) delta = r_t + gamma * V_next - V_t and
    A_t = delta + gamma * lam * A_next, and V_t becomes the next value; an observation token (mask 0:
    prompt, retrieved result text, padding) changes nothing, so the value and advantage after it carry
    over to the sampled token before it (multi-turn GAE) and its reward and value are never read.
    Returns (advantages whitened over mask-1 tokens, returns = raw advantages + values). Positions with
    mask 0 hold carried-over numbers that every loss masks out.
    """
    if not token_level_rewards.shape == values.shape == response_mask.shape or values.dim() != 2:
        raise ValueError(
            "token_level_rewards, values and response_mask must be [B, T] of one shape; got "
            f"{tuple(token_level_rewards.shape)}, {tuple(values.shape)}, {tuple(response_mask.shape)}"
        )
    with torch.no_grad():
        rewards, values = token_level_rewards.float(), values.float()
        mask = response_mask.float()
        next_value = values.new_zeros(values.shape[0])
        next_advantage = values.new_zeros(values.shape[0])
        reversed_advantages = []
        for t in reversed(range(values.shape[1])):
            delta = rewards[:, t] + gamma * next_value - values[:, t]
            advantage = delta + gamma * lam * next_advantage
            next_value = torch.where(mask[:, t] > 0, values[:, t], next_value)
            next_advantage = torch.where(mask[:, t] > 0, advantage, next_advantage)
            reversed_advantages.append(next_advantage)
        advantages = torch.stack(reversed_advantages[::-1], dim=1)
        returns = advantages + values
        return masked_whiten(advantages, mask, sum_over_ranks), returns


def outcome_token_rewards(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` token-level rewards of outcome scores ``[B]``: each sequence's score on its last
    ``response_mask``-1 token (the last token the policy sampled), 0 elsewhere."""
    mask = response_mask > 0
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).max(dim=1).values
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    rows = torch.nonzero(last >= 0).squeeze(1)
    out[rows, last[rows]] = scores.to(out.dtype)[rows]
    return out


def value_loss(
    vpreds: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor,
    response_mask: torch.Tensor,
    clip_range: float = 0.5,
    agg: str = "token-mean",
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped value loss (verl's ``compute_value_loss``): 0.5 * agg(max((v - R)^2, (v_clip - R)^2))
    with v_clip = old + clamp(v - old, ±``clip_range``), over ``response_mask``-1 tokens only.

    Metrics: ``vf_clipfrac`` (tokens whose clipped term was the larger).
    """
    clipped = old_values + (vpreds - old_values).clamp(-clip_range, clip_range)
    unclipped_loss = (vpreds - returns) ** 2
    clipped_loss = (clipped - returns) ** 2
    loss = 0.5 * aggregate(
        torch.maximum(unclipped_loss, clipped_loss),
        response_mask,
        agg,
        global_tokens=global_tokens,
        global_seqs=global_seqs,
    )
    with torch.no_grad():
        clipfrac = masked_mean((clipped_loss > unclipped_loss).to(vpreds.dtype), response_mask)
    return loss, {"vf_clipfrac": float(clipfrac)}


def aggregate(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
) -> torch.Tensor:
    """Reduce a ``[B, T]`` per-token loss over ``mask``.

    ``token-mean``: sum over every valid token / number of valid tokens; ``seq-mean-token-sum``: mean
    over sequences of each sequence's token sum; ``seq-mean-token-mean``: mean over sequences of each
    sequence's token mean. ``global_tokens``/``global_seqs`` replace the local denominators when one
    batch is split into micro-batches or ranks, so the parts sum to the loss of the whole batch.
    """
    mask = mask.to(loss_mat.dtype)
    masked = loss_mat * mask
    if mode == "token-mean":
        denominator = global_tokens if global_tokens is not None else mask.sum().clamp(min=1.0)
        return masked.sum() / denominator
    valid_seqs = (mask.sum(dim=-1) > 0).to(loss_mat.dtype)
    seqs = global_seqs if global_seqs is not None else valid_seqs.sum().clamp(min=1.0)
    if mode == "seq-mean-token-sum":
        return masked.sum(dim=-1).sum() / seqs
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1.0)
        return (per_seq * valid_seqs).sum() / seqs
    raise ValueError(f"unknown aggregation {mode!r}; known: {', '.join(AGG_MODES)}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def clipped_surrogate(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float,
    clip_high: float,
    clip_c: float | None,
    log_ratio_clamp: float = 20.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The per-token clipped loss of :func:`policy_loss` (``[B, T]``) and its per-token indicators."""
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    advantages = advantages.expand_as(log_prob)
    log_ratio = (log_prob - old_log_prob).clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss1 = torch.maximum(unclipped, clipped)
    clipped_taken = (clipped > unclipped).to(log_prob.dtype)
    if clip_c is not None:
        if clip_c <= 1.0:
            raise ValueError(f"clip_c must exceed 1 for the dual clip, got {clip_c}")
        dual = -advantages * clip_c
        loss = torch.where(advantages < 0, torch.minimum(loss1, dual), loss1)
        dual_taken = ((loss1 > dual) & (advantages < 0)).to(log_prob.dtype)
    else:
        loss, dual_taken = loss1, torch.zeros_like(loss1)
    return loss, {
        "clipfrac": clipped_taken,
        "clipfrac_dual": dual_taken,
        "approx_kl": -log_ratio,
        "ratio_mean": ratio,
    }


@_register(POLICY_LOSSES, "dapo")
def policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    clip_c: float | None = 3.0,
    agg: str = "token-mean",
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    log_ratio_clamp: float = 20.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DAPO's clipped surrogate: clip-higher ratio range [1 - clip_low, 1 + clip_high], dual clip at
    ``clip_c`` for negative advantages (None disables), log-ratio clamped to ±``log_ratio_clamp``
    before exp. ``advantages`` is ``[B]`` (broadcast over tokens) or ``[B, T]``.

    Returns the aggregated loss and metrics: ``clipfrac`` (tokens whose clipped term was taken),
    ``clipfrac_dual`` (tokens held by the dual clip), ``approx_kl`` (mean of old - new log-prob),
    ``ratio_mean``.
    """
    loss, per_token = clipped_surrogate(
        log_prob, old_log_prob, advantages, clip_low, clip_high, clip_c, log_ratio_clamp
    )
    value = aggregate(loss, response_mask, agg, global_tokens=global_tokens, global_seqs=global_seqs)
    with torch.no_grad():
        mask = response_mask.to(log_prob.dtype)
        metrics = {name: float(masked_mean(t, mask)) for name, t in per_token.items()}
    return value, metrics


@_register(POLICY_LOSSES, "decoupled")
def decoupled_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    clip_c: float | None = 3.0,
    agg: str = "token-mean",
    *,
    behaviour_log_prob: torch.Tensor,
    behaviour_weight_cap: float = 5.0,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    log_ratio_clamp: float = 20.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The decoupled PPO objective of asynchronous RL (AReaL, as ASearcher trains): the clipped surrogate
    against the proximal policy (``old_log_prob``: the policy before this update, recomputed), each token
    weighted by pi_prox / pi_behav (``behaviour_log_prob``: what the rollout recorded when it sampled,
    possibly several versions older). Tokens whose weight exceeds ``behaviour_weight_cap`` get no loss;
    the denominators still count them. Extra metric: ``behaviour_capped``, their share."""
    loss, per_token = clipped_surrogate(
        log_prob, old_log_prob, advantages, clip_low, clip_high, clip_c, log_ratio_clamp
    )
    log_weight = (old_log_prob - behaviour_log_prob).detach().clamp(-log_ratio_clamp, log_ratio_clamp)
    weight = torch.exp(log_weight)
    capped = (weight > behaviour_weight_cap).to(log_prob.dtype)
    value = aggregate(
        loss * weight * (1 - capped), response_mask, agg, global_tokens=global_tokens, global_seqs=global_seqs
    )
    with torch.no_grad():
        mask = response_mask.to(log_prob.dtype)
        metrics = {name: float(masked_mean(t, mask)) for name, t in per_token.items()}
        metrics["behaviour_capped"] = float(masked_mean(capped, mask))
    return value, metrics


@_register(KL_PENALTIES, "low_var_kl")
def low_var_kl(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - pi) - (ref - pi) - 1, clamped to [-10, 10]."""
    diff = (ref_log_prob - log_prob).clamp(-20.0, 20.0)
    return (torch.exp(diff) - diff - 1.0).clamp(-10.0, 10.0)


@_register(KL_PENALTIES, "kl")
def plain_kl(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    """Per-token k1 estimator: pi - ref."""
    return log_prob - ref_log_prob


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO (Rafailov et al.) over ``[B]`` pairs of summed response log-probs: the batch mean of
    ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``. Metrics: the implicit rewards
    ``beta * (pi - ref)`` of chosen and rejected (means), their mean margin and the share of pairs whose
    chosen reward is higher (``reward_accuracy``)."""
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected = beta * (policy_rejected_logps - reference_rejected_logps)
    margins = chosen - rejected
    loss = -torch.nn.functional.logsigmoid(margins).mean()
    metrics = {
        "rewards_chosen": float(chosen.detach().mean()),
        "rewards_rejected": float(rejected.detach().mean()),
        "reward_margin": float(margins.detach().mean()),
        "reward_accuracy": float((margins.detach() > 0).float().mean()),
    }
    return loss, metrics


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax over the last dimension."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def overlong_penalty(length: int | torch.Tensor, max_length: int, buffer: int, factor: float = 1.0) -> Any:
    """DAPO's soft overlong punishment: min(-(length - (L - B)) / B * factor, 0).

    ``length`` counts the tokens the policy sampled (retrieved and appended tokens excluded). 0 up to
    ``L - B``, falling linearly to ``-factor`` at ``L`` (and further past it).
    """
    if buffer <= 0 or buffer > max_length:
        raise ValueError(f"overlong buffer must be in (0, {max_length}], got {buffer}")
    expected = max_length - buffer
    if isinstance(length, torch.Tensor):
        return torch.clamp(-(length.to(torch.float32) - expected) / buffer * factor, max=0.0)
    return min(-(length - expected) / buffer * factor, 0.0)


def groups_with_spread(metric: Sequence[float], group_ids: Sequence[Hashable]) -> list[bool]:
    """Dynamic-sampling filter: per sequence, True when its group's ``metric`` is not all equal.

    A group whose members all score the same has zero advantage everywhere and teaches nothing.
    """
    values: dict[Hashable, set[float]] = {}
    for gid, value in zip(group_ids, metric, strict=True):
        values.setdefault(gid, set()).add(float(value))
    return [len(values[gid]) > 1 for gid in group_ids]


class DynamicSamplingExhausted(RuntimeError):
    """``max_num_gen_batches`` generation batches did not fill the train batch."""


T = TypeVar("T")


def fill_train_batch(
    generate: Callable[[int], Sequence[T]],
    group_of: Callable[[T], Hashable],
    metric_of: Callable[[T], float],
    target_groups: int,
    max_num_gen_batches: int = 0,
    global_count: Callable[[int], int] = lambda n: n,
) -> tuple[list[T], int]:
    """Generate batches (``generate(batch_number)``) and keep groups with spread until ``target_groups``.

    Returns the kept items (whole groups, in generation order; this process's share when distributed)
    and the number of generation batches used. ``global_count`` turns the local kept-group count into
    the count over all ranks (identity on one process), so every rank stops after the same batch.
    ``max_num_gen_batches`` 0 means unlimited; reaching it unfilled raises
    :class:`DynamicSamplingExhausted`.
    """
    if target_groups < 1:
        raise ValueError(f"target_groups must be >= 1, got {target_groups}")
    kept: list[T] = []
    kept_groups: list[Hashable] = []
    batches = 0
    while global_count(len(kept_groups)) < target_groups:
        if max_num_gen_batches and batches >= max_num_gen_batches:
            raise DynamicSamplingExhausted(
                f"{batches} generation batches kept {global_count(len(kept_groups))} of {target_groups} "
                "groups with non-zero reward spread; raise algorithm.max_num_gen_batches (0 = unlimited), "
                "the group size, or the sampling temperature"
            )
        items = list(generate(batches))
        batches += 1
        flags = groups_with_spread([metric_of(x) for x in items], [group_of(x) for x in items])
        for item, keep in zip(items, flags, strict=True):
            if keep:
                kept.append(item)
                gid = group_of(item)
                if gid not in kept_groups:
                    kept_groups.append(gid)
    return kept, batches
