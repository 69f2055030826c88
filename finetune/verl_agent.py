"""RAMP's search agent inside verl's multi-turn rollout (runs where verl is installed: ``make verl-env``).

- :class:`RampSearchTool`, a verl ``BaseTool`` named ``search``: ``create`` opens one episode with the
  sample's exclusions (``create_kwargs={"exclude_doc_ids": [...]}``, from the row's
  ``extra_info.tools_kwargs``), ``execute`` searches a ``ramp serve-retriever`` through
  :class:`~ramp.retrieval.env.SearchEnv` (the same ``search:`` settings: documents per search, characters
  per document, documents budget) and returns the result block exactly as
  :func:`~ramp.agent.protocol.format_result_block` writes it, ``release`` drops the episode.
- :class:`RampAgentLoop` (``ramp_search``): RAMP's protocol, one assistant turn with inline result blocks
  (verl's ``tool_agent`` loop would put results in chat-template tool turns the policy never saw):
  generate until ``</search>`` or ``</answer>``, search, append the block as environment tokens
  (``response_mask`` 0), continue; after ``</answer>`` the end-of-turn token is appended (mask 0), as
  ``ramp.agent.rollout`` does.

verl loads both by name from the files ``ramp rl export-verl`` writes (``tool_config.yaml``,
``agent_loop.yaml``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from ramp.agent.backends.base import truncate_at_stop
from ramp.agent.parser import extract_last_search
from ramp.agent.protocol import (
    ANSWER_CLOSE,
    SEARCH_CLOSE,
    STOP_STRINGS,
    encode_prompt,
    encode_segment,
    end_of_turn_id,
    format_result_block,
)
from ramp.retrieval.env import SearchConfig, SearchEnv, SearchEpisode
from ramp.retrieval.http import HttpRetriever

TOOL_NAME = "search"
AGENT_LOOP_NAME = "ramp_search"
SEARCH_TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Search the corpus; returns the best passages as a <result> block.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The search query."}},
            "required": ["query"],
        },
    },
}


class RampSearchTool(BaseTool):
    """``config``: ``retriever_url`` and the ``search:`` section (``top_k``, ``max_chars_per_doc``,
    ``budget_docs``), optionally ``timeout_s``."""

    def __init__(self, config: dict[str, Any], tool_schema: OpenAIFunctionToolSchema | None = None):
        schema = tool_schema or OpenAIFunctionToolSchema.model_validate(SEARCH_TOOL_SCHEMA)
        super().__init__(config, schema)
        if not config.get("retriever_url"):
            raise ValueError("the search tool needs config.retriever_url (a ramp serve-retriever URL)")
        search = SearchConfig(
            **{k: config[k] for k in ("top_k", "max_chars_per_doc", "budget_docs") if k in config}
        )
        retriever = HttpRetriever(config["retriever_url"], timeout_s=float(config.get("timeout_s", 30.0)))
        self.env = SearchEnv(retriever, search, owns_retriever=True)
        self.episodes: dict[str, SearchEpisode] = {}

    async def create(
        self, instance_id: str | None = None, create_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[str, ToolResponse]:
        instance_id = instance_id or uuid4().hex
        excluded = (create_kwargs or {}).get("exclude_doc_ids")
        self.episodes[instance_id] = self.env.episode([str(d) for d in excluded if d] if excluded else ())
        return instance_id, ToolResponse()

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict[str, Any]]:
        episode = self.episodes[instance_id]
        query = parameters.get("query")
        (outcome,) = await asyncio.to_thread(
            self.env.search, [(episode, query if isinstance(query, str) else None)]
        )
        block = format_result_block(outcome.hits, status=outcome.status)
        return ToolResponse(text=block), 0.0, {"status": outcome.status, "hits": len(outcome.hits)}

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self.episodes.pop(instance_id, None)


@register(AGENT_LOOP_NAME)
class RampAgentLoop(AgentLoopBase):
    """One RAMP episode per call: model segments and result blocks in one assistant turn."""

    def __init__(self, *args: Any, tools: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        found = [t for t in (tools.tools if tools else []) if t.name == TOOL_NAME]
        if not found:
            raise ValueError(
                f"the {AGENT_LOOP_NAME} agent loop needs a tool named {TOOL_NAME!r}: set "
                "actor_rollout_ref.rollout.multi_turn.tool_config_path to the exported tool_config.yaml"
            )
        self.tool = found[0]
        self.max_turns = int(self.rollout_config.multi_turn.max_assistant_turns or 8)
        self.response_length = int(self.rollout_config.response_length)
        self.end_id = end_of_turn_id(self.tokenizer)
        self.eos_ids = {self.end_id, self.tokenizer.eos_token_id} - {None}

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        prompt_ids = self._cap_text_prompt_length(
            await self.loop.run_in_executor(None, encode_prompt, list(kwargs["raw_prompt"]), self.tokenizer)
        )
        tools_kwargs = kwargs.get("tools_kwargs") or {}
        instance_id, _ = await self.tool.create(
            create_kwargs=(tools_kwargs.get(TOOL_NAME) or {}).get("create_kwargs") or {}
        )
        request_id = uuid4().hex
        ids: list[int] = []
        mask: list[int] = []
        logprobs: list[float] = []
        timing = {"generate_sequences": 0.0, "tool_calls": 0.0}
        turns = searches = 0
        finish = "max_turns"
        try:
            while turns < self.max_turns:
                budget = self.response_length - len(ids)
                if budget < 1:
                    finish = "length"
                    break
                params = {
                    **sampling_params,
                    "stop": list(STOP_STRINGS),
                    "include_stop_str_in_output": True,
                    "max_tokens": budget,
                }
                start = time.perf_counter()
                out = await self.server_manager.generate(
                    request_id=request_id, prompt_ids=prompt_ids + ids, sampling_params=params
                )
                timing["generate_sequences"] += time.perf_counter() - start
                turns += 1
                new = list(out.token_ids)
                ids += new
                mask += [1] * len(new)
                logprobs += list(out.log_probs) if out.log_probs else [0.0] * len(new)
                if new and new[-1] in self.eos_ids:
                    finish = "eos"
                    break
                _, stop = truncate_at_stop(
                    self.tokenizer.decode(new, skip_special_tokens=False), STOP_STRINGS
                )
                if stop == ANSWER_CLOSE:
                    finish = "answer"
                    self._append(ids, mask, logprobs, [self.end_id])
                    break
                if stop != SEARCH_CLOSE:
                    finish = "length"
                    break
                if turns >= self.max_turns:
                    break
                query = extract_last_search(self.tokenizer.decode(new, skip_special_tokens=False))
                start = time.perf_counter()
                response, _, _ = await self.tool.execute(instance_id, {"query": query or ""})
                timing["tool_calls"] += time.perf_counter() - start
                searches += 1
                block = encode_segment(response.text or "", self.tokenizer)
                if len(ids) + len(block) + 2 > self.response_length:
                    finish = "context_full"
                    break
                self._append(ids, mask, logprobs, block)
        finally:
            await self.tool.release(instance_id)
        cut = self.response_length
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=ids[:cut],
            response_mask=mask[:cut],
            response_logprobs=logprobs[:cut] if sampling_params.get("logprobs") else None,
            num_turns=2 * turns,
            metrics=timing,
            extra_fields={"searches": searches, "finish_reason": finish},
        )

    @staticmethod
    def _append(ids: list[int], mask: list[int], logprobs: list[float], new: list[int]) -> None:
        """Environment tokens: no loss, no log-prob."""
        ids += new
        mask += [0] * len(new)
        logprobs += [0.0] * len(new)
