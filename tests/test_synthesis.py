"""WebDancer's E2HQA synthesis (``ramp data synthesize``): every kept question is answerable by its chain of
searches, checked here independently of the job; every rejected seed is in the dead-letter output with its
reason; the rule-based and the LLM rewriters; reruns byte-identical. A real Lucene index of a hand-made
corpus, the real Beam job on the local runner and a real HTTP endpoint for the LLM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from facts_corpus import SEEDS, write_corpus, write_jsonl
from openai_server import ScriptedOpenAIServer
from ramp.pipelines.synthesize import run_synthesize

from ramp.data.synthesis import (
    QuestionSynthesizer,
    SynthConfig,
    SynthesisSettings,
    entity_candidates,
    rule_descriptions,
    seed_from_row,
)
from ramp.retrieval.base import Hit
from ramp.retrieval.indexing import build_index
from ramp.retrieval.lucene import LuceneRetriever
from ramp.text import normalize

REJECTED = {
    "s3": "seed_not_answerable",
    "s4": "answer_in_question",
    "s5": "no_verified_rewrite",
    "s6": "no_entity",
    "bad": "bad_seed",
}


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("facts")
    index = root / "index"
    build_index([write_corpus(root / "corpus.jsonl")], index, threads=1, progress=False)
    seeds = write_jsonl(root / "seeds.jsonl", SEEDS, extra_lines=("not json",))
    return {"root": root, "index": index, "seeds": seeds}


@pytest.fixture(scope="module")
def retriever(facts: dict[str, Path]) -> Iterator[LuceneRetriever]:
    searcher = LuceneRetriever(facts["index"], threads=1)
    yield searcher
    searcher.close()


def _settings(index: Path, *overrides: tuple[str, Any]) -> SynthesisSettings:
    values: dict[str, Any] = {"retriever": {"kind": "lucene", "index": str(index)}}
    for dotted, value in overrides:
        section, key = dotted.split(".")
        values.setdefault(section, {})[key] = value
    return SynthesisSettings.model_validate(values)


def _lines(directory: Path, prefix: str) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted(directory.glob(f"{prefix}-*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def _norm(text: str) -> str:
    return f" {normalize(text, 'ramp')} "


def assert_answerable_by_its_chain(row: dict[str, Any], retriever: LuceneRetriever, k: int) -> None:
    """Solve the question the way its chain says, with real searches: the innermost description's search
    finds its entity's passage (naming the entity), the entity's name restores the description around it,
    and so on out to the seed question, whose search finds the answer."""
    meta, question = row["metadata"], row["question"]
    assert len(meta["chain"]) == meta["hops"] and meta["searches"] == meta["hops"] + 1
    for answer in row["golden_answers"]:
        assert normalize(answer, "ramp") not in normalize(question, "ramp")
    for hop in reversed(meta["chain"]):
        assert hop["description"] in question, (hop, question)
        assert _norm(hop["entity"]) not in _norm(hop["description"])
        hits = retriever.search([hop["description"]], k=k)[0]
        found = [h for h in hits if h.doc_id == hop["doc_id"]]
        assert found and _norm(hop["entity"]) in _norm(f"{found[0].title} {found[0].text}"), (hop, hits)
        question = question.replace(hop["description"], hop["replaced"], 1)
    assert question == meta["seed_question"]
    hits = retriever.search([question], k=k)[0]
    assert any(_norm(a) in _norm(f"{h.title} {h.text}") for h in hits for a in row["golden_answers"])
    for hop in meta["chain"]:  # no entity a hop hides is named anywhere in the final question
        assert _norm(hop["entity"]) not in _norm(row["question"])


def test_kept_questions_are_answerable_by_their_chain_and_the_rest_are_dead_lettered(
    facts: dict[str, Path], retriever: LuceneRetriever, tmp_path: Path
) -> None:
    settings = _settings(facts["index"])
    stats = run_synthesize(facts["seeds"], tmp_path / "out", settings)
    assert stats["seeds_in"] == len(SEEDS) + 1 == stats["kept"] + stats["rejected"] and stats["accounted"]
    questions = _lines(tmp_path / "out", "questions")
    assert [q["metadata"]["seed_id"] for q in questions] == ["s1", "s2"]
    for row in questions:
        assert row["metadata"]["hops"] == 2
        assert_answerable_by_its_chain(row, retriever, settings.synth.verify_k)
    assert questions[1]["question"] == (
        "Where are the headquarters of the company founded by the weaver from the hill village of Pellor"
        " in 1911?"
    )
    rejected = _lines(tmp_path / "out", "rejected")
    by_id = {r["record_id"]: r for r in rejected}
    assert {i: by_id[i]["reason"] for i in REJECTED} == REJECTED
    assert [r["reason"] for r in rejected if r["record_id"].endswith(":8")] == ["unparseable"]
    assert all(r["detail"] and r["stage"] == "synthesize" for r in rejected)
    assert stats["rejected_by_reason"] == {
        **{reason: 1 for reason in REJECTED.values()},
        "unparseable": 1,
    }
    # Reruns are byte-identical.
    again = run_synthesize(facts["seeds"], tmp_path / "again", settings)
    assert again == stats
    for name in ("questions-00000-of-00001.jsonl", "rejected-00000-of-00001.jsonl", "stats.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_a_third_hop_where_the_corpus_allows_one_and_a_rejection_naming_the_hop_where_not(
    facts: dict[str, Path], retriever: LuceneRetriever, tmp_path: Path
) -> None:
    settings = _settings(facts["index"], ("synth.hops", 3))
    stats = run_synthesize(facts["seeds"], tmp_path / "out", settings)
    (question,) = _lines(tmp_path / "out", "questions")
    assert question["metadata"]["hops"] == 3 and question["metadata"]["seed_id"] == "s1"
    assert_answerable_by_its_chain(question, retriever, settings.synth.verify_k)
    rejected = {r["record_id"]: r for r in _lines(tmp_path / "out", "rejected")}
    assert rejected["s2"]["reason"] == "no_verified_rewrite"
    assert rejected["s2"]["detail"] == "hop 3: Pellor: no passage about it in the top 5"
    assert stats["kept_by_hops"] == {"3": 1} and stats["accounted"]


def test_rules_turn_a_sentence_about_the_entity_into_a_description() -> None:
    def hit(text: str) -> Hit:
        return Hit("d", "T", text, 1.0)

    assert rule_descriptions("K", hit("K is a glassware company founded in 1803. It grew."), None) == [
        "the glassware company founded in 1803",
        "the company that grew",
    ]
    assert rule_descriptions("P", hit("P was a chemist, born in 1761. His kiln is in Quessa."), None) == [
        "the chemist, born in 1761",
        "the chemist whose kiln is in Quessa",
    ]
    assert rule_descriptions("K", hit("K was founded by X in 1803."), "company") == [
        "the company founded by X in 1803"
    ]
    assert rule_descriptions("K", hit("K was founded by X."), None) == ["the one founded by X"]
    assert rule_descriptions("K", hit("Its river is long. K lies on the Lune."), "town") == [
        "the town whose river is long",
        "the town that lies on the Lune",
    ]
    assert rule_descriptions("K", hit("Nothing opens with the name or a pronoun here."), None) == []
    assert entity_candidates("In which city was the founder of Velmora Works born, Sarn Vey or Irsa?") == [
        "Velmora Works",
        "Sarn Vey",
        "Irsa",
    ]


class DescriptionWriter:
    """An LLM stand-in: a description per entity, read from the passage it was shown."""

    def __init__(self, descriptions: dict[str, str]) -> None:
        self.descriptions = descriptions

    def __call__(self, path: str, body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        entity = next(e for e in self.descriptions if f"description of {e}" in prompt)
        return self.descriptions[entity]


def test_an_llm_endpoint_writes_the_descriptions_and_they_are_verified(
    facts: dict[str, Path], retriever: LuceneRetriever, tmp_path: Path
) -> None:
    writer = DescriptionWriter(
        {
            "Velmora Works": "The glassware maker that Tarin Oslo founded in 1803.",
            "Tarin Oslo": "the chemist born in Quessa in 1761",
            "Kelvane Mills": "Kelvane Mills, founded by Irsa Doun",  # names the entity: refused
        }
    )
    with ScriptedOpenAIServer(writer) as server:
        settings = _settings(
            facts["index"],
            ("synth.backend", "openai"),
            ("synth.openai", {"base_url": server.base_url, "model": "writer", "max_retries": 0}),
        )
        stats = run_synthesize(facts["seeds"], tmp_path / "out", settings)
        prompts = [r["body"]["messages"][-1]["content"] for r in server.requests]
    (question,) = _lines(tmp_path / "out", "questions")
    assert question["question"] == (
        "In which town are the headquarters of the glassware maker that the chemist born in Quessa in 1761 "
        "founded in 1803?"
    )
    assert question["metadata"]["backend"] == "openai"
    assert_answerable_by_its_chain(question, retriever, settings.synth.verify_k)
    assert any("Velmora Works is a glassware company founded in 1803 by Tarin Oslo." in p for p in prompts)
    rejected = {r["record_id"]: r for r in _lines(tmp_path / "out", "rejected")}
    assert rejected["s2"]["reason"] == "no_verified_rewrite"
    assert "names an entity it should hide" in rejected["s2"]["detail"]
    assert stats["accounted"] and stats["kept"] == 1


def test_a_failing_llm_endpoint_rejects_the_seed_not_the_job(facts: dict[str, Path], tmp_path: Path) -> None:
    with ScriptedOpenAIServer(DescriptionWriter({})) as server:
        server.fail_next(100, status=500)
        settings = _settings(
            facts["index"],
            ("synth.backend", "openai"),
            ("synth.openai", {"base_url": server.base_url, "max_retries": 0}),
        )
        stats = run_synthesize(facts["seeds"], tmp_path / "out", settings)
    assert stats["rejected_by_reason"]["llm_error"] == 2 and stats["accounted"]


def test_a_description_that_fits_another_passage_too_is_refused(tmp_path: Path) -> None:
    corpus = write_jsonl(
        tmp_path / "corpus.jsonl",
        [
            {
                "id": "orvane",
                "contents": '"Orvane Forge"\nOrvane Forge was founded by Ada Reyes. '
                "Its headquarters are in Ostrel.",
            },
            {
                "id": "kelvane",
                "contents": '"Kelvane Mills"\nKelvane Mills was founded by Bo Lind in a valley town. '
                "Its headquarters are in Ostrel.",
            },
        ],
    )
    build_index([corpus], tmp_path / "index", threads=1, progress=False)
    with LuceneRetriever(tmp_path / "index", threads=1) as searcher:
        seed = seed_from_row(
            {"id": "o", "question": "Who founded Orvane Forge?", "golden_answers": ["Ada Reyes"]}
        )
        outcome = QuestionSynthesizer(searcher, SynthConfig(hops=1)).synthesize(seed)
    assert outcome.reason == "no_verified_rewrite"  # type: ignore[union-attr]
    assert outcome.detail == "hop 1: Orvane Forge: no description (names the answer, kelvane fit it too)"  # type: ignore[union-attr]
