"""Configuration of Megatron-core RAMP pretraining (``configs/pretrain.yaml``): shards, model, training,
checkpoints, tracking and the multi-node launcher."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ramp.config import StrictModel
from ramp.train.health import HealthConfig


class PrepareConfig(StrictModel):
    """``ramp pretrain prepare``: trajectories -> packed token + loss-mask shards."""

    seq_length: int = Field(default=4096, ge=8)  # training sequence length (a row holds seq_length + 1)
    num_shards: int = Field(default=4, ge=1)
    end_of_turn_token: str | None = None  # default: the tokenizer's EOS (Qwen2 chat: <|im_end|>)


class TrainDataConfig(StrictModel):
    """Training data: megatron's blend ``[w1, prefix_or_dir1, w2, prefix_or_dir2, ...]``."""

    blend: list[str] = Field(default_factory=lambda: ["1.0", "runs/pretrain/shards"], min_length=1)
    cache_dir: str | None = None  # megatron's dataset index cache (None: built in memory)

    @field_validator("blend", mode="before")
    @classmethod
    def _weights_as_text(cls, value: Any) -> Any:
        """YAML reads ``[0.3, a, 0.7, b]`` weights as numbers; megatron's convention is a list of strings."""
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value]
        return value


class ModelConfig(StrictModel):
    hf: str = "Qwen/Qwen2.5-0.5B"  # Hugging Face dir: its config.json (and tokenizer) define the model
    init: Literal["hf", "random", "mcore"] = "hf"  # weights from `hf`, random, or the `load` checkpoint
    load: str | None = None  # a megatron checkpoint (`ramp pretrain convert hf-to-mcore`) when init=mcore
    tokenizer: str | None = None  # default: `hf`; must match the shards' manifest


class ParallelConfig(StrictModel):
    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = False  # GPU only (megatron's optimizer)
    recompute: bool = False  # full activation recomputation, GPU only


class OptimConfig(StrictModel):
    lr: float = Field(default=1e-5, gt=0)
    min_lr: float = Field(default=1e-6, ge=0)
    warmup_steps: int = Field(default=100, ge=0)
    weight_decay: float = Field(default=0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = Field(default=1.0, gt=0)


class TrainConfig(StrictModel):
    steps: int = Field(default=2000, ge=1)  # the schedule's length (cosine decay ends here)
    stop_at: int | None = Field(default=None, ge=1)  # stop (and save) after this step, e.g. a time-boxed job
    micro_batch_size: int = Field(default=1, ge=1)
    global_batch_size: int = Field(default=64, ge=1)  # rows per optimizer step, over all DP ranks
    seed: int = 1234
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    # loss: output layer + cross entropy at loss-carrying positions only; all: at every position (same loss)
    logits: Literal["loss", "all"] = "loss"
    health: HealthConfig = Field(
        default_factory=HealthConfig
    )  # non-finite loss or gradient norm: stop | skip


class CheckpointConfig(StrictModel):
    dir: str = "runs/pretrain/checkpoints"
    save_interval: int = Field(default=500, ge=1)
    resume: bool = True  # continue from the latest checkpoint in `dir` when there is one


class TrackingConfig(StrictModel):
    experiment: str = "ramp-pretrain"
    run_name: str | None = None
    log_interval: int = Field(default=10, ge=1)
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite runs/mlflow.db


class LaunchConfig(StrictModel):
    """`ramp pretrain launch`: torchrun on one node, a Slurm script for many."""

    nodes: int = Field(default=1, ge=1)
    gpus_per_node: int = Field(default=8, ge=1)
    partition: str | None = None
    account: str | None = None
    time: str = "24:00:00"
    master_port: int = 29500
    container_image: str | None = None
    script: str = "runs/pretrain/launch.sbatch"


class PretrainConfig(StrictModel):
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    launch: LaunchConfig = Field(default_factory=LaunchConfig)

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.model.init == "mcore" and not self.model.load:
            raise ValueError("model.init=mcore needs model.load (a megatron checkpoint)")
        if self.train.global_batch_size % self.train.micro_batch_size:
            raise ValueError("train.global_batch_size must be a multiple of train.micro_batch_size")
        return self

    @property
    def tokenizer(self) -> str:
        return self.model.tokenizer or self.model.hf

    def data_parallel_size(self, world_size: int) -> int:
        return world_size // (self.parallel.tp * self.parallel.pp)

    def grad_accumulation(self, world_size: int) -> int:
        """Micro-batches per rank per step; the global batch must split evenly over DP ranks."""
        dp = self.data_parallel_size(world_size)
        per_step = self.train.micro_batch_size * dp
        if self.train.global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size={self.train.global_batch_size} is not a multiple of "
                f"micro_batch_size × DP = {self.train.micro_batch_size} × {dp}"
            )
        return self.train.global_batch_size // per_step
