"""The agent's text protocol and its token rendering.

The model writes ``<think>…</think>``, ``<search>query</search>`` and finally ``<answer>…</answer>``;
after each search the environment inserts a result block (:func:`format_result_block`) that the model
never writes. A whole rollout is ONE assistant turn (Search-R1 style)::

    chat_template(system, user, add_generation_prompt=True)   prompt          (environment)
    model segment  ... <search>q</search>                     generated ids   (model)
    result block   \\n<result>\\n[1] Title\\ntext\\n</result>\\n  tokenized     (environment)
    model segment  ... <answer>\\n[1] fill\\n</answer>          generated ids   (model)
    end-of-turn token                                         (model: SFT learns to stop)

Token boundaries: every segment is tokenized on its own (``add_special_tokens=False``) and the ids are
concatenated, exactly as the rollout loop does, so a BPE merge never spans a model/environment boundary
and the loss mask is exact. :func:`render_trajectory` applies the same rule to chat messages
(``[system, user, assistant, tool, assistant, …, assistant]``, tool contents = result blocks), so a
rollout converted with ``Rollout.to_messages()`` renders back to its own ids whenever the model's ids are
the tokenizer's canonical encoding of their text (always true for SFT data built from text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ramp.agent.parser import PROTOCOL_TAG
from ramp.retrieval.base import Hit
from ramp.retrieval.env import SearchStatus
from ramp.retrieval.env import shown_text as shown_text  # re-exported: ramp.cot.reading imports it here

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = ("think", "search", "result", "answer")
TAG_STRINGS = tuple(s for t in TAGS for s in (f"<{t}>", f"</{t}>"))
STOP_STRINGS = (SEARCH_CLOSE, ANSWER_CLOSE)
NO_RESULTS = "No results."
NO_BUDGET = "Search budget exhausted: answer with what you have."
NO_QUERY = "No query: write the query inside <search> and </search>."
DROPPED = "(an earlier result, dropped)"

ESCAPED_OPEN = "&lt;"
_EMPTY_TEXT: dict[SearchStatus, str] = {"ok": NO_RESULTS, "no_query": NO_QUERY, "no_budget": NO_BUDGET}


def neutralize_tags(text: str) -> str:
    """``text`` with every marker the parser would read as a tag (any spacing, case or Unicode case
    folding, e.g. ``< /RESULT >``) defused by writing its ``<`` as ``&lt;``. Only those ``<`` change, and
    the replacement holds no ``<``, so the output contains no tag at all."""
    return PROTOCOL_TAG.sub(lambda m: ESCAPED_OPEN + m.group(0)[1:], text)


def format_result_block(hits: Sequence[Hit], *, status: SearchStatus = "ok") -> str:
    """The environment text inserted after a search: ``\\n<result>\\n[1] Title\\ntext\\n…</result>\\n``.

    ``hits`` are the search environment's shown hits (already cut to ``search.max_chars_per_doc``).
    The block carries its own surrounding newlines, so a tool message's content is exactly the inserted
    text. Documents are numbered from 1. Retrieved text can never open or close a protocol tag
    (:func:`neutralize_tags` runs over the whole body, so no tag can form across a title/text seam either).
    Without hits the block says why (no results, no query, no budget left).
    """
    if not hits:
        body = _EMPTY_TEXT[status]
    else:
        body = "\n".join(
            f"[{i}] {' '.join(hit.title.split())}\n{' '.join(hit.text.split())}"
            for i, hit in enumerate(hits, start=1)
        )
    return f"\n{RESULT_OPEN}\n{neutralize_tags(body)}\n{RESULT_CLOSE}\n"


def first_sentence(text: str) -> str:
    """``text`` up to its first sentence end (``.``, ``!`` or ``?`` before a space), whitespace collapsed."""
    text = " ".join(text.split())
    match = re.search(r"[.!?](?=\s)", text)
    return text[: match.end()] if match else text


def short_result_block(hits: Sequence[Hit], *, status: SearchStatus = "ok", older: str = "marker") -> str:
    """An older result block as the model reads it once newer ones push it out of the whole window:
    ``marker`` (one line saying it was dropped), or ``first_sentence`` (each document's title and first
    sentence). A block without hits keeps its one line."""
    if older == "first_sentence" and hits:
        short = [Hit(h.doc_id, h.title, first_sentence(h.text), h.score) for h in hits]
        return format_result_block(short, status=status)
    if not hits:
        return format_result_block(hits, status=status)
    return f"\n{RESULT_OPEN}\n{DROPPED}\n{RESULT_CLOSE}\n"


@dataclass(frozen=True)
class RenderedTrajectory:
    input_ids: list[int]
    is_model_token: list[bool]
    prompt_length: int  # tokens of system + user + generation prompt

    @property
    def num_model_tokens(self) -> int:
        return sum(self.is_model_token)


def encode_prompt(messages: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[int]:
    """System + user messages through the chat template, ending with the assistant generation prompt."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_segment(text: str, tokenizer: Any) -> list[int]:
    """One model or environment segment, tokenized on its own."""
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def end_of_turn_id(tokenizer: Any, token: str | None = None) -> int:
    """Id of the token that closes the assistant turn (``token`` or the tokenizer's EOS)."""
    token_id = tokenizer.convert_tokens_to_ids(token) if token else tokenizer.eos_token_id
    if token_id is None or (token and token_id == tokenizer.unk_token_id):
        raise ValueError(f"tokenizer has no end-of-turn token {token or 'eos'!r}")
    return int(token_id)


def render_trajectory(
    messages: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    end_of_turn: bool = True,
    end_of_turn_token: str | None = None,
) -> RenderedTrajectory:
    """Chat messages -> token ids and the model-token (loss) mask, as the rollout loop produces them.

    Messages before the first ``assistant`` form the prompt; after it, ``assistant`` contents are model
    tokens and ``tool`` contents (result blocks) environment tokens, all inline in one assistant turn.
    ``end_of_turn`` appends the end-of-turn token (a model token) for a finished trajectory.
    """
    first = next((i for i, m in enumerate(messages) if m["role"] in ("assistant", "tool")), len(messages))
    if first == 0:
        raise ValueError("trajectory has no prompt messages before the assistant turn")
    ids = encode_prompt(messages[:first], tokenizer)
    mask = [False] * len(ids)
    prompt_length = len(ids)
    for message in messages[first:]:
        role = message["role"]
        if role not in ("assistant", "tool"):
            raise ValueError(f"unexpected {role!r} message inside the assistant turn")
        segment = encode_segment(message["content"], tokenizer)
        ids += segment
        mask += [role == "assistant"] * len(segment)
    if end_of_turn:
        ids.append(end_of_turn_id(tokenizer, end_of_turn_token))
        mask.append(True)
    return RenderedTrajectory(input_ids=ids, is_model_token=mask, prompt_length=prompt_length)
