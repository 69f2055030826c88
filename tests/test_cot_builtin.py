"""The built-in search-and-read teacher on real wiki-18 samples with a real Lucene index."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cot_helpers import answerable_samples, wiki18_rows
from tiny_model import tiny_tokenizer

from ramp.agent.protocol import format_result_block, render_trajectory
from ramp.agent.task import task_from_sample
from ramp.config import load_config
from ramp.cot.builder import TrajectoryBuilder
from ramp.cot.config import BuiltinTeacherConfig, CotConfig
from ramp.cot.drafts import Draft, draft_from_rollout
from ramp.cot.policy import role_loop
from ramp.cot.reading import expects_number, mask_windows, read_mask, shown_text, tokenize
from ramp.cot.roles import load_role_templates
from ramp.cot.teachers import BuiltinTeacher
from ramp.cot.trajectories import Trajectory
from ramp.data.rejections import Rejection
from ramp.data.samples import Mask, Sample, mask_text
from ramp.metrics import f1
from ramp.prompts import load_templates
from ramp.retrieval.base import Hit
from ramp.retrieval.env import SearchEnv, shown_hit
from ramp.retrieval.indexing import build_index


@pytest.fixture(scope="module")
def samples(lucene_retriever):
    found = answerable_samples(lucene_retriever, limit=300)
    assert len(found) >= 60
    return found


@pytest.fixture(scope="module")
def config(wiki18_index):
    return load_config(CotConfig, "cot", [f"retriever.index={wiki18_index}"])


def _drafts(samples, config, retriever):
    templates = load_role_templates()
    loop = role_loop(
        BuiltinTeacher(config.builtin, templates), templates, config.loop, SearchEnv(retriever, config.search)
    )
    return [draft_from_rollout(r) for r in loop.run([task_from_sample(s) for s in samples])]


@pytest.fixture(scope="module")
def outputs(samples, config, lucene_retriever):
    builder = TrajectoryBuilder.from_config(config, retriever=lucene_retriever)
    return builder.build([s.to_row() for s in samples])


def test_every_sample_is_accounted_for_and_a_measurable_share_is_verified(samples, outputs):
    assert len(outputs) == len(samples)
    assert [o.sample_id if isinstance(o, Trajectory) else o.record_id for o in outputs] == [
        s.sample_id for s in samples
    ]
    kept = [o for o in outputs if isinstance(o, Trajectory)]
    reasons = {o.reason for o in outputs if isinstance(o, Rejection)}
    verified_yield = len(kept) / len(samples)
    print(f"built-in teacher verified yield: {len(kept)}/{len(samples)} = {verified_yield:.1%}")
    assert verified_yield >= 0.08
    assert reasons <= {"not_verified", "no_answer"}
    for t in kept:
        assert t.verified and t.score >= 0.8 and t.teacher == "builtin" and t.round == 0
        assert all(f1(fill, gold) >= 0.8 for fill, gold in zip(t.fills, t.golds, strict=True))
    for rejection in outputs:
        if isinstance(rejection, Rejection) and rejection.reason == "not_verified":
            assert "score=" in rejection.detail and '"golds"' in rejection.payload


def test_trajectories_have_the_single_agent_format_and_real_result_blocks(
    samples, outputs, config, lucene_retriever
):
    kept = [o for o in outputs if isinstance(o, Trajectory)]
    by_id = {s.sample_id: s for s in samples}
    for t in kept:
        # the prompt SFT trains on is the one RL and evaluation render for the same sample
        assert t.messages[:2] == task_from_sample(by_id[t.sample_id]).messages
        roles = [m["role"] for m in t.messages]
        assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
        assert roles[2:-1] == ["assistant", "tool"] * t.num_searches
        for i, query in enumerate(t.queries):
            assistant, tool = t.messages[2 + 2 * i]["content"], t.messages[3 + 2 * i]["content"]
            assert assistant.startswith("<think>") and assistant.endswith(f"<search>{query}</search>")
            search = config.search
            [hits] = lucene_retriever.search([query], k=search.top_k, exclude_doc_ids=[t.exclude_doc_ids])
            assert tool == format_result_block([shown_hit(h, search.max_chars_per_doc) for h in hits])
            assert list(t.retrieved_doc_ids[i]) == [h.doc_id for h in hits]
        assert t.messages[-1]["content"].endswith("<answer>\n" + t.answer + "\n</answer>")


def test_exclusions_hold_for_every_episode(samples, config, lucene_retriever):
    drafts = _drafts(samples, config, lucene_retriever)
    searched = [d for d in drafts if isinstance(d, Draft)]
    assert len(searched) >= len(samples) // 2
    for draft in searched:
        own = draft.task.exclude_doc_ids[0]
        assert all(own not in ids for ids in draft.retrieved_doc_ids)
        assert sum(len(ids) for ids in draft.retrieved_doc_ids) > 0


def test_tool_messages_render_as_environment_tokens(outputs):
    tokenizer = tiny_tokenizer()
    trajectory = next(o for o in outputs if isinstance(o, Trajectory) and o.num_searches >= 1)
    rendered = render_trajectory(list(trajectory.messages), tokenizer)
    after_prompt = list(zip(rendered.input_ids, rendered.is_model_token, strict=True))[
        rendered.prompt_length :
    ]
    env_text = tokenizer.decode([i for i, model in after_prompt if not model])
    model_text = tokenizer.decode([i for i, model in after_prompt[:-1] if model])  # minus end-of-turn
    assert env_text == "".join(m["content"] for m in trajectory.messages if m["role"] == "tool")
    assert model_text == "".join(m["content"] for m in trajectory.messages if m["role"] == "assistant")


def test_rerun_is_identical_and_bad_rows_are_dead_lettered(samples, config, lucene_retriever, outputs):
    builder = TrajectoryBuilder.from_config(config, retriever=lucene_retriever)
    broken = {**samples[0].to_row(), "sample_id": "broken", "masked_passage": "no mask token"}
    again = builder.build([s.to_row() for s in samples[:20]] + [broken, {"junk": 1}])
    assert [o.to_row() if isinstance(o, Trajectory) else o for o in again[:20]] == [
        o.to_row() if isinstance(o, Trajectory) else o for o in outputs[:20]
    ]
    assert [(r.record_id, r.reason) for r in again[20:] if isinstance(r, Rejection)] == [
        ("broken", "bad_sample"),
        ("row:21", "bad_sample"),
    ]


def test_task_prompts_pick_the_prompt_the_trajectories_record(samples, config, lucene_retriever, outputs):
    verified = [(s, o) for s, o in zip(samples, outputs, strict=True) if isinstance(o, Trajectory)][:3]
    assert verified
    short = config.model_copy(update={"task_prompts": "experiment/prompts"})
    builder = TrajectoryBuilder.from_config(short, retriever=lucene_retriever)
    again = builder.build([s.to_row() for s, _ in verified])
    system = load_templates("experiment/prompts").system
    for made, (_, default) in zip(again, verified, strict=True):
        assert isinstance(made, Trajectory) and isinstance(default, Trajectory)
        assert made.messages[0]["content"] == system != default.messages[0]["content"]
        assert made.messages[2:] == default.messages[2:]  # the same episode under another prompt


# --- the reader on hand-made masks over real wiki-18 passages -------------------------------------


@pytest.fixture(scope="module")
def wiki18_hits() -> dict[str, Hit]:
    """Real wiki-18 passages by id, as search hits."""
    hits = {}
    for row in wiki18_rows(20):
        title, _, text = row["contents"].partition("\n")
        hits[row["id"]] = Hit(row["id"], title.strip('"'), text, 1.0)
    return hits


def _read(masked: str, hits: list[Hit], **overrides: object) -> str | None:
    config = BuiltinTeacherConfig.model_validate(overrides)
    (left, right), *_ = mask_windows(masked, config.window)
    reading = read_mask(hits, left, right, masked, config)
    return reading.fill if reading else None


def test_reader_finds_a_paraphrased_fact_and_skips_what_the_passage_shows(wiki18_hits):
    # Passage 18 reads "... Isobel Cowden, in Glasgow, Scotland, and was one of five children."
    masked = "The Scottish-American actress Eileen Herlie was born in [mask], Scotland, to an Irish father."
    hits = [wiki18_hits["17"], wiki18_hits["18"]]  # a distractor biography first
    reading = read_mask(hits, *mask_windows(masked, 12)[0], masked, BuiltinTeacherConfig())
    assert reading is not None and (reading.fill, reading.doc_id) == ("Glasgow", "18")
    assert "in Glasgow, Scotland" in reading.evidence and reading.evidence in " ".join(hits[1].text.split())


def test_reader_one_sided_mask_at_the_passage_start(wiki18_hits):
    # Passage 4: "under architect Cristoforo Rocchi, who was soon replaced by Giovanni Antonio Amadeo and ..."
    masked = "[mask] and Gian Giacomo Dolcebuono soon replaced the architect of the cathedral of Pavia."
    assert _read(masked, [wiki18_hits["4"], wiki18_hits["0"]]) == "Giovanni Antonio Amadeo"


def test_reader_date_slot_takes_a_number(wiki18_hits):
    # Passage 0: "Evan L. Morris (January 26, 1977 – July 9, 2015) was a lobbyist for Genentech ..."
    masked = "Evan Morris, a lobbyist for Roche, died on July 9, [mask], aged 38."
    assert expects_number(["on", "july", "9", ","], ["aged"]) is True
    assert expects_number(["begun", "in"], ["under"]) is False
    assert _read(masked, [wiki18_hits["0"]]) == "2015"


def test_reader_reads_only_what_the_result_block_shows(wiki18_hits):
    masked = "The cathedral of Pavia was begun in [mask] under the architect Cristoforo Rocchi."
    pavia = wiki18_hits["4"]
    assert _read(masked, [pavia]) == "1488"  # "Rocchi" and "Pavia" are visible in the passage: skipped
    long_hit = Hit("long", "t", wiki18_hits["0"].text + " " + pavia.text, 1.0)
    assert len(shown_text(long_hit.text, 600)) <= 600
    assert _read(masked, [long_hit]) == "1488"
    assert _read(masked, [shown_hit(long_hit, 600)]) != "1488"  # past the 600 characters the env shows
    assert _read(masked, [long_hit], read_chars=600) != "1488"


def test_reader_prefers_a_fill_that_several_hits_agree_on():
    masked = "The treaty was signed in [mask] by the two opponents after the siege of Muscat."
    once = Hit("1", "t", "The treaty was signed in Lisbon after the siege.", 1.0)
    agreed = [
        Hit(str(i), "t", f"After the siege of Muscat a treaty was signed in {place}.", 1.0)
        for i, place in ((2, "Matrah"), (3, "Matrah"))
    ]
    assert _read(masked, [once]) == "Lisbon"
    assert _read(masked, [once, *agreed]) == "Matrah"
    assert _read(masked, [once, *agreed], agreement=0.0) == "Lisbon"


def test_tokenizer_splits_possessives_and_hyphens_keeps_numbers_and_abbreviations():
    tokens = [t for t, _, _ in tokenize("Lincoln's two-dimensional 1,000 U.S. 20th")]
    assert tokens == ["Lincoln", "'s", "two", "-", "dimensional", "1,000", "U.S", ".", "20th"]
    text = "It has 1,000 ports."
    assert [text[a:b] for _, a, b in tokenize(text)] == ["It", "has", "1,000", "ports", "."]


def test_the_teacher_never_sees_answers_mask_texts_or_the_passage(samples, config, lucene_retriever):
    """Garbage in every gold field (answers, mask texts and offsets, the passage) changes nothing."""
    honest = samples[:24]
    garbage = [
        replace(
            s,
            passage="garbage " * 50,
            answers=tuple("garbage" for _ in s.answers),
            masks=tuple(replace(m, text="garbage", char_start=0, char_end=7, type="x") for m in s.masks),
        )
        for s in honest
    ]

    def drafts(batch: list[Sample]) -> list[object]:
        out = _drafts(batch, config, lucene_retriever)
        return [(d.messages, d.fills, d.queries) if isinstance(d, Draft) else d for d in out]

    assert drafts(garbage) == drafts(honest)
    assert all(
        h.answers != g.answers and h.passage != g.passage for h, g in zip(honest, garbage, strict=True)
    )


# --- chained masks: a later mask's query shows the fills already read ------------------------------

CHAIN_DOCS = {
    "source": '"Velorian Trust"\nThe Velorian Trust is a charity in Harlow. Its founder, Oswin Tarrowby, '
    "was born in Kelmsworth.",
    "trust": '"Velorian Trust"\nThe Velorian Trust is a charity in Harlow. Its founder was Oswin Tarrowby, '
    "a lawyer who left it his estate.",
    "oswin": '"Oswin Tarrowby"\nOswin Tarrowby was an English lawyer. Oswin Tarrowby was born in Kelmsworth. '
    "He studied in London.",
    "quill": '"Mara Quill"\nMara Quill was born in Dunmore.',
}


@pytest.fixture(scope="module")
def chain_index(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("chain")
    corpus = root / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"id": i, "contents": c}) + "\n" for i, c in CHAIN_DOCS.items()), encoding="utf-8"
    )
    build_index([corpus], root / "index", threads=1, progress=False)
    return root / "index"


def test_a_chained_sample_is_verified_only_thanks_to_the_substitution(chain_index):
    """Mask 2's sentence names no one until mask 1's fill (the founder) is put back into it."""
    passage = CHAIN_DOCS["source"].partition("\n")[2]
    spans = [(passage.index(t), passage.index(t) + len(t)) for t in ("Oswin Tarrowby", "Kelmsworth")]
    masked = mask_text(passage, spans)
    sample = Sample(
        sample_id="chain",
        passage_id="source",
        article_id="source",
        title="Velorian Trust",
        passage=passage,
        masked_passage=masked,
        masks=tuple(Mask(passage[a:b], "entity", "X", a, b) for a, b in spans),
        exclude_doc_ids=("source",),
        prompt="",
        answers=tuple(passage[a:b] for a, b in spans),
    )
    outcomes = {}
    for chain in (True, False):
        overrides = [f"retriever.index={chain_index}", "search.top_k=1", f"builtin.chain={chain}"]
        config = load_config(CotConfig, "cot", overrides)
        builder = TrajectoryBuilder.from_config(config)
        try:
            [outcomes[chain]] = builder.build([sample.to_row()])
        finally:
            builder.close()
    chained, plain = outcomes[True], outcomes[False]
    assert isinstance(chained, Trajectory), chained
    assert chained.fills == ("Oswin Tarrowby", "Kelmsworth")
    assert any("Oswin Tarrowby" in q for q in chained.queries)  # mask 2's search names the founder
    assert "oswin" in {d for ids in chained.retrieved_doc_ids for d in ids}
    assert isinstance(plain, Rejection) and plain.reason == "not_verified"
    assert "Kelmsworth" not in plain.payload.split('"fills"')[1].split('"golds"')[0]
