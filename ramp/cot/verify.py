"""Verification of finished episodes: only correct, well-formed trajectories are kept.

Every draft gets its answer score (``ramp_answer_score`` / ``qa_reward`` with ``verify.reward``) and
its combined reward (answer + format, ``combined_reward`` over the whole assistant turn, results
included). It is verified when the turn is well formed (``format_reward`` = 1) and either the score
reaches ``verify.threshold`` (``method: score``) or the LLM judge calls every fill correct
(``method: judge``, with the RL reward's judge prompt ``judge`` of ``configs/prompts.yaml``; the score
is still recorded).

The score is normalised with the ``ramp`` profile (``PROFILE``, :mod:`ramp.text`), for RAMP and QA drafts
alike, so "verified" agrees with answerability, the built-in teacher and the RAMP reward ("1990–1995"
verifies a gold "1990-1995"); the recorded combined reward keeps the RL rewards' own profiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ramp.cot.config import VerifyConfig
from ramp.cot.drafts import Draft
from ramp.rewards import JudgeItem, LLMJudge, combined_reward, qa_reward, ramp_answer_score
from ramp.text import Profile

PROFILE: Profile = "ramp"  # the normalisation profile of verification


@dataclass(frozen=True)
class Verdict:
    score: float
    reward: float
    well_formed: bool
    judge_verdict: bool | None
    verified: bool


def assistant_turn(draft: Draft) -> str:
    """The single assistant turn the student learns: assistant and tool contents concatenated."""
    return "".join(m["content"] for m in draft.messages if m["role"] in ("assistant", "tool"))


class Verifier:
    def __init__(self, config: VerifyConfig, judge: LLMJudge | None = None) -> None:
        if config.method == "judge" and judge is None:
            raise ValueError("verify.method=judge needs an LLMJudge")
        self.config, self.judge = config, judge

    def _score(self, draft: Draft) -> float:
        task, reward = draft.task, self.config.reward
        if task.kind == "ramp":
            return ramp_answer_score(draft.fills, task.golds, reward.metric, reward, profile=PROFILE)
        return qa_reward(draft.fills[0], task.golds, reward.metric, reward, profile=PROFILE)

    def _judge(self, draft: Draft) -> bool:
        assert self.judge is not None
        task = draft.task
        if task.kind == "ramp":
            return self.judge.ramp_score(task.source, draft.fills, task.golds) == 1.0
        verdict = self.judge.judge(
            [JudgeItem(context=task.user_prompt, golds=task.golds, prediction=draft.fills[0])]
        )
        return verdict[0].score == 1.0

    def verify(self, drafts: Sequence[Draft]) -> list[Verdict]:
        verdicts = []
        for draft in drafts:
            task = draft.task
            num_masks = task.num_masks if task.kind == "ramp" else None
            breakdown = combined_reward(
                assistant_turn(draft), task.golds, num_masks=num_masks, config=self.config.reward
            )
            score = self._score(draft)
            well_formed = breakdown.format == 1.0
            judged = self._judge(draft) if self.config.method == "judge" else None
            correct = judged if judged is not None else score >= self.config.threshold
            verdicts.append(Verdict(score, breakdown.total, well_formed, judged, well_formed and correct))
        return verdicts
