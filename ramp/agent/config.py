"""Configuration of the agent: generation backend, rollout loop and search (``configs/agent.yaml``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ramp.config import StrictModel
from ramp.retrieval.env import SearchConfig


class HFBackendConfig(StrictModel):
    model: str = ""  # local path or hub name
    device: str = "auto"  # auto: cuda if available, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(default=16, ge=1)
    prefix_cache_gb: float = Field(default=4.0, ge=0)  # KV cache kept across calls; 0: no reuse


class VLLMBackendConfig(StrictModel):
    model: str = ""
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    max_model_len: int | None = None
    dtype: str = "auto"
    enable_prefix_caching: bool = True


class OpenAIBackendConfig(StrictModel):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key (unset: no auth header)
    max_concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)  # doubled after every failed try
    extra_body: dict[str, Any] = Field(default_factory=dict)  # server-specific fields, sent as is


class BackendConfig(StrictModel):
    kind: Literal["hf", "vllm", "openai"] = "hf"
    hf: HFBackendConfig = HFBackendConfig()
    vllm: VLLMBackendConfig = VLLMBackendConfig()
    openai: OpenAIBackendConfig = OpenAIBackendConfig()


class ContextConfig(StrictModel):
    """What the model reads in long rollouts: the prompt and every model segment always; the last
    ``keep_results`` result blocks whole, each older one in its short form (``older``: a marker, or the first
    sentence of each of its documents). The training sequences follow what the model read."""

    keep_results: int | None = Field(default=None, ge=1)  # None: every result block stays whole
    older: Literal["marker", "first_sentence"] = "first_sentence"


class RolloutConfig(StrictModel):
    max_turns: int = Field(default=8, ge=1, le=64)  # model turns; each but the last may end in a search
    max_new_tokens_per_turn: int = Field(default=512, ge=1)
    max_total_new_tokens: int = Field(default=4096, ge=1)  # model tokens over the whole rollout
    temperature: float = Field(default=0.0, ge=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1)  # rollouts per task (DAPO groups)
    seed: int = 0
    logprobs: bool = True  # record the sampled tokens' log-probs (a backend without them raises)
    end_of_turn_token: str | None = None  # default: the tokenizer's EOS
    context: ContextConfig = ContextConfig()

    @model_validator(mode="after")
    def _budgets(self) -> RolloutConfig:
        if self.max_new_tokens_per_turn > self.max_total_new_tokens:
            raise ValueError("max_new_tokens_per_turn exceeds max_total_new_tokens")
        return self


class AgentConfig(StrictModel):
    backend: BackendConfig = BackendConfig()
    rollout: RolloutConfig = RolloutConfig()
    search: SearchConfig = SearchConfig()
    prompts: str = "prompts"  # task prompt templates: recipe name or YAML path
