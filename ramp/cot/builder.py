"""Samples -> verified trajectories or dead-letter rows: what one pipeline worker runs per batch.

``TrajectoryBuilder.from_config`` wires the retriever, the teacher (built-in, served LLM, or a
student model for the next self-evolving round) and the verifier. ``build`` returns exactly one
:class:`Trajectory` or :class:`Rejection` per input row, in order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from ramp.agent.backends import build_backend
from ramp.cot.config import CotConfig
from ramp.cot.loop import CotTask, Draft, Failure, run_episodes
from ramp.cot.roles import load_role_templates
from ramp.cot.teachers import BuiltinTeacher, ChatTeacher
from ramp.cot.trajectories import Trajectory
from ramp.cot.verify import Verdict, Verifier
from ramp.data.rejections import Rejection
from ramp.data.samples import MASK_TOKEN, Sample
from ramp.prompts import load_templates
from ramp.retrieval.base import Retriever
from ramp.retrieval.config import build_retriever
from ramp.rewards import LLMJudge

STAGE = "cot"
Runner = Callable[[Sequence[CotTask]], list[Draft | Failure]]


def task_from_row(row: dict[str, Any]) -> CotTask:
    """A sample row -> task; raises ValueError on a row that is not a consistent RAMP sample."""
    try:
        sample = Sample.from_row(row)
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a sample row: {err}") from None
    masks_in_text = sample.masked_passage.count(MASK_TOKEN)
    if not sample.num_masks or masks_in_text != sample.num_masks or len(sample.answers) != sample.num_masks:
        raise ValueError(
            f"{sample.num_masks} masks, {masks_in_text} mask tokens and {len(sample.answers)} answers"
        )
    return CotTask.from_sample(sample)


class TrajectoryBuilder:
    def __init__(
        self,
        runner: Runner,
        verifier: Verifier,
        teacher_name: str,
        teacher_model: str,
        round: int,
        closers: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.runner, self.verifier = runner, verifier
        self.teacher_name, self.teacher_model, self.round = teacher_name, teacher_model, round
        self._closers = list(closers)

    @classmethod
    def from_config(cls, config: CotConfig, retriever: Retriever | None = None) -> TrajectoryBuilder:
        """Build every part from ``config``; a given ``retriever`` is used (and not closed) instead."""
        closers: list[Callable[[], None]] = []
        if retriever is None:
            retriever = build_retriever(config.retriever)
            closers.append(retriever.close)
        templates = load_role_templates(config.prompts)
        teacher_cfg = config.teacher
        runner: Runner
        if teacher_cfg.kind == "student":
            from ramp.cot.student import StudentRunner

            student = StudentRunner.from_config(teacher_cfg, retriever, config.seed)
            runner, name, model = student.run, "student", student.model
            closers.append(student.close)
        else:
            role_teacher: BuiltinTeacher | ChatTeacher
            if teacher_cfg.kind == "builtin":
                role_teacher = BuiltinTeacher(config.builtin, templates)
            else:
                backend = build_backend(teacher_cfg.backend)
                closers.append(getattr(backend, "close", lambda: None))
                model = teacher_cfg.model_name
                role_teacher = ChatTeacher(backend, model, templates, teacher_cfg, config.seed)
            runner = partial(
                run_episodes,
                teacher=role_teacher,
                retriever=retriever,
                templates=templates,
                config=config.loop,
            )
            name, model = role_teacher.name, role_teacher.model
        judge = None
        if config.verify.method == "judge":
            judge_backend = build_backend(config.verify.judge_backend)
            closers.append(getattr(judge_backend, "close", lambda: None))
            judge = LLMJudge(judge_backend, load_templates().judge, config.verify.judge_max_new_tokens)
        return cls(runner, Verifier(config.verify, judge), name, model, config.round, closers)

    def build(self, rows: Sequence[dict[str, Any]]) -> list[Trajectory | Rejection]:
        """One trajectory or rejection per row, in order."""
        outputs: list[Trajectory | Rejection | None] = [None] * len(rows)
        tasks: list[tuple[int, CotTask]] = []
        for i, row in enumerate(rows):
            try:
                tasks.append((i, task_from_row(row)))
            except ValueError as err:
                record_id = str(row.get("sample_id", f"row:{i}"))
                outputs[i] = Rejection(record_id, STAGE, "bad_sample", str(err), json.dumps(row, default=str))
        results = self.runner([task for _, task in tasks])
        drafts = [(i, r) for (i, _), r in zip(tasks, results, strict=True) if isinstance(r, Draft)]
        verdicts = self.verifier.verify([draft for _, draft in drafts])
        for (i, task), result in zip(tasks, results, strict=True):
            if isinstance(result, Failure):
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
