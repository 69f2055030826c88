"""Typed configuration of the RL trainer (``configs/rl.yaml``): DAPO/GRPO, or PPO with a value model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ramp.agent.config import BackendConfig, RolloutConfig
from ramp.config import StrictModel
from ramp.retrieval.config import RetrieverConfig
from ramp.retrieval.env import SearchConfig
from ramp.rewards import RewardConfig
from ramp.rl.core_algos import AggMode, get_adv_estimator, get_kl_penalty, get_policy_loss, needs_critic
from ramp.rl.curriculum import CurriculumConfig
from ramp.train.health import HealthConfig


class PolicyConfig(StrictModel):
    model: str = ""  # an HF checkpoint directory (e.g. converted from the Megatron stage)
    dtype: Literal["float32", "bfloat16"] = "float32"
    gradient_checkpointing: bool = False


class OverlongConfig(StrictModel):
    enable: bool = True
    max_length: int | None = Field(default=None, ge=1)  # None: rollout.max_total_new_tokens
    buffer: int = Field(default=512, ge=1)
    factor: float = Field(default=1.0, ge=0)


class AlgorithmConfig(StrictModel):
    adv_estimator: str = "grpo"  # grpo | gae (reads the critic's values: critic.enable)
    adv_eps: float = Field(default=1e-6, gt=0)
    gamma: float = Field(default=1.0, ge=0, le=1)  # gae: discount
    lam: float = Field(default=1.0, ge=0, le=1)  # gae: lambda
    policy_loss: str = "dapo"
    loss_agg_mode: AggMode = "token-mean"
    clip_low: float = Field(default=0.2, ge=0, lt=1)
    clip_high: float = Field(default=0.28, ge=0)
    clip_c: float | None = Field(default=3.0, gt=1)  # dual clip; None disables
    kl_coef: float = Field(default=0.0, ge=0)  # 0: no KL term and no reference model
    kl_penalty: str = "low_var_kl"  # the KL estimator of the loss term and of the reward term
    kl_in_reward: float = Field(default=0.0, ge=0)  # > 0: minus this × KL per sampled token in the reward
    entropy_coef: float = Field(default=0.0, ge=0)
    filter_groups: bool = True  # dynamic sampling
    filter_metric: Literal["answer", "total", "format"] = "answer"  # the score before shaping
    max_num_gen_batches: int = Field(default=10, ge=0)  # 0: unlimited
    overlong: OverlongConfig = OverlongConfig()


class CriticConfig(StrictModel):
    """The value model of PPO with GAE: the policy checkpoint's trunk (or ``model``'s, same tokenizer) with
    a fresh scalar head, trained on the same rollouts with its own optimizer."""

    enable: bool = False
    model: str = ""  # an HF checkpoint directory; empty: policy.model
    lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=0, ge=0)  # LR warmup, in trainer steps
    grad_clip: float = Field(default=1.0, gt=0)
    value_clip: float = Field(default=0.5, gt=0)  # new values stay within ± this of the rollout's
    head_start_steps: int = Field(
        default=0, ge=0
    )  # first steps that train only the critic (verl: critic_warmup)


class RLDataConfig(StrictModel):
    task: Literal["ramp", "qa"] = "ramp"
    samples: str = ""  # ramp: a directory of samples-*.parquet (or one file)
    qa: str = ""  # qa: a JSONL of {"id", "question", "golden_answers"}
    prompts: str = "prompts"  # prompt templates: recipe name or YAML path


class TrainerConfig(StrictModel):
    total_steps: int = Field(default=200, ge=1)
    train_batch_size: int = Field(default=32, ge=1)  # prompt groups per step (after filtering)
    gen_batch_size: int = Field(default=48, ge=1)  # prompts per generation batch
    ppo_epochs: int = Field(default=1, ge=1)
    mini_batches: int = Field(default=2, ge=1)  # optimizer steps per epoch
    micro_batch_size: int = Field(default=8, ge=1)  # sequences per forward/backward
    lr: float = Field(default=1e-6, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    seed: int = 0
    output_dir: str = "runs/rl"
    save_every: int = Field(default=10, ge=1)  # steps between checkpoints (the last step always saves)
    resume: bool = True  # continue from output_dir/checkpoint when it exists
    experiment: str = "ramp-rl"
    run_name: str | None = None
    mlflow_uri: str | None = None
    progress: bool = True
    threads: int | None = Field(default=None, ge=1)  # torch CPU threads; None: torch's default
    health: HealthConfig = HealthConfig()  # non-finite loss/gradients, entropy collapse, length blow-up


class RLConfig(StrictModel):
    policy: PolicyConfig = PolicyConfig()
    backend: BackendConfig = BackendConfig()  # the rollout engine; hf.model / vllm.model default to policy
    rollout: RolloutConfig = RolloutConfig(n=8, temperature=1.0)
    retriever: RetrieverConfig
    search: SearchConfig = SearchConfig(top_k=3)
    reward: RewardConfig = RewardConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    critic: CriticConfig = CriticConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    data: RLDataConfig = RLDataConfig()
    trainer: TrainerConfig = TrainerConfig()

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        if self.backend.kind == "openai":
            raise ValueError("backend.kind 'openai' cannot receive trained weights: use hf or vllm")
        algo = self.algorithm
        for lookup, name in (
            (get_adv_estimator, algo.adv_estimator),
            (get_policy_loss, algo.policy_loss),
            (get_kl_penalty, algo.kl_penalty),
        ):
            lookup(name)  # an unknown name fails here, before anything runs
        if needs_critic(algo.adv_estimator) and not self.critic.enable:
            raise ValueError(
                f"algorithm.adv_estimator {algo.adv_estimator!r} reads a value model: set critic.enable=true"
            )
        if self.critic.enable and not needs_critic(algo.adv_estimator):
            raise ValueError(
                f"critic.enable: algorithm.adv_estimator {algo.adv_estimator!r} reads no values (use gae)"
            )
        if self.rollout.n < 2 and algo.adv_estimator == "grpo":
            raise ValueError("rollout.n must be >= 2 for group advantages")
        if self.rollout.n < 2 and algo.filter_groups:
            raise ValueError(
                "algorithm.filter_groups keeps groups whose scores differ: it needs rollout.n >= 2 "
                "(or set algorithm.filter_groups=false)"
            )
        if self.rollout.temperature <= 0:
            raise ValueError("rollout.temperature must be > 0 for RL (greedy groups have no spread)")
        return self
