"""Verification: score threshold with the format check, and the LLM judge over a real HTTP server."""

from __future__ import annotations

from openai_server import ScriptedOpenAIServer

from ramp.agent.backends.openai import OpenAIBackend
from ramp.agent.config import OpenAIBackendConfig
from ramp.agent.task import Task
from ramp.config import load_config
from ramp.cot import reading
from ramp.cot.config import CotConfig
from ramp.cot.drafts import Draft
from ramp.cot.verify import PROFILE, Verifier
from ramp.data import answerability
from ramp.prompts import load_templates
from ramp.rewards import RAMP_PROFILE, LLMJudge

TASK = Task(
    task_id="t1",
    kind="ramp",
    messages=(
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Passage: [mask] was a lobbyist for [mask]."},
    ),
    golds=("Evan Morris", "Genentech"),
    num_masks=2,
    exclude_doc_ids=("0",),
    source="[mask] was a lobbyist for [mask].",
)
RESULT = "\n<result>\n[1] Evan Morris\nEvan Morris was a lobbyist for Genentech.\n</result>\n"


def draft(fills: tuple[str, str], final: str | None = None) -> Draft:
    answer = "\n".join(f"[{i}] {f}" for i, f in enumerate(fills, start=1))
    messages = (
        {"role": "system", "content": "sys"},
        {"role": "user", "content": TASK.user_prompt},
        {"role": "assistant", "content": "<think>search</think>\n<search>lobbyist Genentech</search>"},
        {"role": "tool", "content": RESULT},
        {"role": "assistant", "content": final or f"<think>found</think>\n<answer>\n{answer}\n</answer>"},
    )
    return Draft(TASK, messages, answer, fills, ("lobbyist Genentech",), (("5",),))


def test_score_threshold_and_format():
    verifier = Verifier(load_config(CotConfig, "cot").verify)
    right, half, malformed = verifier.verify(
        [
            draft(("Evan Morris", "Genentech")),
            draft(("Evan Morris", "Pfizer")),
            draft(
                ("Evan Morris", "Genentech"),
                final="found it <answer>\n[1] Evan Morris\n[2] Genentech\n</answer>",
            ),
        ]
    )
    assert right.verified and right.score == 1.0 and right.well_formed and right.reward > 1.0
    assert not half.verified and half.score == 0.5
    assert not malformed.verified and not malformed.well_formed and malformed.score == 1.0
    lenient = Verifier(load_config(CotConfig, "cot", ["verify.threshold=0.5"]).verify)
    assert lenient.verify([draft(("Evan Morris", "Pfizer"))])[0].verified


def test_verification_uses_the_ramp_profile_like_answerability_teacher_and_reward():
    assert PROFILE == reading.PROFILE == answerability.PROFILE == RAMP_PROFILE == "ramp"
    verifier = Verifier(load_config(CotConfig, "cot").verify)
    # accents and Unicode punctuation folded: the fill the teacher read from a hit verifies
    folded, wrong = verifier.verify([draft(("Évan Mórris", "Genentech")), draft(("Évan Mórris", "Genentec"))])
    assert folded.verified and folded.score == 1.0
    assert not wrong.verified and wrong.score == 0.5
    qa = Task(
        task_id="q1",
        kind="qa",
        messages=({"role": "system", "content": "sys"}, {"role": "user", "content": "When? "}),
        golds=("1990–1995",),
    )
    messages = (*qa.messages, {"role": "assistant", "content": "<answer>1990-1995</answer>"})
    (dashed,) = verifier.verify([Draft(qa, messages, "1990-1995", ("1990-1995",), (), ())])
    assert dashed.verified and dashed.score == 1.0


def test_llm_judge_over_http():
    def judge(path, body):
        prompt = body["messages"][-1]["content"]
        accepted = prompt.split("Reference answer(s): ")[1].split("\n")[0].split(" | ")
        prediction = prompt.split("Predicted answer: ")[1].split("\n")[0]
        close = any(prediction.lower() in a.lower() for a in accepted if prediction)
        return "Verdict: correct" if close else "Verdict: incorrect"

    with ScriptedOpenAIServer(judge) as server:
        backend = OpenAIBackend(OpenAIBackendConfig(base_url=server.base_url, model="judge", max_retries=0))
        config = load_config(CotConfig, "cot", ["verify.method=judge"]).verify
        verifier = Verifier(config, LLMJudge(backend, load_templates().judge))
        # "Morris" is a partial fill: f1 0.67 per mask, but the judge accepts it.
        partial, wrong = verifier.verify([draft(("Morris", "Genentech")), draft(("Evan Morris", "Pfizer"))])
        backend.close()
    assert partial.verified and partial.judge_verdict is True and partial.score < 1.0
    assert not wrong.verified and wrong.judge_verdict is False
    assert len(server.requests) == 4  # one judge call per mask
