"""Samples or QA questions -> verified trajectories or dead-letter rows: what one pipeline worker runs.

``TrajectoryBuilder.from_config`` wires the search environment, the teacher and the verifier. Every
teacher runs the agent's one loop (:class:`ramp.agent.rollout.RolloutLoop`): the built-in and the
served-LLM teachers through the multi-agent :class:`~ramp.cot.policy.RolePolicy`, a student model
(the next self-evolving round) as the loop's generation backend. ``build`` returns exactly one
:class:`Trajectory` or :class:`Rejection` per input row, in order; a row is a RAMP sample
(``samples-*.parquet``) or a QA question (``{id, question, golden_answers}``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from ramp.agent.backends import build_backend, load_tokenizer
from ramp.agent.rollout import PolicyError, RolloutLoop
from ramp.agent.task import Task, task_from_row
from ramp.cot.config import CotConfig
from ramp.cot.drafts import Draft, draft_from_rollout
from ramp.cot.policy import role_loop
from ramp.cot.roles import load_role_templates
from ramp.cot.teachers import BuiltinTeacher, ChatTeacher
from ramp.cot.trajectories import Trajectory
from ramp.cot.verify import Verdict, Verifier
from ramp.data.rejections import Rejection
from ramp.prompts import PromptTemplates, load_templates
from ramp.retrieval.base import Retriever
from ramp.retrieval.config import build_retriever
from ramp.retrieval.env import SearchEnv
from ramp.rewards import LLMJudge

STAGE = "cot"


def _row_id(row: dict[str, Any], index: int) -> str:
    return str(row.get("sample_id", row.get("id", f"row:{index}")))


class TrajectoryBuilder:
    def __init__(
        self,
        loop: RolloutLoop,
        verifier: Verifier,
        teacher_name: str,
        teacher_model: str,
        round: int,
        closers: Sequence[Callable[[], None]] = (),
        task_templates: PromptTemplates | None = None,
    ) -> None:
        self.loop, self.verifier, self.task_templates = loop, verifier, task_templates
        self.teacher_name, self.teacher_model, self.round = teacher_name, teacher_model, round
        self._closers = list(closers)

    @classmethod
    def from_config(cls, config: CotConfig, retriever: Retriever | None = None) -> TrajectoryBuilder:
        """Build every part from ``config``; a given ``retriever`` is used (and not closed) instead."""
        closers: list[Callable[[], None]] = []
        if retriever is None:
            retriever = build_retriever(config.retriever)
            closers.append(retriever.close)
        env = SearchEnv(retriever, config.search)
        templates = load_role_templates(config.prompts)
        teacher_cfg = config.teacher
        loop: RolloutLoop
        if teacher_cfg.kind == "student":
            backend = build_backend(teacher_cfg.backend)
            closers.append(getattr(backend, "close", lambda: None))
            tokenizer = None
            if teacher_cfg.tokenizer:
                tokenizer = load_tokenizer(teacher_cfg.tokenizer)
            rollout = teacher_cfg.rollout.model_copy(update={"seed": config.seed, "n": 1})
            loop = RolloutLoop(backend, env, rollout, tokenizer)
            name, model = "student", teacher_cfg.model_name
        else:
            role_teacher: BuiltinTeacher | ChatTeacher
            if teacher_cfg.kind == "builtin":
                role_teacher = BuiltinTeacher(config.builtin, templates)
            else:
                backend = build_backend(teacher_cfg.backend)
                closers.append(getattr(backend, "close", lambda: None))
                role_teacher = ChatTeacher(
                    backend, teacher_cfg.model_name, templates, teacher_cfg, config.seed
                )
            loop = role_loop(role_teacher, templates, config.loop, env, config.seed)
            name, model = role_teacher.name, role_teacher.model
        judge = None
        if config.verify.method == "judge":
            judge_backend = build_backend(config.verify.judge_backend)
            closers.append(getattr(judge_backend, "close", lambda: None))
            judge = LLMJudge(judge_backend, load_templates().judge, config.verify.judge_max_new_tokens)
        task_templates = load_templates(config.task_prompts)
        return cls(loop, Verifier(config.verify, judge), name, model, config.round, closers, task_templates)

    def build(self, rows: Sequence[dict[str, Any]]) -> list[Trajectory | Rejection]:
        """One trajectory or rejection per row, in order."""
        outputs: list[Trajectory | Rejection | None] = [None] * len(rows)
        tasks: list[tuple[int, Task]] = []
        for i, row in enumerate(rows):
            try:
                tasks.append((i, task_from_row(row, self.task_templates)))
            except ValueError as err:
                payload = json.dumps(row, default=str)
                outputs[i] = Rejection(_row_id(row, i), STAGE, "bad_sample", str(err), payload)
        results = [draft_from_rollout(r) for r in self.loop.run([task for _, task in tasks])]
        drafts = [(i, r) for (i, _), r in zip(tasks, results, strict=True) if isinstance(r, Draft)]
        verdicts = self.verifier.verify([draft for _, draft in drafts])
        for (i, task), result in zip(tasks, results, strict=True):
            if isinstance(result, PolicyError):
                outputs[i] = Rejection(task.task_id, STAGE, result.reason, result.detail, task.user_prompt)
        for (i, draft), verdict in zip(drafts, verdicts, strict=True):
            outputs[i] = self._accept(draft, verdict) if verdict.verified else self._reject(draft, verdict)
        assert all(o is not None for o in outputs)
        return [o for o in outputs if o is not None]

    def _accept(self, draft: Draft, verdict: Verdict) -> Trajectory:
        task = draft.task
        return Trajectory(
            sample_id=task.task_id,
            kind=task.kind,
            teacher=self.teacher_name,
            teacher_model=self.teacher_model,
            round=self.round,
            messages=draft.messages,
            answer=draft.answer,
            fills=draft.fills,
            golds=task.golds,
            score=verdict.score,
            reward=verdict.reward,
            verified=verdict.verified,
            num_masks=task.num_masks,
            queries=draft.queries,
            retrieved_doc_ids=draft.retrieved_doc_ids,
            exclude_doc_ids=task.exclude_doc_ids,
            judge_verdict=verdict.judge_verdict,
        )

    def _reject(self, draft: Draft, verdict: Verdict) -> Rejection:
        detail = (
            f"score={verdict.score:.4f} reward={verdict.reward:.4f} well_formed={verdict.well_formed} "
            f"judge={verdict.judge_verdict}"
        )
        payload = json.dumps(
            {"fills": list(draft.fills), "golds": list(draft.task.golds), "queries": list(draft.queries)},
            ensure_ascii=False,
        )
        return Rejection(draft.task.task_id, STAGE, "not_verified", detail, payload)

    def close(self) -> None:
        for close in self._closers:
            close()
