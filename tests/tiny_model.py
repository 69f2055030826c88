"""The tiny policy of the tests and benchmarks, built by :mod:`ramp.train.init` (as ``ramp pretrain init``
builds one): a byte-level BPE tokenizer trained on the bundled wiki-18 sample, with the ChatML control
tokens, the chat template and (unless ``protocol_tokens=False``) the protocol tags as added tokens, and a
random Qwen2. ``ScriptedBackend`` wraps an ``HFBackend`` and forces the model (through a logits processor,
so every token still comes out of a real forward pass) to spell a scripted response, turn by turn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerFast, Qwen2ForCausalLM

from ramp.agent.backends.base import GenerationRequest, GenerationResult
from ramp.agent.backends.hf import HFBackend
from ramp.agent.protocol import RESULT_CLOSE
from ramp.train.init import InitModelConfig, random_model, train_tokenizer

DATA = Path(__file__).resolve().parent.parent / "data" / "wiki18-sample-1000.jsonl"


def corpus_lines(limit: int = 1000) -> list[str]:
    with open(DATA, encoding="utf-8") as f:
        return [json.loads(line)["contents"] for line in f][:limit]


@lru_cache(maxsize=4)
def tiny_tokenizer(
    vocab_size: int = 2000, protocol_tokens: bool = True, passages: int = 1000, extra: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """Trained on the first ``passages`` wiki-18 passages and ``extra`` texts (cached per process)."""
    return train_tokenizer([*corpus_lines(passages), *extra], "bpe", vocab_size, protocol_tokens)


def tiny_model(
    tokenizer: PreTrainedTokenizerFast, hidden: int = 64, layers: int = 2, seed: int = 0, **sizes: object
) -> Qwen2ForCausalLM:
    """A random Qwen2 (4 heads, 2 KV groups, tied embeddings); ``sizes``: other ``InitModelConfig`` fields."""
    config = InitModelConfig.model_validate(
        {
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_layers": layers,
            "num_heads": 4,
            "num_kv_heads": 2,
            "max_position_embeddings": 8192,
            "seed": seed,
            **sizes,
        }
    )
    return random_model(tokenizer, config)


def tiny_backend(hidden: int = 64, layers: int = 2, batch_size: int = 16) -> HFBackend:
    tokenizer = tiny_tokenizer()
    return HFBackend(tiny_model(tokenizer, hidden, layers), tokenizer, batch_size=batch_size, device="cpu")


class ForceTokens(LogitsProcessor):
    """Row i must continue with ``forced[i]`` (then EOS); rows with None sample freely."""

    def __init__(self, forced: Sequence[list[int] | None], eos_id: int) -> None:
        self.forced = forced
        self.eos_id = eos_id
        self.start: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.start is None:
            self.start = input_ids.shape[1]
        position = input_ids.shape[1] - self.start
        for row, ids in enumerate(self.forced):
            if ids is not None:
                token = ids[position] if position < len(ids) else self.eos_id
                scores[row] = float("-inf")
                scores[row, token] = 0.0
        return scores


class ScriptedBackend:
    """An ``HFBackend`` whose model spells ``scripts[key][turn]`` for prompts containing ``key``.

    The turn is the number of result blocks after the key; past the script's end the last
    segment repeats. Prompts without a key generate freely.
    """

    def __init__(self, inner: HFBackend, scripts: Mapping[str, Sequence[str]]) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.eos_ids, self.max_length = inner.eos_ids, inner.max_length
        self._close_id = self.tokenizer.convert_tokens_to_ids(RESULT_CLOSE)
        self._scripts = {
            tuple(self.tokenizer.encode(key, add_special_tokens=False)): [
                self.tokenizer.encode(seg, add_special_tokens=False) for seg in segments
            ]
            for key, segments in scripts.items()
        }

    def _forced(self, prompt_ids: list[int]) -> list[int] | None:
        for key, segments in self._scripts.items():
            at = _find(prompt_ids, key)
            if at is not None:
                turn = prompt_ids[at:].count(self._close_id)  # results after the key (the user turn)
                return segments[min(turn, len(segments) - 1)]
        return None

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return self.inner.generate(
            requests,
            processors_for_batch=lambda batch: [
                ForceTokens([self._forced(r.prompt_ids or []) for r in batch], self.tokenizer.eos_token_id)
            ],
        )


def _find(haystack: list[int], needle: tuple[int, ...]) -> int | None:
    n, first = len(needle), needle[0]
    return next(
        (i for i, t in enumerate(haystack) if t == first and tuple(haystack[i : i + n]) == needle), None
    )
