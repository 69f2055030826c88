"""RAMP's search inside verl (run in ``.venv-verl``; ``make test`` runs it there): the exported tool config
loaded by verl's tool registry, the tool's create/execute/release against a real ``ramp serve-retriever``
(exclusions honoured, output equal to ``SearchEnv``'s over the same index), and RAMP's agent loop,
instantiated as verl's agent-loop worker does, giving the same tokens and masks as ``ramp.agent.rollout``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("verl", reason="verl runs in its own environment: make verl-env (make test runs it)")

import hydra
import pyarrow.parquet as pq
from omegaconf import OmegaConf
from ramp.finetune.verl_agent import RampSearchTool
from tiny_model import ScriptedBackend, tiny_backend
from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
from verl.tools.tool_registry import initialize_tools_from_config, load_all_tools
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput
from verl_run import compose_stage, export_run, free_port

from ramp.agent.backends.base import GenerationRequest
from ramp.agent.config import RolloutConfig
from ramp.agent.protocol import NO_BUDGET, format_result_block
from ramp.agent.rollout import RolloutLoop
from ramp.agent.task import task_from_sample
from ramp.config import load_config
from ramp.data.samples import Sample
from ramp.retrieval.env import SearchConfig, SearchEnv
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever
from ramp.rl.config import RLConfig
from ramp.rl.verl import compute_score

SCRIPT = ["<search> Orla Vance</search>", "<answer>\n[1] Paris\n</answer>"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("verl-rollout")
    port = free_port()
    paths: dict[str, Any] = export_run(root, port)
    build_index([paths["corpus"]], paths["index"], threads=1, shards=1, progress=False)
    command = [sys.executable, "-m", "ramp", "serve-retriever", "--index", str(paths["index"])]
    server = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, env=dict(os.environ)
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "ramp serve-retriever did not start"
        time.sleep(0.2)
    lucene = LuceneRetriever(paths["index"], threads=1)
    settings = load_config(RLConfig, "rl", [f"retriever.index={paths['index']}"])
    try:
        yield {**paths, "url": url, "lucene": lucene, "search": settings.search}
    finally:
        lucene.close()
        server.terminate()
        server.wait(timeout=30)


def _row(out: Path, index: str) -> dict[str, Any]:
    rows = pq.read_table(out / "ramp-k1.parquet").to_pylist()
    return next(r for r in rows if r["extra_info"]["index"] == index)


def test_search_tool_create_execute_release_equals_search_env(run):
    (tool,) = initialize_tools_from_config(str(run["out"] / "tool_config.yaml"))  # verl's own loader
    assert isinstance(tool, RampSearchTool) and tool.name == "search"
    # the recipe's search: section, as `ramp rl train` uses it (the context limit is the agent loop's)
    assert tool.env.config == run["search"].model_copy(update={"max_context_tokens": None})
    row = _row(run["out"], "ramp:person-0")
    create_kwargs = row["extra_info"]["tools_kwargs"]["search"]["create_kwargs"]
    assert create_kwargs == {"exclude_doc_ids": ["p0"]}
    reference = SearchEnv(run["lucene"], run["search"])

    async def search(kwargs: dict[str, Any], query: str) -> str:
        instance, _ = await tool.create(create_kwargs=kwargs)
        response, reward, metrics = await tool.execute(instance, {"query": query})
        await tool.release(instance)
        assert reward == 0.0 and metrics["status"] == "ok"
        with pytest.raises(KeyError):  # released
            await tool.execute(instance, {"query": query})
        return response.text

    for query in ("Orla Vance", "Perrin Vale born", "Berlin"):
        excluded = asyncio.run(search(create_kwargs, query))
        (outcome,) = reference.search([(reference.episode(["p0"]), query)])
        assert excluded == format_result_block(outcome.hits, status=outcome.status)
    excluded = asyncio.run(search(create_kwargs, "Orla Vance"))
    everything = asyncio.run(search({}, "Orla Vance"))
    assert "Orla Vance was born in Paris" in everything  # the sample's own passage, p0 ...
    assert (
        "Orla Vance was born in Paris" not in excluded and "Orla Vance is from Paris" in excluded
    )  # ... hidden


def test_search_tool_budget_and_empty_query_as_search_env(run):
    config = SearchConfig(top_k=2, max_chars_per_doc=12, budget_docs=2)
    tool = RampSearchTool({"retriever_url": run["url"], **config.model_dump(exclude={"max_context_tokens"})})
    reference = SearchEnv(run["lucene"], config)
    episode = reference.episode(["p0"])

    async def episode_texts() -> list[str]:
        instance, _ = await tool.create(create_kwargs={"exclude_doc_ids": ["p0"]})
        texts = [
            (await tool.execute(instance, {"query": q}))[0].text for q in ("Orla Vance", "", "Paris", "x")
        ]
        await tool.release(instance)
        return texts

    texts = asyncio.run(episode_texts())
    expected = [reference.search([(episode, q)])[0] for q in ("Orla Vance", "", "Paris", "x")]
    assert texts == [format_result_block(o.hits, status=o.status) for o in expected]
    assert [o.status for o in expected] == ["ok", "no_query", "ok", "no_budget"] and NO_BUDGET in texts[-1]
    assert "…" in texts[0]  # cut to max_chars_per_doc like SearchEnv


class BackendServer:
    """verl's LLM-server interface (``generate(request_id, prompt_ids, sampling_params) -> TokenOutput``)
    over a RAMP generation backend: the tiny model, forced to spell its script (real forward passes)."""

    def __init__(self, backend: ScriptedBackend) -> None:
        self.backend = backend
        self.calls: list[dict[str, Any]] = []

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **_):
        self.calls.append(dict(sampling_params))
        request = GenerationRequest(
            prompt_ids=list(prompt_ids),
            max_new_tokens=sampling_params["max_tokens"],
            stop=tuple(sampling_params["stop"]),
            logprobs=True,
        )
        (result,) = self.backend.generate([request])
        return TokenOutput(token_ids=result.token_ids, log_probs=result.logprobs, stop_reason="completed")


def test_agent_loop_gives_the_ramp_rollout(run):
    policy = run["policy"]
    config = compose_stage(run["out"], "ramp-k1", [f"actor_rollout_ref.model.path={policy}"])
    rollout_config = config.actor_rollout_ref.rollout
    backend = ScriptedBackend(tiny_backend(), {" Vance": SCRIPT})
    tokenizer = backend.tokenizer
    dataset = RLHFDataset([str(run["out"] / "ramp-k1.parquet")], tokenizer, config.data)
    item = next(dataset[i] for i in range(len(dataset)) if dataset[i]["index"] == "ramp:person-0")
    kwargs = {k: v for k, v in item.items() if k in ("raw_prompt", "tools_kwargs", "extra_info", "index")}
    server = BackendServer(backend)

    async def run_agent_loop() -> Any:  # as verl's AgentLoopWorker._run_agent_loop builds and runs one
        (entry,) = OmegaConf.load(rollout_config.agent.agent_loop_config_path)
        assert entry.name == item["agent_name"] == rollout_config.agent.default_agent_loop
        loop = hydra.utils.instantiate(
            config=entry,
            trainer_config=DictConfigWrap(config=config),
            server_manager=server,
            tokenizer=tokenizer,
            processor=None,
            hf_model_type="qwen2",
            dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(config.data),
            tools=ToolListWrap(load_all_tools(rollout_config.multi_turn.tool_config_path, None)),
        )
        return await loop.run({"temperature": 1.0, "top_p": 1.0, "logprobs": True}, **kwargs)

    output = asyncio.run(run_agent_loop())
    assert [c["stop"] for c in server.calls] == [["</search>", "</answer>"]] * 2
    assert output.extra_fields == {"searches": 1, "finish_reason": "answer"}

    sample = next(
        Sample.from_row(r)
        for r in pq.read_table(next(run["samples"].glob("*.parquet"))).to_pylist()
        if r["sample_id"] == "person-0"
    )
    loop = RolloutLoop(
        backend,
        SearchEnv(run["lucene"], run["search"]),
        RolloutConfig(max_turns=rollout_config.multi_turn.max_assistant_turns, max_total_new_tokens=600),
    )
    (reference,) = loop.run([task_from_sample(sample)])
    assert reference.finish_reason == "answer" and reference.queries == ["Orla Vance"]
    start = len(reference.prompt_ids)
    assert output.prompt_ids == reference.prompt_ids
    assert output.response_ids == reference.token_ids[start:]
    assert output.response_mask == [int(m) for m in reference.sampled_mask[start:]]
    assert len(output.response_logprobs) == len(output.response_ids)
    text = tokenizer.decode(output.response_ids, skip_special_tokens=True)
    assert "Orla Vance is from Paris" in text and "was born in Paris" not in text
    truth = _row(run["out"], "ramp:person-0")["reward_model"]["ground_truth"]
    assert compute_score("ramp", text, truth)["score"] == pytest.approx(1.2)
