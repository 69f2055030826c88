"""ZeroSearch, WebDancer and AceSearcher end to end at CI size (``ramp.cli.recipes.run_recipe``): each
recipe file's stages, in order, on a tiny world (the hand-made facts corpus, a real Lucene index, a tiny
Qwen2 from ``ramp pretrain init``), with only sizes overridden. Trajectories come from a test teacher
that searches the real index along each question's known path (one query for the fact questions, the
synthesis chain for the E2HQA ones) and answers the gold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from facts_corpus import QUERIES, SEEDS, write_corpus, write_jsonl
from ramp.eval.run import run_eval
from ramp.pipelines.synthesize import run_synthesize
from rl_task import PROMPTS
from transformers import AutoModelForCausalLM, AutoTokenizer

from ramp.agent.protocol import format_result_block, render_trajectory
from ramp.agent.task import task_from_qa
from ramp.cli.recipes import STATE_DIR, RecipeData, StageRun, run_recipe
from ramp.config import load_config
from ramp.cot.trajectories import TRAJECTORY_SCHEMA, Trajectory, read_trajectories
from ramp.data.synthesis import SynthesisSettings
from ramp.prompts import PromptTemplates
from ramp.qa.config import EvalConfig
from ramp.recipes import load_recipe
from ramp.retrieval.env import SearchConfig, SearchEnv
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever
from ramp.retrieval.simulated import noise_probability
from ramp.train.init import InitConfig, InitModelConfig, init_policy

SEARCH = SearchConfig(top_k=1, max_chars_per_doc=120)
SFT = ["prepare.seq_length=512", "train.steps=4", "optim.lr=3e-3", "optim.warmup_steps=2"]
RL = [
    "rollout.n=3",
    "rollout.max_turns=3",
    "rollout.max_new_tokens_per_turn=16",
    "rollout.max_total_new_tokens=40",
    "search.top_k=1",
    "search.max_chars_per_doc=120",
    "trainer.total_steps=2",
    "trainer.train_batch_size=2",
    "trainer.gen_batch_size=2",
    "trainer.threads=1",
    "backend.hf.device=cpu",
]


def _trajectory(
    row: dict[str, Any], queries: list[str], env: SearchEnv, templates: PromptTemplates
) -> Trajectory:
    """Search each query in the real index, then answer the first gold."""
    task = task_from_qa(row, templates)
    messages, found = [dict(m) for m in task.messages], []
    for query in queries:
        outcome = env.search([(env.episode(), query)])[0]
        messages += [
            {"role": "assistant", "content": f"<search> {query}</search>"},
            {"role": "tool", "content": format_result_block(outcome.hits, status=outcome.status)},
        ]
        found.append(tuple(h.doc_id for h in outcome.hits))
    answer = row["golden_answers"][0]
    messages.append({"role": "assistant", "content": f"<answer> {answer}</answer>"})
    return Trajectory(
        sample_id=str(row["id"]),
        kind="qa",
        teacher="path",
        teacher_model="",
        round=0,
        messages=tuple(messages),
        answer=answer,
        fills=(),
        golds=tuple(row["golden_answers"]),
        score=1.0,
        reward=1.0,
        verified=True,
        num_masks=0,
        queries=tuple(queries),
        retrieved_doc_ids=tuple(found),
        exclude_doc_ids=(),
    )


def _write_trajectories(trajectories: list[Trajectory], directory: Path) -> Path:
    directory.mkdir(parents=True)
    table = pa.Table.from_pylist([t.to_row() for t in trajectories], schema=TRAJECTORY_SCHEMA)
    pq.write_table(table, directory / "trajectories-00000-of-00001.parquet")
    return directory


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The facts corpus and its index; fact questions (one search each) and E2HQA questions synthesized
    from the seeds by the real job, each with trajectories; a tiny policy from scratch."""
    root = tmp_path_factory.mktemp("recipe-world")
    corpus = write_corpus(root / "corpus.jsonl")
    build_index([corpus], root / "index", threads=1, progress=False)
    (root / "prompts.yaml").write_text(json.dumps(PROMPTS), encoding="utf-8")
    templates = PromptTemplates(**PROMPTS)
    qa = [{"id": i, "question": f"{q}?", "golden_answers": [a]} for i, q, a in QUERIES]
    write_jsonl(root / "qa.jsonl", qa)
    settings = SynthesisSettings.model_validate(
        {"retriever": {"kind": "lucene", "index": str(root / "index")}}
    )
    write_jsonl(root / "seeds.jsonl", SEEDS)
    run_synthesize(root / "seeds.jsonl", root / "synth", settings)
    synthesized = [json.loads(line) for line in (root / "synth/questions-00000-of-00001.jsonl").open()]
    assert len(synthesized) == 2  # s1 and s2 at two hops (tests/test_synthesis.py)
    write_jsonl(root / "synthesized.jsonl", synthesized)
    env = SearchEnv(LuceneRetriever(root / "index", threads=1), SEARCH, owns_retriever=True)
    try:
        qa_trajectories = [
            _trajectory(r, [q], env, templates) for r, (_, q, _) in zip(qa, QUERIES, strict=True)
        ]
        chains = [
            [hop["description"] for hop in reversed(r["metadata"]["chain"])]
            + [r["metadata"]["seed_question"]]
            for r in synthesized
        ]
        synth_trajectories = [
            _trajectory(r, c, env, templates) for r, c in zip(synthesized, chains, strict=True)
        ]
    finally:
        env.close()
    model = InitModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2)
    init_policy(
        [corpus, root / "qa.jsonl", root / "synthesized.jsonl"],
        root / "init",
        InitConfig(tokenizer="word", vocab_size=2000, model=model),
    )
    data = RecipeData(
        index=str(root / "index"),
        qa=str(root / "qa.jsonl"),
        qa_trajectories=str(_write_trajectories(qa_trajectories, root / "qa-trajectories")),
        synthesized=str(root / "synthesized.jsonl"),
        synthesized_trajectories=str(_write_trajectories(synth_trajectories, root / "synth-trajectories")),
        prompts=str(root / "prompts.yaml"),
    )
    return {"root": root, "data": data, "init": root / "init", "uri": f"sqlite:///{root / 'mlflow.db'}"}


def _stage_config(stage: StageRun) -> dict[str, Any]:
    """The resolved config a recipe stage ran with (its ``ramp.stages`` marker)."""
    marker = stage.output.parent / STATE_DIR / f"{stage.output.name}.json"
    config: dict[str, Any] = json.loads(marker.read_text())["settings"]["config"]
    return config


def _history(directory: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (directory / "history.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def _changed(before: Path, after: Path) -> bool:
    a, b = _weights(before), _weights(after)
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_zerosearch_trains_against_its_simulator_and_answers_from_the_real_index(
    world: dict[str, Any], tmp_path: Path
) -> None:
    overrides = {
        "simulator": SFT,
        "grpo": [*RL, "retriever.simulator.max_new_tokens=24", "retriever.simulator.device=cpu"],
    }
    run = run_recipe(
        "zerosearch", world["init"], tmp_path / "run", world["data"], overrides, tracking_uri=world["uri"]
    )
    simulator, grpo = run.stages
    assert (simulator.kind, grpo.kind, run.inference) == ("simulator", "qa_rl", "agent")
    assert simulator.policy == world["init"]  # the simulator stage leaves the policy as it was
    stats = json.loads((simulator.output / "pairs" / "stats.json").read_text())
    assert (stats["pairs_useful"], stats["pairs_noisy"]) == (8, 8)  # per question, from real searches
    assert (simulator.output / "policy" / "sim-documents.jsonl").is_file()  # the leak guard's documents
    config = _stage_config(grpo)
    assert config["retriever"]["kind"] == "simulated"
    assert config["retriever"]["simulator"]["model"] == str(simulator.output / "policy")
    logged = [h["search/noise_probability"] for h in _history(grpo.output)]
    assert logged == [pytest.approx(noise_probability(t, 2, 0.0, 0.5, 4.0)) for t in range(2)]
    assert run.policy == grpo.output / "policy" and _changed(world["init"], run.policy)
    # Evaluated against the real index (the recipe trains without it).
    cfg = load_config(
        EvalConfig,
        "eval",
        [
            f"output_dir={tmp_path / 'eval'}",
            f"tracking_uri={world['uri']}",
            f"agent.backend.hf.model={run.policy}",
            "agent.backend.hf.device=cpu",
            f"agent.prompts={world['data'].prompts}",
            "agent.rollout.max_turns=2",
            "agent.rollout.max_new_tokens_per_turn=16",
            "retriever.kind=lucene",
            f"retriever.index={world['data'].index}",
        ],
        values={"datasets": [{"name": "facts", "loader": "flashrag", "path": world["data"].qa}]},
    )
    run_eval(cfg, progress=False)

    rows = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    assert len(rows) == len(QUERIES)
    searched = [ids for r in rows for ids in r["retrieved_ids"]]
    assert all(not d.startswith("sim:") for ids in searched for d in ids)  # real corpus ids only


def test_webdancer_cold_starts_on_synthesized_questions_then_runs_dapo_on_them(
    world: dict[str, Any], tmp_path: Path
) -> None:
    overrides = {"cold_start": SFT, "dapo": [*RL, "algorithm.filter_groups=false"]}
    run = run_recipe(
        "webdancer", world["init"], tmp_path / "run", world["data"], overrides, tracking_uri=world["uri"]
    )
    cold, dapo = run.stages
    manifest = json.loads((cold.output / "shards" / "manifest.json").read_text())
    assert manifest["packed"] == 2  # the two synthesized questions' trajectories
    config = _stage_config(dapo)
    assert config["data"]["qa"] == world["data"].synthesized and config["policy"]["model"] == str(cold.policy)
    assert config["algorithm"]["clip_high"] == 0.28 and config["reward"]["metric"] == "f1"
    assert len(_history(dapo.output)) == 2 and _changed(cold.policy, dapo.policy)
    # A rerun with nothing changed skips every stage.
    again = run_recipe(
        "webdancer", world["init"], tmp_path / "run", world["data"], overrides, tracking_uri=world["uri"]
    )
    assert [s.ran for s in again.stages] == [False, False] and again.policy == run.policy


def _warm_start(init: Path, conversations: list[Trajectory], out: Path, steps: int) -> Path:
    """``init`` after ``steps`` full-batch supervised steps (loss on the assistant's tokens) on
    ``conversations``: a solver that answers from its documents, in seconds (the Megatron SFT stage needs
    far more steps on this machine to get there)."""
    tokenizer = AutoTokenizer.from_pretrained(init)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(init).train()
    rendered = [render_trajectory(c.messages, tokenizer) for c in conversations]
    width = max(len(r.input_ids) for r in rendered)
    ids = torch.full((len(rendered), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rendered), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rendered), width), dtype=torch.long)
    for row, r in enumerate(rendered):
        ids[row, : len(r.input_ids)] = torch.tensor(r.input_ids)
        attention[row, : len(r.input_ids)] = 1
        labels[row, : len(r.input_ids)] = torch.tensor(
            [t if m else -100 for t, m in zip(r.input_ids, r.is_model_token, strict=True)]
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


DPO = [
    "dpo.rounds=2",
    "dpo.candidates=3",
    "search.top_k=1",
    "search.max_chars_per_doc=120",
    "decompose.max_decomposition_tokens=12",
    "decompose.max_answer_tokens=6",
    "trainer.threads=1",
]


def test_acesearcher_sft_then_iterative_dpo(world: dict[str, Any], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    overrides = {"sft": SFT, "dpo": DPO}
    run = run_recipe(
        "acesearcher", world["init"], tmp_path / "run", world["data"], overrides, tracking_uri=world["uri"]
    )
    sft, dpo = run.stages
    assert run.inference == "decompose" and dpo.policy == run.policy
    conversations = read_trajectories(sft.output / "conversations")
    assert len(conversations) == 2 * len(QUERIES)  # a decomposer and a solver conversation per trajectory
    decomposer = next(c for c in conversations if c.sample_id == "q1/decomposer")
    assert decomposer.messages[-1]["content"] == "1. Velmora Works headquarters"
    config = _stage_config(dpo)
    assert config["policy"]["model"] == str(sft.policy) and config["data"]["qa"] == world["data"].qa
    assert [h["round"] for h in _history(dpo.output)] == [1.0, 2.0]
    # From a solver that answers from its documents, sampled decompositions give answers that differ:
    # preference pairs, DPO updates; and the stage is seeded (again elsewhere: the same rounds, weights).
    warm = _warm_start(world["init"], conversations, tmp_path / "warm", steps=150)
    recipe = load_recipe("acesearcher")
    dpo_only = recipe.model_copy(update={"stages": recipe.stages[1:]})
    first, second = (
        run_recipe(dpo_only, warm, tmp_path / name, world["data"], {"dpo": DPO}, tracking_uri=world["uri"])
        for name in ("dpo-a", "dpo-b")
    )
    history = _history(first.stages[0].output)
    trained = [h for h in history if h["pairs"] > 0]
    assert trained, history
    assert all(h["reward/best"] > h["reward/mean"] and h["dpo/steps"] >= 1 for h in trained)
    assert all(0.0 <= h["dpo/reward_accuracy"] <= 1.0 and h["dpo/loss"] > 0 for h in trained)
    assert _changed(warm, first.policy)
    again = second.stages[0].output / "history.jsonl"
    assert again.read_bytes() == (first.stages[0].output / "history.jsonl").read_bytes()
    assert not _changed(first.policy, second.policy)
