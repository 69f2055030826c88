"""Trajectories -> token ids with an assistant-only loss mask, and the tokenizer fingerprint of a shard set.

Tokens come from ``ramp.agent.protocol.render_trajectory``: the exact sequence the rollout loop produces
(each model/environment segment tokenized on its own), never a re-rendering with the chat template over
separate tool turns. The mask is aligned with the tokens (1 = the assistant produced the token: its
``<think>/<search>/<answer>`` text and its end-of-turn token; 0 = system, user, prompt scaffolding and
every ``<result>`` block). Training shifts: labels are ``tokens[1:]`` and the mask follows the labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ramp.agent.protocol import TAG_STRINGS, format_result_block, render_trajectory

SHARD_FORMAT = "ramp-packed-sft/1"


@dataclass(frozen=True)
class TokenizedConversation:
    sample_id: str
    input_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]  # aligned with input_ids

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenize_messages(
    sample_id: str,
    messages: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    end_of_turn_token: str | None = None,
) -> TokenizedConversation:
    """One trajectory's chat messages -> ids and the aligned assistant-only loss mask."""
    if not any(m.get("role") == "assistant" and m.get("content") for m in messages):
        raise ValueError("trajectory has no assistant message")
    rendered = render_trajectory(messages, tokenizer, end_of_turn_token=end_of_turn_token)
    return TokenizedConversation(
        sample_id, tuple(rendered.input_ids), tuple(int(m) for m in rendered.is_model_token)
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokenizer_fingerprint(tokenizer: Any, end_of_turn_token: str | None = None) -> dict[str, Any]:
    """What a shard set records about how it was tokenized: tokenizer, chat template and protocol."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    template = tokenizer.chat_template or ""
    protocol = "\x1f".join([*TAG_STRINGS, format_result_block([]), end_of_turn_token or "<eos>"])
    return {
        "format": SHARD_FORMAT,
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "tokenizer_sha256": _sha256(vocabulary),
        "vocab_size": len(tokenizer),
        "chat_template_sha256": _sha256(template),
        "protocol_sha256": _sha256(protocol),
        "end_of_turn_token": end_of_turn_token or tokenizer.eos_token,
    }


FINGERPRINT_KEYS = (
    "format",
    "tokenizer_sha256",
    "chat_template_sha256",
    "protocol_sha256",
    "end_of_turn_token",
)


def check_fingerprint(recorded: Mapping[str, Any], current: Mapping[str, Any], where: str) -> None:
    """Refuse shards made with another tokenizer, chat template or protocol."""
    bad = [k for k in FINGERPRINT_KEYS if recorded.get(k) != current.get(k)]
    if bad:
        raise ValueError(
            f"{where} was made with another tokenizer/template/protocol ({', '.join(bad)} differ: "
            f"shards from {recorded.get('tokenizer')!r}, training with {current.get('tokenizer')!r}); "
            "rebuild the shards with `ramp pretrain prepare` and this tokenizer"
        )
