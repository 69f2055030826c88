"""``ramp.rl.gae_advantages`` and ``value_loss`` equal verl's own ``compute_gae_advantage_return`` and
``compute_value_loss`` on random batches with masked gaps (run in ``.venv-verl``; ``make test`` runs it)."""

from __future__ import annotations

import pytest

pytest.importorskip("verl", reason="verl runs in its own environment: make verl-env (make test runs it)")

import torch
from verl.trainer.ppo.core_algos import compute_gae_advantage_return, compute_value_loss

from ramp.rl.core_algos import gae_advantages, value_loss


def batches(count: int = 100):
    generator = torch.Generator().manual_seed(0)
    for trial in range(count):
        rows, width = (
            int(torch.randint(1, 6, (1,), generator=generator)),
            int(torch.randint(2, 40, (1,), generator=generator)),
        )
        mask = (torch.rand(rows, width, generator=generator) > 0.35).float()
        mask[0, :2] = 1.0  # at least two sampled tokens to whiten over
        gamma, lam = (1.0, 1.0) if trial % 4 == 0 else torch.rand(2, generator=generator).tolist()
        yield (
            torch.randn(rows, width, generator=generator),
            torch.randn(rows, width, generator=generator),
            mask,
            gamma,
            lam,
        )


def test_gae_equals_verls():
    for rewards, values, mask, gamma, lam in batches():
        expected_advantages, expected_returns = compute_gae_advantage_return(
            rewards, values, mask, gamma, lam
        )
        advantages, returns = gae_advantages(rewards, values, mask, gamma, lam)
        torch.testing.assert_close(returns, expected_returns, rtol=0, atol=1e-6)
        torch.testing.assert_close(advantages, expected_advantages, rtol=0, atol=2e-6)


def test_value_loss_equals_verls():
    for returns, old, mask, _, _ in batches(30):
        vpreds = old + torch.randn_like(old)
        expected, expected_clipfrac = compute_value_loss(vpreds, returns, old, mask, cliprange_value=0.5)
        loss, metrics = value_loss(vpreds, returns, old, mask, clip_range=0.5)
        torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
        assert metrics["vf_clipfrac"] == pytest.approx(float(expected_clipfrac), abs=1e-6)
