"""Self-evolving round: a (tiny, real) student model is the teacher through the agent rollout loop."""

from __future__ import annotations

import pytest
from cot_helpers import answerable_samples
from tiny_model import ScriptedBackend, tiny_backend

from ramp.agent.config import RolloutConfig
from ramp.agent.protocol import format_result_block
from ramp.agent.rollout import RolloutLoop
from ramp.config import load_config
from ramp.cot.builder import TrajectoryBuilder
from ramp.cot.config import CotConfig
from ramp.cot.trajectories import Trajectory
from ramp.cot.verify import Verifier
from ramp.data.rejections import Rejection
from ramp.retrieval.env import SearchConfig, SearchEnv, shown_hit


def key(sample) -> str:
    return "Passage: " + " ".join(sample.masked_passage.split()[:8])


def answer(fills) -> str:
    return "<answer>\n" + "\n".join(f"[{i}] {f}" for i, f in enumerate(fills, start=1)) + "\n</answer>"


@pytest.fixture(scope="module")
def samples(lucene_retriever):
    return answerable_samples(lucene_retriever, limit=30)[:3]


def test_student_round_is_verified_and_recorded(samples, lucene_retriever, wiki18_index):
    right, wrong, stuck = samples
    query = " ".join(right.masked_passage.replace("[mask]", " ").split()[:10])
    scripts = {
        key(right): [
            f"<think>search it</think>\n<search>{query}</search>",
            f"<think>found</think>\n{answer(right.answers)}",
        ],
        key(wrong): [f"<think>I know it</think>\n{answer(['Nobody'])}"],
        key(stuck): [f"<think>again</think>\n<search>{query}</search>"],
    }
    rollout = RolloutConfig(max_turns=3, max_new_tokens_per_turn=60, max_total_new_tokens=240)
    config = load_config(CotConfig, "cot", [f"retriever.index={wiki18_index}", "round=1"])
    env = SearchEnv(lucene_retriever, SearchConfig(top_k=2))
    student = RolloutLoop(ScriptedBackend(tiny_backend(), scripts), env, rollout)
    builder = TrajectoryBuilder(student, Verifier(config.verify), "student", "tiny", config.round)
    kept, not_verified, max_turns = builder.build([s.to_row() for s in samples])

    assert isinstance(kept, Trajectory)
    assert (kept.teacher, kept.teacher_model, kept.round, kept.verified) == ("student", "tiny", 1, True)
    assert list(kept.fills) == list(right.answers) and kept.queries == (query,)
    hits = lucene_retriever.search([query], k=2, exclude_doc_ids=[right.exclude_doc_ids])[0]
    assert [m["role"] for m in kept.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert kept.messages[2]["content"] == scripts[key(right)][0]
    assert kept.messages[3]["content"] == format_result_block(
        [shown_hit(h, env.config.max_chars_per_doc) for h in hits]
    )
    assert kept.retrieved_doc_ids == (tuple(h.doc_id for h in hits),)
    assert right.exclude_doc_ids[0] not in kept.retrieved_doc_ids[0]

    assert isinstance(not_verified, Rejection) and not_verified.reason == "not_verified"
    assert isinstance(max_turns, Rejection) and max_turns.reason == "max_turns"
