"""One experiment seed's data: its own world through the real pipeline, and every set the arms train and
are measured on (``OUTPUT/seed-N/data``).

world -> ``ramp data build`` (tagged spans; ``draws`` mask draws) -> ``ramp index build`` ->
``ramp data answerability`` -> world-oracle trajectories, split three ways by what their searches name:

- ``ramp-trajectories/``: RAMP SFT's trajectories, with ``renamed_copies`` renamed copies of each;
- ``rl-heldout/``: a seeded share of the trainable tasks that RAMP SFT never sees: the gate's copy rate after
  RAMP SFT, then DAPO's tasks (its answer reward before/after on the same samples);
- ``rl-heldout-entities/``: tasks whose searches name a held-out entity (reported separately).

Questions (verified answerable by their two searches at the experiment's top-k) are split into
``qa-train.jsonl`` (of which ``qa-dev.jsonl`` is carved for the QA grid, ``qa-grid-train.jsonl`` the rest)
and ``qa-test.jsonl``, each row with its facts (supporting passages, whether its first hop's entity is
held out); ``qa-trajectories/`` and ``qa-grid-trajectories/`` hold the oracle's QA trajectories;
``lm-articles/`` the world's articles as next-token training rows (arm C).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ramp.agent.task import task_from_qa, task_from_sample
from ramp.cot.trajectories import TRAJECTORY_SCHEMA, Trajectory
from ramp.data.samples import Sample
from ramp.experiment.config import RampEffectConfig, stage_config
from ramp.experiment.oracle import qa_trajectory, ramp_steps, ramp_trajectory
from ramp.experiment.renaming import renamed_copies
from ramp.experiment.world import (
    Question,
    World,
    generate_world,
    split_questions,
    unverified_chains,
    unverified_questions,
    write_jsonl,
)
from ramp.pipelines.answerability import run_answerability
from ramp.pipelines.ramp_data import run_build
from ramp.prompts import PromptTemplates, load_templates
from ramp.retrieval.env import SearchEnv
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever
from ramp.seeding import record_rng

HELD_OUT_TASKS = 0.2  # share of the trainable RAMP tasks kept out of training (the gate's tasks)
SUMMARY = "data.json"


def world_seed(config: RampEffectConfig, seed: int) -> int:
    """The world of experiment seed ``seed`` (``--set world.seed=N``: seed i draws N + i)."""
    return config.world.seed + seed


def build_seed_data(config: RampEffectConfig, seed: int, out: Path) -> dict[str, Any]:
    """Everything one seed's arms need, under ``out``; returns (and writes) the data summary."""
    sizes = config.world.model_dump(exclude={"seed"})
    world = generate_world(seed=world_seed(config, seed), **sizes)
    paths = world.write(out / "world")
    data_cfg = stage_config(
        config,
        "data",
        {"source.format": "jsonl", "spans.extractor": "tagged", "masking.exclude": "passage"},
    )
    draws = [out / "samples", *(out / f"samples-draw{n}" for n in range(1, config.draws))]
    builds = [
        run_build(
            [str(paths["articles"])],
            str(d),
            data_cfg.model_copy(update={"seed": data_cfg.seed + n}),
            chunk_mb=0,
        )
        for n, d in enumerate(draws)
    ]
    build_index([draws[0]], out / "index", threads=1, shards=1, progress=False)
    settings = stage_config(
        config, "answerability", {"retriever.kind": "lucene", "retriever.index": str(out / "index")}
    )
    answerable = run_answerability(
        str(draws[0]), str(out / "answerable"), settings.retriever, settings.answerability, chunk_mb=0
    )
    templates = load_templates(config.prompts)
    retriever = LuceneRetriever(out / "index", threads=1)
    try:
        env = SearchEnv(retriever, config.search)
        verified = _verified_questions(world, retriever, config.search.top_k)
        train, test = split_questions(verified, config.questions.train, config.questions.test, world.seed)
        ramp = _write_ramp_sets(
            out, [out / "answerable", *draws], world, env, templates, config.renamed_copies
        )
        qa = _write_qa_sets(out, world, verified.questions, train, test, config, env, templates)
    finally:
        retriever.close()
    _write_article_rows(out / "lm-articles", world)
    summary = {
        "world_seed": world.seed,
        "articles": len(world.articles),
        "held_out_entities": _count_kinds(world.held_out),
        "entities": _count_kinds(a.id for a in world.articles),
        "build": builds[0],
        "answerability": answerable,
        "chains": len(world.chains),
        **ramp,
        **qa,
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return summary


def _verified_questions(world: World, retriever: LuceneRetriever, k: int) -> World:
    """The world with only the questions its two searches answer at top-``k`` (chains must hold)."""
    bad_chains = unverified_chains(world, retriever, k=k)
    if bad_chains:
        raise RuntimeError(f"world {world.seed} not verified: chains {bad_chains[:5]}")
    unverified = dict(unverified_questions(world, retriever, k=k))
    return dataclasses.replace(world, questions=[q for q in world.questions if q.id not in unverified])


def _write_ramp_sets(
    out: Path,
    sources: Sequence[Path],
    world: World,
    env: SearchEnv,
    templates: PromptTemplates,
    copies: int,
) -> dict[str, Any]:
    """Oracle trajectories of every distinct masked passage in ``sources``, split into the training,
    held-out-task and held-out-entity sets (trajectories and their samples); the training set with
    ``copies`` renamed copies of each trajectory (:mod:`ramp.experiment.renaming`)."""
    lookups = {(x.article_id, x.value): x for x in world.lookups}
    names = {a.id: a.title for a in world.articles}
    sets: dict[str, list[tuple[dict[str, Any], Trajectory, str]]] = {
        "train": [],
        "heldout": [],
        "heldout-entities": [],
    }
    rejected: Counter[str] = Counter()
    for row in _distinct_samples(sources):
        sample = Sample.from_row(row)
        task = task_from_sample(sample, templates)
        steps = ramp_steps(task, sample.article_id, lookups)
        made = steps if isinstance(steps, str) else ramp_trajectory(task, steps, env)
        if isinstance(made, str) or isinstance(steps, str):
            rejected[_reason(str(made))] += 1
            continue
        if any(step.subject in world.held_out for step in steps):
            kept = "heldout-entities"
        elif record_rng(world.seed, sample.sample_id, "held-out task").random() < HELD_OUT_TASKS:
            kept = "heldout"
        else:
            kept = "train"
        sets[kept].append((row, made, names[steps[0].subject]))
    trained = [t for _, t, _ in sets["train"]]
    write_trajectories(out / "ramp-trajectories", [*trained, *renamed_copies(trained, world, copies)])
    for name in ("heldout", "heldout-entities"):  # tasks, not trajectories: what DAPO and the measures read
        members = sets[name]
        samples = out / f"rl-{name}"
        samples.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([r for r, _, _ in members]), samples / "samples-00000.parquet")
        write_jsonl(
            samples / "subjects.jsonl", ({"sample_id": t.sample_id, "subject": s} for _, t, s in members)
        )
    by_k = Counter(str(t.num_masks) for _, t, _ in sets["train"])
    return {
        "ramp_trajectories": len(sets["train"]),
        "ramp_renamed_copies": copies * len(sets["train"]),
        "ramp_trajectories_by_k": dict(sorted(by_k.items())),
        "ramp_heldout_tasks": len(sets["heldout"]),
        "ramp_heldout_entity_tasks": len(sets["heldout-entities"]),
        "ramp_rejected": dict(sorted(rejected.items())),
    }


def _reason(text: str) -> str:
    """A rejection's kind, without the mask number or query that follow it."""
    return "no lookup" if "states its value nowhere else" in text else "search misses its value"


def _distinct_samples(sources: Sequence[Path]) -> list[dict[str, Any]]:
    """Every masked passage of ``sources`` once (later sources' ids get ``@<source>``), in id order."""
    seen: set[str] = set()
    rows = []
    for n, source in enumerate(sources):
        table = [r for f in sorted(source.glob("samples-*.parquet")) for r in pq.read_table(f).to_pylist()]
        for row in sorted(table, key=lambda r: r["sample_id"]):
            if row["masked_passage"] not in seen:
                seen.add(row["masked_passage"])
                rows.append({**row, "sample_id": row["sample_id"] + (f"@{source.name}" if n else "")})
    return rows


def _write_qa_sets(
    out: Path,
    world: World,
    verified: Sequence[Question],
    train: Sequence[Question],
    test: Sequence[Question],
    config: RampEffectConfig,
    env: SearchEnv,
    templates: PromptTemplates,
) -> dict[str, Any]:
    dev, grid_train = list(train[: config.questions.dev]), list(train[config.questions.dev :])
    for name, questions in (
        ("qa-train", train),
        ("qa-dev", dev),
        ("qa-grid-train", grid_train),
        ("qa-test", test),
    ):
        write_jsonl(out / f"{name}.jsonl", (question_row(q, world) for q in questions))
    for folder, questions in (("qa-trajectories", train), ("qa-grid-trajectories", grid_train)):
        names = {a.id: a.title for a in world.articles}
        made = [
            qa_trajectory(task_from_qa(question_row(q, world), templates), q, names[q.supporting_ids[1]], env)
            for q in questions
        ]
        failed = [m for m in made if isinstance(m, str)]
        if failed:
            raise RuntimeError(f"oracle QA trajectories failed: {failed[:3]}")
        write_trajectories(out / folder, [m for m in made if not isinstance(m, str)])
    return {
        "questions": {
            "world": len(world.questions),
            "verified": len(verified),
            "train": len(train),
            "dev": len(dev),
            "test": len(test),
            "test_held_out_first_hop": sum(q.supporting_ids[0] in world.held_out for q in test),
        }
    }


def question_row(question: Question, world: World) -> dict[str, Any]:
    """A QA row (``{id, question, golden_answers}`` plus the facts the measures need)."""
    return {
        "id": question.id,
        "question": question.question,
        "golden_answers": list(question.golden_answers),
        "type": question.type,
        "supporting_ids": [f"{d}#0" for d in question.supporting_ids],
        "entities": list(question.entities),
        "held_out": question.supporting_ids[0] in world.held_out,
    }


def _write_article_rows(out: Path, world: World) -> None:
    """The world's articles as next-token rows for the Megatron stage (loss on every article token)."""
    rows = [
        Trajectory(
            sample_id=a.id,
            kind="lm",
            teacher="world-articles",
            teacher_model="",
            round=0,
            messages=({"role": "user", "content": "Article"}, {"role": "assistant", "content": a.text}),
            answer="",
            fills=(),
            golds=(),
            score=1.0,
            reward=1.0,
            verified=True,
            num_masks=0,
            queries=(),
            retrieved_doc_ids=(),
            exclude_doc_ids=(),
        )
        for a in world.articles
    ]
    write_trajectories(out, rows)


def write_trajectories(folder: Path, trajectories: Sequence[Trajectory]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([t.to_row() for t in trajectories], schema=TRAJECTORY_SCHEMA)
    pq.write_table(table, folder / "trajectories-00000.parquet", compression="zstd")


def _count_kinds(ids: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(i.rsplit("-", 1)[0] for i in ids).items()))
