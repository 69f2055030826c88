"""The actor's log-probs run the output layer only at sampled positions, and give what full logits give:
old and reference log-probs, entropy, the PPO loss and its gradients (the tests' tiny random Qwen2, fp32)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_model import tiny_model, tiny_tokenizer

from ramp.rl.actor import Batch, response_log_probs
from ramp.rl.core_algos import entropy_from_logits, policy_loss

TOKENIZER = tiny_tokenizer(500)
VOCAB, TEMPERATURE = len(TOKENIZER), 0.7
TOLERANCE = 1e-5  # measured: about 1e-6 (float32 rounding of two matmul shapes)


def batch() -> Batch:
    """Three right-padded rows of 40, 27 and 33 tokens; sampled tokens in a few spans per row (prompt,
    retrieved text and padding carry none), as in a search episode."""
    generator = torch.Generator().manual_seed(0)
    lengths, width = [40, 27, 33], 40
    ids = torch.randint(3, VOCAB, (3, width), generator=generator)
    attention = torch.zeros((3, width), dtype=torch.long)
    response = torch.zeros((3, width - 1))
    for row, length in enumerate(lengths):
        attention[row, :length] = 1
        ids[row, length:] = 0
        for start, end in [(8, 14), (20, 24), (length - 4, length - 1)]:
            response[row, start:end] = 1.0
    return Batch(ids, attention, response, advantages=torch.tensor([1.0, -0.5, 0.25]))


def full_logits(model: Any, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: logits at every position, log-probs and entropy read off the sampled ones."""
    logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits[:, :-1].float()
    logits = logits / TEMPERATURE
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, b.input_ids[:, 1:, None]).squeeze(-1)
    return log_probs * b.response_mask, entropy_from_logits(logits) * b.response_mask


def ppo_loss(log_prob: torch.Tensor, old: torch.Tensor, b: Batch) -> torch.Tensor:
    return policy_loss(log_prob, old, b.advantages, b.response_mask)[0]


def test_loss_position_logits_equal_full_logits():
    policy, reference = tiny_model(TOKENIZER, seed=0).train(), tiny_model(TOKENIZER, seed=1).eval()
    b = batch()
    head_rows: list[int] = []
    policy.lm_head.register_forward_hook(lambda _m, args, _out: head_rows.append(args[0].shape[0]))
    with torch.no_grad():
        old, _ = response_log_probs(policy, b, TEMPERATURE)
        ref, _ = response_log_probs(reference, b, TEMPERATURE)
        old_full, _ = full_logits(policy, b)
        ref_full, _ = full_logits(reference, b)
    sampled = int(b.response_mask.sum())
    assert head_rows[0] == sampled < b.response_mask.numel() / 2  # the output layer saw sampled rows only
    assert (old_full != 0).sum() == sampled  # the reference is not trivially zero
    torch.testing.assert_close(old, old_full, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(ref, ref_full, rtol=0, atol=TOLERANCE)

    # the update: log-probs and entropy with gradients, the clipped loss against the reference as "old"
    log_prob, entropy = response_log_probs(policy, b, TEMPERATURE, with_entropy=True)
    assert entropy is not None
    loss = ppo_loss(log_prob, ref, b)
    grads = torch.autograd.grad(loss, list(policy.parameters()))
    log_prob_full, entropy_full = full_logits(policy, b)
    loss_full = ppo_loss(log_prob_full, ref_full, b)
    grads_full = torch.autograd.grad(loss_full, list(policy.parameters()))
    torch.testing.assert_close(entropy, entropy_full, rtol=0, atol=TOLERANCE)
    assert abs(loss.item() - loss_full.item()) < TOLERANCE and loss.item() != 0.0
    for grad, grad_full in zip(grads, grads_full, strict=True):
        torch.testing.assert_close(grad, grad_full, rtol=0, atol=TOLERANCE)


class FullLogitsOnly(torch.nn.Module):
    """A causal LM whose forward has no ``logits_to_keep``: it returns logits at every position."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("loss_positions_only", [True, False])
def test_models_without_loss_position_logits_are_gathered_after(loss_positions_only: bool):
    model, b = tiny_model(TOKENIZER, seed=2).eval(), batch()
    wrapped = FullLogitsOnly(model) if loss_positions_only else model
    with torch.no_grad():
        log_probs, entropy = response_log_probs(
            wrapped, b, TEMPERATURE, with_entropy=True, loss_positions_only=loss_positions_only
        )
        expected, expected_entropy = full_logits(model, b)
    torch.testing.assert_close(log_probs, expected, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(entropy, expected_entropy, rtol=0, atol=TOLERANCE)
