"""ZeroSearch's simulated search engine (``retriever.kind: simulated``): the noise curriculum against its
formula, a real HTTP endpoint as the simulator (prompts, parsing, seeded draws), ``ramp serve-retriever``
speaking the Search-R1 API over it, a small simulator fine-tuned by ``ramp sim prepare`` + ``ramp sim
train`` on real searches of a hand-made corpus (p = 0: every call useful, p = 1: every call noisy, judged
by containing the answer), the leak guard, and the RL trainer following the curriculum step by step."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from facts_corpus import PASSAGES, QUERIES, write_corpus, write_jsonl
from openai_server import ScriptedOpenAIServer

from ramp.config import load_config
from ramp.retrieval.config import RetrieverConfig, build_retriever
from ramp.retrieval.http import HttpRetriever
from ramp.retrieval.indexing import build_index
from ramp.retrieval.simulated import (
    NoiseConfig,
    SimulatedRetriever,
    SimulatorConfig,
    noise_probability,
    parse_documents,
)
from ramp.rl.config import RLConfig
from ramp.rl.trainer import RLTrainer

RAMP = [sys.executable, "-m", "ramp"]
TEXT = {title: f"{title} {text}" for _, title, text in PASSAGES}


def _holds(hit_text: str, answer: str) -> bool:
    return answer.lower() in hit_text.lower()


def test_the_noise_schedule_equals_the_formula_at_five_points() -> None:
    # p(t) = p_s + (b^(t/T) - 1) / (b - 1) * (p_e - p_s), ZeroSearch's b = 4, p_s = 0, p_e = 0.5, T = 200:
    # 4^0.25 = 1.414214, 4^0.5 = 2, 4^0.75 = 2.828427.
    expected = {0: 0.0, 50: 0.0690356, 100: 0.1666667, 150: 0.3047379, 200: 0.5}
    for step, p in expected.items():
        assert noise_probability(step, 200, 0.0, 0.5, 4.0) == pytest.approx(p, abs=1e-7)
    assert noise_probability(100, 200, 0.25, 0.5, 4.0) == pytest.approx(0.25 + 0.25 / 3)
    assert noise_probability(250, 200, 0.0, 0.5, 4.0) == 0.5  # past the end: p_end
    for bad in ((0, 0, 0.0, 0.5, 4.0), (-1, 10, 0.0, 0.5, 4.0), (0, 10, 0.0, 0.5, 1.0)):
        with pytest.raises(ValueError):
            noise_probability(*bad)


class Simulator:
    """An LLM stand-in serving as the simulator: useful prompts get the corpus passage naming the query's
    first word, noisy ones another passage; always one more document than asked (the client cuts)."""

    def __call__(self, path: str, body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        found = re.search(r"Query: (.*)\n(Useful|Noisy) Output:", prompt)
        k = int(re.search(r"Write (\d+) ", prompt).group(1))  # type: ignore[union-attr]
        assert found, prompt
        query, kind = found.groups()
        about = [t for t in TEXT if query.split()[0] in t]
        titles = (
            about + [t for t in TEXT if t not in about]
            if kind == "Useful"
            else [t for t in TEXT if t not in about]
        )
        return "\n".join(f"Doc {i} (Title: {t}): {TEXT[t]}" for i, t in enumerate(titles[: k + 1], start=1))


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ScriptedOpenAIServer]:
    with ScriptedOpenAIServer(Simulator()) as server:
        yield server


def _config(url: str, p: float = 0.0, p_end: float | None = None, **extra: Any) -> SimulatorConfig:
    noise = NoiseConfig(p_start=p, p_end=p if p_end is None else p_end)
    return SimulatorConfig(base_url=url, model="sim", max_retries=0, noise=noise, **extra)


def test_an_endpoint_writes_the_documents_prompted_useful_or_noisy(endpoint: ScriptedOpenAIServer) -> None:
    queries = [q for _, q, _ in QUERIES]
    retriever = SimulatedRetriever(_config(endpoint.base_url, 0.0))
    before = len(endpoint.requests)
    useful = retriever.search(queries, k=2)
    prompts = [r["body"]["messages"][-1]["content"] for r in endpoint.requests[before:]]
    assert all("Write 2 useful documents" in p and p.endswith("Useful Output:") for p in prompts)
    assert [len(hits) for hits in useful] == [2] * len(queries)  # the third document cut
    first = useful[0][0]
    assert (first.title, first.score) == ("Velmora Works", 2.0) and first.doc_id.startswith("sim:")
    assert useful == retriever.search(queries, k=2)  # seeded: the same documents again
    assert retriever.counts == {"useful": 16, "noisy": 0, "dropped_reproductions": 0}
    with pytest.raises(ValueError, match="cannot exclude documents by id"):
        retriever.search(queries[:1], k=2, exclude_doc_ids=[["velmora"]])
    retriever.close()
    noisy_engine = SimulatedRetriever(_config(endpoint.base_url, 1.0, unguarded_exclusions=True))
    noisy = noisy_engine.search(queries, k=2, exclude_doc_ids=[["velmora"]] * len(queries))
    assert all(
        not h.title.startswith(q.split()[0]) for q, hits in zip(queries, noisy, strict=True) for h in hits
    )
    assert noisy_engine.counts == {"useful": 0, "noisy": 8, "dropped_reproductions": 0}
    noisy_engine.close()


def test_draws_follow_the_probability_the_trainer_sets(endpoint: ScriptedOpenAIServer) -> None:
    retriever = SimulatedRetriever(_config(endpoint.base_url, 0.0, 0.5))
    queries = [f"query number {i}" for i in range(3000)]
    for step, total in ((0, 200), (100, 200), (200, 200)):
        p = retriever.set_step(step, total)
        assert p == noise_probability(step, total, 0.0, 0.5, 4.0)
        noisy = sum(retriever.kind_of(q, 3) == "noisy" for q in queries) / len(queries)
        assert noisy == pytest.approx(p, abs=0.025), (step, p, noisy)
    assert retriever.kind_of("a", 3) == retriever.kind_of("a", 3)  # one step, one query: one draw


def test_documents_are_parsed_from_what_a_simulator_writes() -> None:
    text = "Doc 1 (Title: A B): first text\ncontinued here\n\nDoc 2: second\nDoc 3(Title:C) third"
    assert parse_documents(text, 5) == [("A B", "first text continued here"), ("", "second"), ("C", "third")]
    assert parse_documents("no markers at all", 3) == [("", "no markers at all")]
    assert parse_documents("Doc 1: a\nDoc 2: b", 1) == [("", "a")]


def _serve(args: list[str], port: int, log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:
        server = subprocess.Popen(
            [*RAMP, "serve-retriever", *args, "--port", str(port)], stdout=out, stderr=out, text=True
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.terminate()
    raise AssertionError(log.read_text()[-3000:])


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_retriever_speaks_the_search_r1_api_over_a_simulator(
    endpoint: ScriptedOpenAIServer, tmp_path: Path
) -> None:
    port = _port()
    sets = [
        "retriever.kind=simulated",
        f"retriever.simulator.base_url={endpoint.base_url}",
        "retriever.simulator.model=sim",
    ]
    server = _serve([arg for s in sets for arg in ("--set", s)], port, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{url}/health").json()
        assert health["simulator"] == "openai" and health["noise_probability"] == 0.0
        body = httpx.post(
            f"{url}/retrieve", json={"queries": ["Dravia capital city"], "topk": 2, "return_scores": True}
        ).json()
        (hits,) = body["result"]
        assert len(hits) == 2 and hits[0]["score"] == 2.0
        document = hits[0]["document"]
        assert document["title"] == "Dravia" and document["contents"] == f'"Dravia"\n{document["text"]}'
        plain = httpx.post(f"{url}/retrieve", json={"queries": ["Dravia capital city"], "topk": 1}).json()
        assert plain["result"][0][0]["id"] == document["id"]
        with HttpRetriever(url) as client:  # the project's own client reads it like any Search-R1 server
            assert client.search(["Dravia capital city"], k=2)[0][0].text == document["text"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    bad = subprocess.run(
        [
            *RAMP,
            "serve-retriever",
            "--set",
            "retriever.kind=simulated",
            "--set",
            "retriever.simulator.base_url=http://127.0.0.1:9/v1",
            "--port",
            str(port),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "simulator endpoint http://127.0.0.1:9/v1 is not reachable" in bad.stderr


def _run(*args: str, cwd: Path) -> str:
    done = subprocess.run([*RAMP, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def local_simulator(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Real searches of the corpus -> pairs (``ramp sim prepare``) -> a tiny Qwen2 from scratch (``ramp
    pretrain init``) fine-tuned on them through the Megatron SFT stage (``ramp sim train``)."""
    root = tmp_path_factory.mktemp("simulator")
    build_index([write_corpus(root / "corpus.jsonl")], root / "index", threads=1, progress=False)
    rows = [{"id": i, "question": q, "golden_answers": [a]} for i, q, a in QUERIES]
    write_jsonl(
        root / "queries.jsonl",
        [*rows, {"id": "q9", "question": "Zarnoth harbour", "golden_answers": ["Nobody"]}],
    )
    said = _run(
        "sim",
        "prepare",
        "--questions",
        "queries.jsonl",
        "--output",
        "pairs",
        "--index",
        "index",
        "--set",
        "prepare.docs=1",
        cwd=root,
    )
    assert "9 queries -> 8 useful + 8 noisy pairs" in said and "answer_not_retrieved 1" in said, said
    _run(
        "pretrain",
        "init",
        "--corpus",
        "pairs",
        "--output",
        "init",
        "--tokenizer",
        "word",
        "--set",
        "model.hidden_size=64",
        "--set",
        "model.intermediate_size=128",
        cwd=root,
    )
    said = _run(
        "sim",
        "train",
        "--pairs",
        "pairs",
        "--output",
        "sim",
        *("--set", "model.hf=init", "--set", "prepare.seq_length=512", "--set", "prepare.num_shards=1"),
        *(
            "--set",
            "train.steps=300",
            "--set",
            "train.global_batch_size=2",
            "--set",
            "train.micro_batch_size=2",
        ),
        *("--set", "optim.lr=3e-3", "--set", "optim.min_lr=3e-4", "--set", "optim.warmup_steps=5"),
        *("--set", "optim.weight_decay=0", "--set", "checkpoint.save_interval=1000"),
        *("--set", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}"),
        cwd=root,
    )
    assert "16 pairs; trained to step 300" in said, said
    return {"root": root, "model": root / "sim" / "policy"}


def _local(model: Path, p: float, **extra: Any) -> SimulatedRetriever:
    config = SimulatorConfig(
        backend="hf",
        model=str(model),
        device="cpu",
        max_new_tokens=80,
        noise=NoiseConfig(p_start=p, p_end=p),
        **extra,
    )
    return SimulatedRetriever(config)


def test_a_simulator_fine_tuned_on_real_searches_is_useful_at_p0_and_noisy_at_p1(
    local_simulator: dict[str, Any],
) -> None:
    pairs = [
        json.loads(line) for line in (local_simulator["root"] / "pairs/pairs.jsonl").read_text().splitlines()
    ]
    assert {(p["query"], p["kind"]) for p in pairs} == {
        (q, k) for _, q, _ in QUERIES for k in ("useful", "noisy")
    }
    assert all(
        _holds(p["messages"][-1]["content"], p["answers"][0]) == (p["kind"] == "useful") for p in pairs
    )
    queries, answers = [q for _, q, _ in QUERIES], [a for _, _, a in QUERIES]
    for p, useful in ((0.0, True), (1.0, False)):
        retriever = _local(local_simulator["model"], p)
        found = retriever.search(queries, k=1)
        assert retriever.counts["useful" if useful else "noisy"] == len(queries)
        for query, answer, hits in zip(queries, answers, found, strict=True):
            assert len(hits) == 1, (query, hits)
            assert _holds(f"{hits[0].title} {hits[0].text}", answer) == useful, (p, query, hits)
        retriever.close()


def test_the_leak_guard_drops_a_generated_copy_of_an_excluded_passage(
    local_simulator: dict[str, Any],
) -> None:
    retriever = _local(local_simulator["model"], 0.0)  # sim-documents.jsonl beside the model: the guard is on
    (kept,), (dropped,) = (
        retriever.search(["Velmora Works headquarters"], k=1, exclude_doc_ids=[ids])
        for ids in ([], ["velmora"])
    )
    assert "Brenholt" in kept[0].text and dropped == []
    assert retriever.counts["dropped_reproductions"] == 1
    retriever.close()


def test_the_rl_trainer_follows_the_noise_curriculum_step_by_step(
    endpoint: ScriptedOpenAIServer, local_simulator: dict[str, Any], tmp_path: Path
) -> None:
    questions = write_jsonl(
        tmp_path / "qa.jsonl", [{"id": i, "question": q, "golden_answers": [a]} for i, q, a in QUERIES]
    )
    out = tmp_path / "rl"
    sets = {
        "policy.model": local_simulator["model"],  # any small causal LM will do as the policy here
        "data.task": "qa",
        "data.qa": questions,
        "retriever.kind": "simulated",
        "retriever.simulator.base_url": endpoint.base_url,
        "retriever.simulator.noise.p_start": 0.1,
        "retriever.simulator.noise.p_end": 0.7,
        "rollout.n": 2,
        "rollout.max_turns": 2,
        "rollout.max_new_tokens_per_turn": 8,
        "rollout.max_total_new_tokens": 16,
        "algorithm.filter_groups": "false",
        "algorithm.overlong.buffer": 4,
        "trainer.total_steps": 3,
        "trainer.train_batch_size": 2,
        "trainer.gen_batch_size": 2,
        "trainer.mini_batches": 1,
        "trainer.micro_batch_size": 4,
        "trainer.output_dir": out,
        "trainer.mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "trainer.progress": "false",
        "trainer.threads": 1,
        "backend.hf.device": "cpu",
    }
    config = load_config(RLConfig, "configs/rl.yaml", [f"{k}={v}" for k, v in sets.items()])
    trainer = RLTrainer(config)
    retriever = trainer.rollout.env.retriever
    assert isinstance(retriever, SimulatedRetriever)
    trainer.fit()
    logged = [
        json.loads(line)["search/noise_probability"]
        for line in (out / "history.jsonl").read_text().splitlines()
    ]
    assert logged == [pytest.approx(noise_probability(t, 3, 0.1, 0.7, 4.0)) for t in range(3)]
    assert retriever.noise_probability == pytest.approx(logged[-1])


def test_the_retriever_factory_and_checks(endpoint: ScriptedOpenAIServer, tmp_path: Path) -> None:
    config = RetrieverConfig(kind="simulated", simulator=_config(endpoint.base_url))
    retriever = build_retriever(config)
    assert isinstance(retriever, SimulatedRetriever)
    retriever.close()
    with pytest.raises(ValueError, match=r"needs simulator\.model"):
        SimulatorConfig(backend="hf")
    with pytest.raises(ValueError, match="base must not be 1"):
        NoiseConfig(base=1.0)
