"""DAPO's formulas (ramp.rl) against hand-computed tensors."""

from __future__ import annotations

import math

import pytest
import torch

import ramp.rl as rl
from ramp.rl.core_algos import (
    DynamicSamplingExhausted,
    aggregate,
    get_adv_estimator,
    get_kl_penalty,
    get_policy_loss,
    low_var_kl,
)


def test_grpo_advantages_hand_computed():
    # group "a" (rows 0, 2, 4): mean 0.5, unbiased std 0.5; group "b" of one: mean 0, std 1;
    # group "c" all equal: 0 everywhere.
    rewards = torch.tensor([1.0, 2.0, 0.0, 0.7, 0.5, 0.7, 0.7])
    ids = ["a", "b", "a", "c", "a", "c", "c"]
    adv = rl.grpo_advantages(rewards, ids, eps=1e-6)
    expected = torch.tensor([0.5 / (0.5 + 1e-6), 2.0 / (1 + 1e-6), -0.5 / (0.5 + 1e-6), 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(adv, expected)
    # group ids are strings, so two datasets' "row 0" never share a group
    merged = rl.grpo_advantages(torch.tensor([1.0, 0.0]), ["ramp:0", "hotpotqa:0"])
    torch.testing.assert_close(merged, torch.tensor([1.0, 0.0]) / (1 + 1e-6))
    assert get_adv_estimator("grpo") is rl.grpo_advantages
    with pytest.raises(ValueError, match="one group id each"):
        rl.grpo_advantages(rewards, ids[:3])


def _loss(ratio: float, advantage: float, **kw) -> tuple[float, dict[str, float]]:
    log_prob = torch.tensor([[math.log(ratio)]])
    loss, metrics = rl.policy_loss(
        log_prob, torch.zeros(1, 1), torch.tensor([advantage]), torch.ones(1, 1), **kw
    )
    return float(loss), metrics


@pytest.mark.parametrize(
    ("ratio", "advantage", "expected", "clipped"),
    [
        (1.5, 1.0, -1.28, True),  # positive advantage: capped at 1 + clip_high (clip-higher)
        (1.2, 1.0, -1.2, False),  # inside the wider upper range: not clipped (0.2 would have clipped it)
        (0.5, 1.0, -0.5, False),  # positive advantage, low ratio: the unclipped term is the max
        (0.5, -1.0, 0.8, True),  # negative advantage: floored at 1 - clip_low
        (1.5, -1.0, 1.5, False),  # negative advantage, high ratio: unclipped (below the dual clip)
        (5.0, -1.0, 3.0, True),  # dual clip: at most clip_c * |A|
    ],
)
def test_policy_loss_clip_higher_and_dual_clip(ratio, advantage, expected, clipped):
    loss, metrics = _loss(ratio, advantage)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert metrics["clipfrac"] + metrics["clipfrac_dual"] > 0 if clipped else metrics["clipfrac"] == 0


def test_dual_clip_off_and_ratio_clamp():
    assert _loss(5.0, -1.0, clip_c=None)[0] == pytest.approx(5.0)
    assert _loss(5.0, -1.0, clip_c=3.0)[1]["clipfrac_dual"] == 1.0
    with pytest.raises(ValueError, match="clip_c"):
        _loss(1.0, -1.0, clip_c=0.5)
    # a huge log-ratio is clamped before exp: finite loss and gradient
    log_prob = torch.tensor([[80.0]], requires_grad=True)
    loss, metrics = rl.policy_loss(
        log_prob, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), clip_c=None
    )
    loss.backward()
    assert float(loss.detach()) == pytest.approx(math.exp(20.0))
    assert torch.isfinite(log_prob.grad).all()
    assert metrics["approx_kl"] == pytest.approx(-20.0)


def test_aggregation_modes_over_uneven_masks():
    loss = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert float(aggregate(loss, mask, "token-mean")) == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert float(aggregate(loss, mask, "seq-mean-token-sum")) == pytest.approx((6 + 4) / 2)
    assert float(aggregate(loss, mask, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(loss, mask, "sum")
    # the policy loss aggregates the same way; advantages [B] broadcast over tokens
    log_prob = torch.zeros(2, 4)
    value, _ = rl.policy_loss(log_prob, log_prob, torch.tensor([1.0, -2.0]), mask)
    assert float(value) == pytest.approx((-1 * 3 + 2 * 1) / 4)
    value, _ = rl.policy_loss(log_prob, log_prob, torch.tensor([1.0, -2.0]), mask, agg="seq-mean-token-sum")
    assert float(value) == pytest.approx((-3 + 2) / 2)
    assert get_policy_loss("dapo") is rl.policy_loss


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_loss_is_invariant_to_how_the_batch_is_split(agg):
    torch.manual_seed(0)
    log_prob = torch.randn(4, 6, dtype=torch.float64) * 0.1
    old = log_prob.detach() + torch.randn(4, 6, dtype=torch.float64) * 0.3
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5], dtype=torch.float64)
    mask = torch.tensor(
        [[1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.float64
    )

    def run(parts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        params = log_prob.clone().requires_grad_(True)
        total = torch.zeros((), dtype=torch.float64)
        tokens, seqs = float(mask.sum()), float((mask.sum(1) > 0).sum())
        for rows in parts:  # micro-batches (or ranks): each divides by the whole batch's counts
            index = torch.tensor(rows)
            part, _ = rl.policy_loss(
                params[index],
                old[index],
                adv[index],
                mask[index],
                agg=agg,
                global_tokens=tokens,
                global_seqs=seqs,
            )
            part.backward()
            total = total + part.detach()
        assert params.grad is not None
        return total, params.grad

    whole, grad = run([[0, 1, 2, 3]])
    direct, _ = rl.policy_loss(log_prob, old, adv, mask, agg=agg)
    torch.testing.assert_close(whole, direct.detach())
    for split in ([[0], [1, 2, 3]], [[0, 1], [2, 3]], [[3, 1], [0], [2]]):
        value, split_grad = run(split)
        torch.testing.assert_close(value, whole)
        torch.testing.assert_close(split_grad, grad)
    if agg == "token-mean":  # a per-micro-batch mean would weigh the 1-token row like the 5-token one
        naive = (
            sum(float(rl.policy_loss(log_prob[[i]], old[[i]], adv[[i]], mask[[i]])[0]) for i in range(4)) / 4
        )
        assert naive != pytest.approx(float(whole))


def test_overlong_penalty_boundaries():
    # L = 100, buffer 20: no penalty up to 80 sampled tokens, linear to -factor at 100, further past it
    for length, expected in [(0, 0.0), (80, 0.0), (81, -0.05), (90, -0.5), (100, -1.0), (110, -1.5)]:
        assert rl.overlong_penalty(length, 100, 20) == pytest.approx(expected)
    assert rl.overlong_penalty(90, 100, 20, factor=0.5) == pytest.approx(-0.25)
    tensor = rl.overlong_penalty(torch.tensor([79, 80, 90, 100]), 100, 20)
    torch.testing.assert_close(tensor, torch.tensor([0.0, 0.0, -0.5, -1.0]))
    with pytest.raises(ValueError, match="buffer"):
        rl.overlong_penalty(10, 100, 0)


def test_kl_estimators():
    log_prob, ref = torch.tensor([0.0, math.log(0.5)]), torch.tensor([math.log(2.0), math.log(0.5)])
    torch.testing.assert_close(low_var_kl(log_prob, ref), torch.tensor([2 - math.log(2.0) - 1, 0.0]))
    assert get_kl_penalty("low_var_kl") is low_var_kl
    torch.testing.assert_close(get_kl_penalty("kl")(log_prob, ref), torch.tensor([-math.log(2.0), 0.0]))
    with pytest.raises(ValueError, match="unknown KL penalty 'k9'"):
        get_kl_penalty("k9")


def test_dynamic_sampling_filter_fill_and_exhaustion():
    assert rl.groups_with_spread([1, 1, 0, 1, 0.5, 0.5], ["a", "a", "b", "b", "c", "c"]) == [
        False, False, True, True, False, False,
    ]  # fmt: skip

    # batch b: group f"{b}x" has spread when b is odd, f"{b}y" never
    def generate(b: int) -> list[tuple[str, float]]:
        return [(f"{b}x", 1.0), (f"{b}x", float(b % 2 == 0)), (f"{b}y", 0.0), (f"{b}y", 0.0)]

    calls: list[int] = []

    def counted(b: int) -> list[tuple[str, float]]:
        calls.append(b)
        return generate(b)

    kept, batches = rl.fill_train_batch(counted, lambda x: x[0], lambda x: x[1], target_groups=2)
    assert batches == 4 and calls == [0, 1, 2, 3]  # batches 1 and 3 contribute one group each
    assert kept == [("1x", 1.0), ("1x", 0.0), ("3x", 1.0), ("3x", 0.0)]
    with pytest.raises(DynamicSamplingExhausted, match="3 generation batches kept 1 of 2"):
        rl.fill_train_batch(generate, lambda x: x[0], lambda x: x[1], target_groups=2, max_num_gen_batches=3)
    # the global count decides when every rank stops (here: two ranks with the same share)
    kept, batches = rl.fill_train_batch(
        generate, lambda x: x[0], lambda x: x[1], target_groups=2, global_count=lambda n: 2 * n
    )
    assert batches == 2 and len(kept) == 2
