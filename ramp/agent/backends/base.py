"""The generation-backend interface shared by the hf, vllm and openai backends.

Log-probabilities mean one thing in every backend: the log-probability of the sampled token under the
distribution it was sampled from, i.e. after the logits processors, temperature and top-p (hf: computed
from the final sampling scores; vLLM: ``logprobs_mode="processed_logprobs"``; an OpenAI-compatible
``vllm serve`` needs ``--logprobs-mode processed_logprobs``). Greedy decoding (temperature 0) records the
processed distribution at temperature 1. Token-level backends declare ``eos_ids`` and ``max_length``
(the model's maximum context, or None) and take new weights with ``update_weights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

GenerationStop = Literal["stop", "length", "eos"]  # why one generation call ended


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One continuation: from token ids (token-level backends, completions) or chat messages."""

    prompt_ids: list[int] | None = None
    messages: list[dict[str, str]] | None = None
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    logprobs: bool = False  # return the sampled tokens' log-probs (a backend that cannot raises)

    def __post_init__(self) -> None:
        if (self.prompt_ids is None) == (self.messages is None):
            raise ValueError("a GenerationRequest needs exactly one of prompt_ids and messages")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class GenerationResult:
    """The continuation. ``text`` ends with ``stop_string`` when one stopped it (finish_reason ``stop``).

    ``token_ids`` are the generated ids (for token-level backends; empty where the backend only sees
    text); a stop string may end inside the last id, so ``decode(token_ids)`` can run a few characters
    past ``text``. ``logprobs[i]`` is the log-probability of ``token_ids[i]`` (see the module docstring;
    None when not requested). The EOS id, when generated, is the last of ``token_ids``, not in ``text``.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float] | None
    finish_reason: GenerationStop
    stop_string: str | None = None


@runtime_checkable
class GenerationBackend(Protocol):
    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order."""
        ...


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` after the earliest stop string (inclusive); returns the text and the stop found."""
    best: tuple[int, str] | None = None
    for stop in stops:
        index = text.find(stop) if stop else -1
        if index >= 0 and (best is None or index + len(stop) < best[0] + len(best[1])):
            best = (index, stop)
    if best is None:
        return text, None
    return text[: best[0] + len(best[1])], best[1]
