"""The no-model ``builtin`` QA policy: one search for the question, then read the answer off the hits.

The question becomes a one-mask passage: its wh-word (the question's first word if that is one, else
its last wh-word, e.g. "... ended when?") is replaced by ``[mask]``; the built-in teacher's reader
(:func:`ramp.cot.reading.read_mask`) then scores candidate spans in the top hits by the question words
around that anchor. Spans shown in the question are not candidates. Two question shapes are special:

- a choice ("Which came first, A or B?"): the option the reading names, else the first option;
- a yes/no question (starting with an auxiliary verb such as "Were ...", no choice): ``yes``.

Deterministic: the same hits give the same answer. It is a floor every model should beat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ramp.cot.config import BuiltinTeacherConfig
from ramp.cot.reading import mask_windows, read_mask
from ramp.data.samples import MASK_TOKEN
from ramp.metrics import normalize_answer
from ramp.qa.loaders import QARecord
from ramp.qa.scoring import PolicyAnswer
from ramp.retrieval.base import Retriever

_WH = re.compile(
    r"\b(what|which|who|whom|whose|when|where|why|how(?:\s+(?:many|much|long|old|far))?)\b", re.I
)
_AUXILIARIES = frozenset(
    "is are was were do does did can could has have had will would should shall may might".split()  # noqa: SIM905
)


def choice_options(question: str) -> list[str]:
    """``["A", "B"]`` for "Which ..., A or B?" (the last ``,``/``:``/``;`` clause with "or"), else ``[]``."""
    clauses = re.split(r"[,:;]", question.rstrip(" ?"))[1:]
    for clause in reversed(clauses):
        parts = [p.strip(" \"'") for p in re.split(r"\s+or\s+", clause)]
        if len(parts) >= 2 and all(parts):
            return [re.sub(r"^(?:the|a|an)\s+", "", p, flags=re.IGNORECASE) for p in parts]
    return []


def is_yes_no(question: str) -> bool:
    words = question.split()
    return bool(words) and words[0].lower() in _AUXILIARIES


def masked_question(question: str) -> str:
    """The question as a one-mask passage (see the module docstring)."""
    text = question.strip().rstrip("?").strip()
    matches = list(_WH.finditer(text))
    if not matches:
        return f"{text} {MASK_TOKEN}"
    first = matches[0]
    anchor = first if first.start() == 0 else matches[-1]
    return f"{text[: anchor.start()]}{MASK_TOKEN}{text[anchor.end() :]}"


class BuiltinQAPolicy:
    """Search the question (top ``k``), read the answer; one search per question."""

    def __init__(self, retriever: Retriever, k: int, config: BuiltinTeacherConfig | None = None) -> None:
        self.retriever, self.k, self.config = retriever, k, config or BuiltinTeacherConfig()

    def answer(self, records: Sequence[QARecord]) -> list[PolicyAnswer]:
        questions = [r.question for r in records]
        found = self.retriever.search(questions, k=self.k) if questions else []
        answers = []
        for question, hits in zip(questions, found, strict=True):
            prediction = self.read(question, hits)
            answers.append(
                PolicyAnswer(
                    prediction=prediction,
                    finish_reason="answer" if prediction is not None else "no_answer",
                    turns=1,
                    queries=[question],
                    retrieved_ids=[[h.doc_id for h in hits]],
                )
            )
        return answers

    def read(self, question: str, hits: Sequence) -> str | None:
        """The answer to ``question`` from ``hits``, or None when nothing can be read."""
        options = choice_options(question)
        if not options and is_yes_no(question):
            return "yes"
        masked = masked_question(question)
        left, right = mask_windows(masked, self.config.window)[0]
        visible = masked
        for option in options:  # the options must stay candidates
            visible = visible.replace(option, " ")
        reading = read_mask(hits, left, right, visible, self.config)
        if options:
            fill = normalize_answer(reading.fill) if reading else ""
            named = [
                o for o in options if fill and (fill in normalize_answer(o) or normalize_answer(o) in fill)
            ]
            return (named or options)[0]
        return reading.fill if reading else None
