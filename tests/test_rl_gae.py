"""PPO with a value model: GAE (verl's semantics) against hand-computed values, masked whitening over
ranks, the clipped value loss, and the critic on a tiny real Qwen2 (its loss falls on a fixed batch;
retrieved tokens and the prompt carry no loss in actor or critic)."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest
import torch
from tiny_model import tiny_model, tiny_tokenizer

import ramp.rl
from ramp.agent.protocol import encode_prompt, encode_segment, format_result_block
from ramp.agent.rollout import Rollout, Segment
from ramp.agent.task import task_from_qa
from ramp.config import ConfigError, load_config
from ramp.prompts import PromptTemplates
from ramp.retrieval.env import SearchEpisode
from ramp.rl.actor import Actor, collate
from ramp.rl.config import RLConfig
from ramp.rl.core_algos import (
    gae_advantages,
    get_adv_estimator,
    masked_whiten,
    needs_critic,
    outcome_token_rewards,
    value_loss,
)
from ramp.rl.critic import Critic
from ramp.rl.distributed import Dist
from ramp.rl.episodes import Episode, sampled_tokens
from ramp.rl.metrics import StepMetrics
from ramp.rl.trainer import assign_token_advantages
from ramp.train.health import HealthConfig, HealthMonitor

GAMMA, LAM = 0.5, 0.5


def test_gae_hand_computed_with_a_masked_gap():
    """Sampled, sampled, retrieved, retrieved, sampled (the answer; reward 3 on it). The retrieved
    positions' values (9) and rewards (5) are never read: they carry the next value and advantage over."""
    rewards = torch.tensor([[0.0, 0.0, 5.0, 5.0, 3.0]])
    values = torch.tensor([[1.0, 2.0, 9.0, 9.0, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0]])
    # t=4: delta = 3 + 0.5*0 - 4 = -1, A = -1;   t=3, t=2 (retrieved): A = -1 carried, next value 4 carried
    # t=1: delta = 0 + 0.5*4 - 2 = 0, A = 0 + 0.25*(-1) = -0.25;   t=0: delta = 0 + 0.5*2 - 1 = 0, A = -0.0625
    raw = torch.tensor([[-0.0625, -0.25, -1.0, -1.0, -1.0]])
    advantages, returns = gae_advantages(rewards, values, mask, GAMMA, LAM)
    torch.testing.assert_close(returns, raw + values)  # returns: raw advantages + values
    # whitened over the three sampled tokens: mean -0.4375, unbiased variance 0.4921875 / 2
    mean, var = -0.4375, 0.4921875 / 2
    torch.testing.assert_close(advantages, (raw - mean) / (var + 1e-8) ** 0.5)
    assert get_adv_estimator("gae") is gae_advantages is ramp.rl.gae_advantages
    assert needs_critic("gae") and not needs_critic("grpo")


def test_gae_with_gamma_and_lambda_one_is_the_outcome_minus_the_value():
    """gamma = lam = 1 (Search-R1): the raw advantage of every sampled token is R - V(t)."""
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.25, 7.0, 0.75], [0.1, 0.2, 0.3, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])  # row 2: padding after its answer
    _, returns = gae_advantages(rewards, values, mask, 1.0, 1.0)
    raw = returns - values
    torch.testing.assert_close(
        raw * mask, torch.tensor([[0.5, 0.75, 0.0, 0.25], [1.9, 1.8, 1.7, 0.0]]) * mask
    )


def test_observation_values_and_rewards_never_matter():
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(3, 12, generator=generator), torch.randn(3, 12, generator=generator)
    mask = (torch.rand(3, 12, generator=generator) > 0.4).float()
    advantages, returns = gae_advantages(rewards, values, mask, 0.9, 0.8)
    noise = torch.randn(3, 12, generator=generator) * (1 - mask) * 100
    advantages2, returns2 = gae_advantages(rewards + noise, values + noise, mask, 0.9, 0.8)
    torch.testing.assert_close(advantages * mask, advantages2 * mask)
    torch.testing.assert_close(returns * mask, returns2 * mask)
    assert not torch.equal(returns, returns2)  # the noise landed (where no loss reads it)


def test_masked_whiten_over_ranks_equals_the_whole_batch():
    """Two ranks (threads exchanging sums) whiten their halves with the whole batch's statistics."""
    generator = torch.Generator().manual_seed(1)
    values, mask = (
        torch.randn(6, 5, generator=generator),
        (torch.rand(6, 5, generator=generator) > 0.3).float(),
    )
    whole = masked_whiten(values, mask)
    barrier, inbox, parts = threading.Barrier(2), [[], []], [None, None]

    def sum_over_ranks(rank: int):
        def total(local: list[float]) -> list[float]:
            inbox[rank] = local
            barrier.wait()
            summed = [a + b for a, b in zip(inbox[0], inbox[1], strict=True)]
            barrier.wait()
            return summed

        return total

    def run(rank: int) -> None:
        rows = slice(0, 3) if rank == 0 else slice(3, 6)
        parts[rank] = masked_whiten(values[rows], mask[rows], sum_over_ranks(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.testing.assert_close(torch.cat(parts), whole)
    with pytest.raises(ValueError, match="at least 2 unmasked"):
        masked_whiten(values, torch.zeros_like(mask))


def test_value_loss_hand_computed():
    vpreds = torch.tensor([[1.0, 0.2, 5.0]])
    old = torch.tensor([[0.0, 0.0, 9.0]])
    returns = torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # token 0: unclipped (1-1)^2 = 0, clipped to 0.5: (0.5-1)^2 = 0.25 -> 0.25 (clipped taken)
    # token 1: unclipped (0.2-1)^2 = 0.64, clipped 0.2 (inside): 0.64;  token 2: masked out
    loss, metrics = value_loss(vpreds, returns, old, mask, clip_range=0.5)
    assert float(loss) == pytest.approx(0.5 * (0.25 + 0.64) / 2)
    assert metrics["vf_clipfrac"] == pytest.approx(0.5)


def test_outcome_reward_sits_on_the_last_sampled_token():
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    rewards = outcome_token_rewards(torch.tensor([2.0, -1.0, 5.0]), mask)
    expected = torch.zeros(3, 5)
    expected[0, 3], expected[1, 0] = 2.0, -1.0  # a row without sampled tokens gets nothing
    torch.testing.assert_close(rewards, expected)


def test_config_gae_needs_the_critic():
    base = ["retriever.index=unused"]
    with pytest.raises(ConfigError, match=r"reads a value model: set critic\.enable=true"):
        load_config(RLConfig, "configs/rl.yaml", [*base, "algorithm.adv_estimator=gae"])
    with pytest.raises(ConfigError, match="reads no values"):
        load_config(RLConfig, "configs/rl.yaml", [*base, "critic.enable=true"])
    with pytest.raises(ConfigError, match="unknown advantage estimator 'gea'"):
        load_config(RLConfig, "configs/rl.yaml", [*base, "algorithm.adv_estimator=gea"])
    ppo = [*base, "algorithm.adv_estimator=gae", "critic.enable=true", "rollout.n=1"]
    with pytest.raises(ConfigError, match=r"filter_groups .* needs rollout\.n >= 2"):
        load_config(RLConfig, "configs/rl.yaml", ppo)
    config = load_config(RLConfig, "configs/rl.yaml", [*ppo, "algorithm.filter_groups=false"])
    assert config.critic.enable and config.rollout.n == 1


# ---- the critic and the actor on a tiny real model ----------------------------------------------------


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("policy")
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer, hidden=32, layers=1, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def config_for(policy: Path, *extra: str) -> RLConfig:
    sets = [f"policy.model={policy}", "retriever.index=unused", "algorithm.adv_estimator=gae"]
    sets += ["critic.enable=true", "rollout.n=1", "algorithm.filter_groups=false", "trainer.threads=1"]
    return load_config(RLConfig, "configs/rl.yaml", [*sets, *extra])


TEMPLATES = PromptTemplates(
    system="Search.", ramp_user="{masked_passage}", ramp_answer_format="", qa_user="{question}", judge="j"
)


def episode(tokenizer, i: int, parts: list[tuple[str, str]], score: float) -> Episode:
    """A finished episode of the given model/env segments (env: a retrieved result block)."""
    task = task_from_qa(
        {"id": f"q{i}", "question": f"Where was person {i} born?", "golden_answers": ["Paris"]}, TEMPLATES
    )
    prompt = encode_prompt(task.messages, tokenizer)
    segments = []
    for role, text in parts:
        ids = encode_segment(text, tokenizer)
        logprobs = [-1.0] * len(ids) if role == "model" else [None] * len(ids)
        segments.append(Segment(role, text, ids, logprobs))  # type: ignore[arg-type]
    rollout = Rollout(
        task=task,
        sample_index=0,
        seed=0,
        prompt_ids=prompt,
        episode=SearchEpisode(frozenset(), None),
        segments=segments,
        end_token=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        end_sampled=True,
        end_logprob=-1.0,
        finish_reason="answer",
    )
    return Episode(
        rollout,
        f"q{i}@0",
        answer=score,
        format=1.0,
        total=score,
        score=score,
        sampled=sampled_tokens(rollout),
    )


def episodes(tokenizer) -> list[Episode]:
    result = format_result_block([])  # the environment's text for a search without hits
    long_result = (
        "\n<result>\n[1] Paris\nA city of France, on the Seine, where many people were born.\n</result>\n"
    )
    return [
        episode(
            tokenizer,
            0,
            [
                ("model", "<search> person 0</search>"),
                ("env", long_result),
                ("model", "<answer>Paris</answer>"),
            ],
            1.0,
        ),
        episode(
            tokenizer,
            1,
            [("model", "<search> person 1</search>"), ("env", result), ("model", "<answer>Rome</answer>")],
            0.0,
        ),
        episode(tokenizer, 2, [("model", "<answer>Paris</answer>")], 1.0),
    ]


def health() -> HealthMonitor:
    return HealthMonitor(HealthConfig(), lambda: "no checkpoint")


def test_critic_loss_falls_on_a_fixed_batch(policy_dir):
    torch.manual_seed(0)
    config = config_for(policy_dir, "critic.lr=1e-2", "trainer.mini_batches=1", "trainer.micro_batch_size=2")
    tokenizer = tiny_tokenizer()
    batch = episodes(tokenizer)
    critic = Critic(config, Dist(), tokenizer.pad_token_id)
    for e in batch:  # fixed targets: each episode's score on every position it sampled
        e.returns = torch.full((len(e.rollout.token_ids) - 1,), e.score) * torch.tensor(
            e.sampled[1:], dtype=torch.float32
        )
    losses, clipfracs = [], []
    for step in range(25):
        metrics = StepMetrics()
        critic.compute_values(batch, metrics)  # this step's old values (the clip's centre)
        critic.update(batch, step, metrics, health())
        logged = metrics.reduce(Dist())
        losses.append(logged["critic/vf_loss"])
        clipfracs.append(logged["critic/vf_clipfrac"])
    # about 5% of the first loss by step 20, then a plateau there (lr 1e-2): a tenth leaves a margin
    assert losses[0] > 0.1 and losses[-1] < 0.1 * losses[0], [round(x, 4) for x in losses]
    fives = [sum(losses[i : i + 5]) / 5 for i in range(0, len(losses), 5)]
    assert all(b < a for a, b in itertools.pairwise(fives)), fives  # falling throughout, not just at the end
    assert {"critic/values_mean", "critic/lr", "critic/grad_norm"} <= set(logged)


def test_retrieved_tokens_and_prompt_carry_no_loss_in_actor_or_critic(policy_dir):
    """The values and rewards of retrieved and prompt positions are perturbed (as if the critic or a reward
    said anything there): neither the actor's nor the critic's gradient moves. A reward at one sampled
    position moves both (so the test can fail)."""
    config = config_for(policy_dir, "trainer.micro_batch_size=8")
    tokenizer = tiny_tokenizer()
    batch = episodes(tokenizer)
    actor, critic = Actor(config, Dist()), Critic(config, Dist(), tokenizer.pad_token_id)
    actor.compute_log_probs(batch, StepMetrics())
    critic.compute_values(batch, StepMetrics())
    assign_token_advantages(batch, config, Dist().sum_all)  # fills shapes; replaced below
    padded = collate(batch, tokenizer.pad_token_id, torch.device("cpu"))
    mask = padded.response_mask
    env = torch.zeros_like(mask)
    for row, e in enumerate(batch):  # the positions predicting a retrieved token
        env[row, : len(e.rollout.token_ids) - 1] = torch.tensor(e.rollout.env_mask[1:], dtype=torch.float32)
    assert env.sum() > 20 and (env * mask).sum() == 0
    values = torch.stack(
        [torch.nn.functional.pad(e.values, (0, mask.shape[1] - len(e.values))) for e in batch]
    )
    rewards = outcome_token_rewards(torch.tensor([e.score for e in batch]), mask)
    unsampled = (1 - mask) * torch.linspace(-50, 50, mask.numel()).reshape(mask.shape)
    one_sampled = torch.zeros_like(mask)
    one_sampled[0, int(mask[0].nonzero()[0])] = 3.0

    def gradients(reward_noise: torch.Tensor, value_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noisy_values = values + value_noise
        advantages, returns = gae_advantages(rewards + reward_noise, noisy_values, mask, 1.0, 1.0)
        for row, e in enumerate(batch):
            e.token_advantages, e.returns, e.values = advantages[row], returns[row], noisy_values[row]
        agg = {"global_tokens": float(mask.sum()), "global_seqs": 3.0}
        actor.optimizer.zero_grad()
        critic.optimizer.zero_grad()
        actor._micro_batch_loss(
            collate(batch, tokenizer.pad_token_id, torch.device("cpu")), batch, agg, StepMetrics()
        )[0].backward()
        critic.micro_batch_loss(collate(batch, tokenizer.pad_token_id, torch.device("cpu")), batch, agg)[
            0
        ].backward()
        flat = lambda model: torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])  # noqa: E731
        return flat(actor.policy), flat(critic.model)

    actor_grad, critic_grad = gradients(torch.zeros_like(mask), torch.zeros_like(mask))
    assert actor_grad.abs().sum() > 0 and critic_grad.abs().sum() > 0
    actor_noisy, critic_noisy = gradients(unsampled, (1 - mask) * 7.0 - unsampled)
    torch.testing.assert_close(actor_noisy, actor_grad, rtol=0, atol=1e-7)
    torch.testing.assert_close(critic_noisy, critic_grad, rtol=0, atol=1e-7)
    actor_moved, critic_moved = gradients(one_sampled, torch.zeros_like(mask))
    assert not torch.allclose(actor_moved, actor_grad) and not torch.allclose(critic_moved, critic_grad)
