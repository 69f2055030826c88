"""Generation backends. torch and transformers (seconds to import) load here, on first use: the Beam
workers of a builtin or openai teacher never need them."""

from __future__ import annotations

from typing import Any

from ramp.agent.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from ramp.agent.backends.openai import OpenAIBackend
from ramp.agent.backends.vllm import VLLMBackend
from ramp.agent.config import BackendConfig

__all__ = ["GenerationBackend", "GenerationRequest", "GenerationResult", "build_backend", "load_tokenizer"]


def build_backend(config: BackendConfig) -> GenerationBackend:
    """The backend named by ``config.kind``, configured from its section."""
    if config.kind == "hf":
        from ramp.agent.backends.hf import HFBackend  # noqa: PLC0415

        return HFBackend.from_config(config.hf)
    if config.kind == "vllm":
        return VLLMBackend(config.vllm)
    return OpenAIBackend(config.openai)


def load_tokenizer(name: str) -> Any:
    """``transformers.AutoTokenizer.from_pretrained(name)``."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    return AutoTokenizer.from_pretrained(name)
