"""The RAMP-effect world: deterministic; questions need two searches; chains need the earlier value."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ramp.cot.trajectories import Trajectory
from ramp.experiment.renaming import renamed_copies
from ramp.experiment.world import (
    PHRASINGS,
    Lookup,
    World,
    dpr_rows,
    generate_world,
    split_questions,
    unverified_chains,
    unverified_questions,
)
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(seed=3)


@pytest.fixture(scope="module")
def world_retriever(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    root = tmp_path_factory.mktemp("world")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in dpr_rows(world)))
    build_index([corpus], root / "index", threads=1, shards=1, progress=False)
    retriever = LuceneRetriever(root / "index", threads=1)
    yield retriever
    retriever.close()


def test_world_is_deterministic(tmp_path: Path) -> None:
    first = generate_world(seed=5).write(tmp_path / "a")
    second = generate_world(seed=5).write(tmp_path / "b")
    other = generate_world(seed=6).write(tmp_path / "c")
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes()
    assert first["articles"].read_bytes() != other["articles"].read_bytes()


def test_spans_point_at_their_values(world: World) -> None:
    assert len(world.articles) == 6 + 24 + 60 + 30
    for article in world.articles:
        assert article.spans, article.id
        for span in article.spans:
            value = article.text[span.start : span.end]
            assert value and value == value.strip()
            if span.type != "entity":
                assert any(ch.isdigit() for ch in value)


def test_phrasings_move_the_names(world: World) -> None:
    """Every sentence kind is written several ways, so the name a query copies stands at varied places:
    a passage opens with its own title in about a third of them, not always."""
    assert all(len(p) >= 3 for p in PHRASINGS.values())
    for kind in ("city", "person", "company"):
        texts = [a for a in world.articles if a.kind == kind]
        opening = sum(a.text.startswith(a.title) for a in texts) / len(texts)
        assert 0.1 < opening < 0.7, (kind, opening)
    assert len({q.question.split(" ", 2)[:2][0] for q in world.questions}) >= 3  # questions vary too


def test_held_out_entities_are_never_searched_for_in_training(world: World) -> None:
    for kind in ("city", "person", "company"):
        members = [a.id for a in world.articles if a.kind == kind]
        share = sum(m in world.held_out for m in members) / len(members)
        assert share >= 0.25, (kind, share)
    titles = {a.id: a.title for a in world.articles}
    for lookup in world.lookups:  # the subject is the entity the query names
        assert titles[lookup.subject] in lookup.query
    assert generate_world(seed=3).held_out == world.held_out != generate_world(seed=4).held_out


def test_every_question_needs_both_searches(world: World, world_retriever: object) -> None:
    assert {q.type for q in world.questions} == {"bridge", "comparison"}
    assert unverified_questions(world, world_retriever) == []  # type: ignore[arg-type]


def test_chained_masks_need_the_earlier_value(world: World, world_retriever: object) -> None:
    assert len(world.chains) == 15
    assert unverified_chains(world, world_retriever) == []  # type: ignore[arg-type]


def test_verification_catches_a_one_hop_question(world: World, world_retriever: object) -> None:
    bridge = next(q for q in world.questions if q.type == "bridge")
    # Swapping the hops puts the answer in the first passage: one search would do.
    broken = World(seed=world.seed, articles=world.articles)
    broken.questions = [
        type(bridge)(
            **{
                **bridge.__dict__,
                "supporting_ids": bridge.supporting_ids[::-1],
                "hop_queries": bridge.hop_queries[::-1],
            }
        )
    ]
    assert unverified_questions(broken, world_retriever) == [  # type: ignore[arg-type]
        (bridge.id, "the answer is not a second-hop fact")
    ]


def test_lookups_find_their_values_elsewhere(world: World, world_retriever: object) -> None:
    text = {a.id: a.text for a in world.articles}
    assert world.lookups
    queries = [x.query for x in world.lookups]
    hits = world_retriever.search(  # type: ignore[attr-defined]
        queries, k=3, exclude_doc_ids=[[f"{x.article_id}#0"] for x in world.lookups]
    )
    missed = [
        x
        for x, found in zip(world.lookups, hits, strict=True)
        if f"{x.source_id}#0" not in {h.doc_id for h in found}
    ]
    for lookup in world.lookups:
        assert lookup.value not in lookup.query and lookup.value in text[lookup.source_id]
        assert lookup.value in text[lookup.article_id] and lookup.source_id != lookup.article_id
    assert len(missed) <= len(world.lookups) // 20, missed[:3]  # the oracle rejects the rare miss


def test_pretraining_searches_the_way_the_questions_do(world: World) -> None:
    """Every hop of every question is a query the RAMP oracle also writes (for another entity): the
    relation's one template, so what pretraining teaches to search is what the questions need."""
    names = {a.title for a in world.articles}

    def template(query: str) -> str:
        name = next(n for n in sorted(names, key=len, reverse=True) if query.startswith(n + " "))
        return "NAME" + query[len(name) :]

    pretrained = {template(x.query) for x in world.lookups}
    asked = {template(q) for question in world.questions for q in question.hop_queries}
    assert asked <= pretrained, asked - pretrained
    assert len(asked) >= 4  # founder, headquarters, birth city, country


def test_question_split_is_seeded_and_disjoint(world: World) -> None:
    train, test = split_questions(world, 10, 40, seed=1)
    assert (train, test) == split_questions(world, 10, 40, seed=1)
    assert not {q.id for q in train} & {q.id for q in test} and len(train) + len(test) == 50
    assert train != split_questions(world, 10, 40, seed=2)[0]
    with pytest.raises(ValueError, match="questions asked"):
        split_questions(world, len(world.questions), 1)


def _lookup_trajectory(world: World, lookup: Lookup) -> Trajectory:
    """An oracle-shaped RAMP trajectory of one lookup: the passage with its value masked, the search, the
    result, the answer."""
    texts = {a.id: a.text for a in world.articles}
    return Trajectory(
        sample_id=f"{lookup.article_id}#0",
        kind="ramp",
        teacher="world-oracle",
        teacher_model="",
        round=0,
        messages=(
            {"role": "user", "content": texts[lookup.article_id].replace(lookup.value, "[mask]", 1)},
            {"role": "assistant", "content": f"<search> {lookup.query}</search>"},
            {"role": "tool", "content": f"<result>\n{texts[lookup.source_id]}\n</result>"},
            {"role": "assistant", "content": f"<answer> {lookup.value}</answer>"},
        ),
        answer=lookup.value,
        fills=(lookup.value,),
        golds=(lookup.value,),
        score=1.0,
        reward=1.0,
        verified=True,
        num_masks=1,
        queries=(lookup.query,),
        retrieved_doc_ids=((lookup.source_id,),),
        exclude_doc_ids=(lookup.article_id,),
    )


def test_renamed_copies_permute_names_consistently_and_never_use_held_out_ones(world: World) -> None:
    """Each copy replaces every world name by another of its kind, the same way everywhere in the copy
    (so its query still copies a name its passage shows), injectively, with names not held out; the rest
    of the text is untouched; copies are seeded."""
    originals = [_lookup_trajectory(world, x) for x in world.lookups[:40]]
    copies = renamed_copies(originals, world, copies=2)
    assert copies == renamed_copies(originals, world, copies=2)
    assert [c.sample_id for c in copies[:2]] == [
        f"{originals[0].sample_id}~renamed0",
        f"{originals[1].sample_id}~renamed0",
    ]
    kind = {a.title: a.kind for a in world.articles}
    held = {a.title for a in world.articles if a.id in world.held_out}
    renamed = 0
    for n, copy in enumerate(copies):
        original = originals[n % len(originals)]
        mapping: dict[str, str] = {}
        for before, after in zip(original.messages, copy.messages, strict=True):
            words, new_words = before["content"].split(), after["content"].split()
            assert len(words) == len(new_words)  # every name has as many words as its replacement
            for word, new in zip(words, new_words, strict=True):
                stem, new_stem = word.strip(".,;:<>/"), new.strip(".,;:<>/")
                if stem == new_stem and stem not in kind:
                    continue
                assert mapping.setdefault(stem, new_stem) == new_stem  # the same name, the same way
        assert len(set(mapping.values())) == len(mapping)  # injective
        text = " ".join(m["content"] for m in copy.messages)
        assert not [t for t in held if re.search(rf"\b{re.escape(t)}\b", text)]  # whole names, people too
        named = [mapping[t] for t in mapping if t in original.queries[0]]  # the query's names, renamed
        assert named and all(t in copy.queries[0] and t in copy.messages[0]["content"] for t in named)
        assert copy.answer in copy.messages[2]["content"] and copy.fills == (copy.answer,)
        renamed += copy.queries[0] != original.queries[0]
    assert renamed > 0.9 * len(copies)
