"""Harder questions from easy ones: WebDancer's E2HQA synthesis (arXiv 2505.22648), verified by retrieval.

A seed is a simple fact question with its answer (a QA row ``{id, question, golden_answers}``) that one
search answers. Each hop picks an entity of the question (after the first hop, one named in the newest
description, so the chain grows deeper), searches for it, and replaces it by a description of it written
from the passage found: by rule (a sentence of the passage that opens with the entity, e.g.
``K was founded by X in 1803.`` -> ``the company founded by X in 1803``) or by an LLM (``backend: openai``).
A description is kept only when a search for it ranks the entity's passage in the top ``verify_k`` (first,
by default) with the entity's name in it, no other hit of that search states every fact of it that the
entity's passage states (it singles the entity out), and it names neither the entity, nor the answer, nor
an entity replaced before.
After ``hops`` replacements the question needs ``hops + 1`` searches: the innermost description finds its
entity, whose name completes the description around it, and so on out to the seed question, whose search
finds the answer. A seed that cannot be taken that far is rejected with its reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field

from ramp.agent.config import OpenAIBackendConfig
from ramp.config import StrictModel
from ramp.data.rejections import Rejection
from ramp.retrieval.base import Hit, Retriever
from ramp.retrieval.config import RetrieverConfig
from ramp.text import contains, content_tokens, normalize

STAGE = "synthesize"
# Capitalised runs (``University of Oxford``); a question's opening word is dropped when it is one of these.
_CANDIDATE = re.compile(r"[A-Z][\w'’-]*(?:\s+(?:(?:of|de|del|van|von|der|la|le)\s+)?[A-Z][\w'’-]*)*")
_OPENERS = frozenset(
    (
        *("In", "On", "At", "Of", "For", "By", "From", "To", "With", "The", "A", "An"),
        *("Which", "What", "Who", "Whom", "Whose", "When", "Where", "Why", "How", "Name", "List", "Give"),
        *("Is", "Was", "Are", "Were", "Did", "Does", "Do", "Has", "Have", "Had"),
    )
)
_NOUN_ENDS = frozenset({"of", "in", "on", "at", "from", "for", "by", "with", "whose", "that", "which", "who"})
_POSSESSIVES = frozenset({"Its", "His", "Her", "Their"})
_SUBJECTS = {"It": "that", "He": "who", "She": "who", "They": "that"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_COPULA = re.compile(r"(?:is|was|are|were)\s+(?:a|an|the)\s+(.+)", re.S)
_PARTICIPLE = re.compile(
    r"(?:is|was|are|were)\s+((?:\w+ed|\w+en|born|built|made|held|known|set|run)\b.*)", re.S
)


class SynthConfig(StrictModel):
    """``synth``: how seeds become harder questions."""

    hops: int = Field(default=2, ge=1)  # entities replaced: the question then needs hops + 1 searches
    backend: Literal["rules", "openai"] = "rules"  # who writes a description from a passage
    openai: OpenAIBackendConfig = OpenAIBackendConfig()
    temperature: float = Field(default=0.0, ge=0)
    max_new_tokens: int = Field(default=64, ge=1)
    search_k: int = Field(default=5, ge=1)  # hits read when searching for an entity
    verify_k: int = Field(default=1, ge=1)  # a search must rank the passage it needs in this top
    max_candidates: int = Field(default=4, ge=1)  # entities tried per hop
    min_description_words: int = Field(default=3, ge=1)
    max_description_words: int = Field(default=30, ge=1)
    seed: int = 0


class SynthOutputConfig(StrictModel):
    num_shards: int = Field(default=1, ge=1)


class SynthesisSettings(StrictModel):
    """The whole ``configs/synth.yaml``."""

    retriever: RetrieverConfig = RetrieverConfig(kind="lucene", index="runs/index")
    synth: SynthConfig = SynthConfig()
    output: SynthOutputConfig = SynthOutputConfig()


@dataclass(frozen=True)
class Seed:
    id: str
    question: str
    answers: tuple[str, ...]


def seed_from_row(row: Mapping[str, Any]) -> Seed:
    """A seed from a QA row ``{id, question, golden_answers}``; ``ValueError`` naming what is wrong."""
    question, answers = row.get("question"), row.get("golden_answers")
    if row.get("id") is None:
        raise ValueError("a seed row needs an 'id'")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("a seed row needs a non-empty 'question'")
    if isinstance(answers, str) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError("a seed row needs 'golden_answers', a non-empty list of strings")
    return Seed(str(row["id"]), " ".join(question.split()), tuple(answers))


@dataclass(frozen=True)
class Hop:
    """One replacement: ``replaced`` (the entity, with ``the <noun>`` before it when the question had it)
    became ``description``, whose search ranks ``doc_id`` (a passage naming ``entity``) in the top k."""

    entity: str
    replaced: str
    description: str
    doc_id: str


@dataclass(frozen=True)
class SynthesizedQuestion:
    seed: Seed
    question: str
    hops: tuple[Hop, ...]  # in the order they were made; a solver undoes them from the last
    answer_doc_id: str  # the passage the seed question's search finds the answer in
    backend: str

    def to_row(self) -> dict[str, Any]:
        """A QA row (FlashRAG layout: every QA stage reads it) with the chain under ``metadata``."""
        return {
            "id": f"{self.seed.id}/e2h{len(self.hops)}",
            "question": self.question,
            "golden_answers": list(self.seed.answers),
            "metadata": {
                "seed_id": self.seed.id,
                "seed_question": self.seed.question,
                "hops": len(self.hops),
                "searches": len(self.hops) + 1,
                "answer_doc_id": self.answer_doc_id,
                "chain": [asdict(hop) for hop in self.hops],
                "backend": self.backend,
            },
        }


# A describer: (entity, the passage about it, the noun the question calls it) -> candidate descriptions.
Describer = Callable[[str, Hit, str | None], list[str]]


def rule_descriptions(entity: str, hit: Hit, noun: str | None) -> list[str]:
    """Descriptions of ``entity`` from the sentences of ``hit`` (a passage about it), in order: one that
    opens with it, ``E is a X`` -> ``the X``, ``E was founded by Y`` -> ``the <noun> founded by Y``, ``E
    <predicate>`` -> ``the <noun> that <predicate>``; one that opens with a pronoun for it, ``Its Z are
    in W`` -> ``the <noun> whose Z are in W``, ``He studied X`` -> ``the <noun> who studied X`` (``noun``
    the question's word for it, else the passage's: ``municipality`` in ``E is a municipality of ...``)."""
    sentences = _SENTENCE_END.split(" ".join(hit.text.split()))
    one = noun or next(filter(None, (_head_noun(entity, s) for s in sentences)), "one")
    out = []
    for sentence in sentences:
        opener, _, rest = sentence.partition(" ")
        rest = rest.rstrip(".!?").strip()
        if sentence.startswith(entity + " "):
            predicate = sentence[len(entity) :].strip().rstrip(".!?").strip()
            if copula := _COPULA.fullmatch(predicate):
                out.append(f"the {copula.group(1)}")
            elif participle := _PARTICIPLE.fullmatch(predicate):
                out.append(f"the {one} {participle.group(1)}")
            elif predicate:
                out.append(f"the {one} that {predicate}")
        elif rest and opener in _POSSESSIVES:
            out.append(f"the {one} whose {rest}")
        elif rest and opener in _SUBJECTS:
            out.append(f"the {one} {_SUBJECTS[opener]} {rest}")
    return out


def _head_noun(entity: str, sentence: str) -> str | None:
    """The noun that ``E is a <noun> ...`` calls the entity: the last word before the first preposition,
    participle, clause word or comma (``glassware company founded in 1803`` -> ``company``)."""
    if not sentence.startswith(entity + " "):
        return None
    copula = _COPULA.fullmatch(sentence[len(entity) :].strip().rstrip(".!?"))
    head = None
    for word in copula.group(1).split() if copula else ():
        if word.lower() in _NOUN_ENDS or _PARTICIPLE.fullmatch(f"was {word}"):
            break
        head = word.rstrip(",")
        if word.endswith(","):
            break
    return head


def description_prompt(entity: str, hit: Hit, noun: str | None) -> list[dict[str, str]]:
    """The LLM describer's prompt: a description of ``entity`` from one passage, without its name."""
    called = f" (the question calls it a {noun})" if noun else ""
    return [
        {"role": "system", "content": "You rewrite quiz questions to make them harder."},
        {
            "role": "user",
            "content": (
                f"Passage: {hit.title}\n{' '.join(hit.text.split())}\n\n"
                f"Write a short description of {entity}{called} that identifies it from facts in the "
                f"passage, without naming {entity}. Start with 'the', reply with the description only."
            ),
        },
    ]


def entity_candidates(text: str) -> list[str]:
    """Capitalised names in ``text``, in order (a question's opening word such as ``Which`` dropped)."""
    found = []
    for match in _CANDIDATE.finditer(text):
        words = match.group(0).split()
        while words and words[0] in _OPENERS:
            words = words[1:]
        if words and " ".join(words) not in found:
            found.append(" ".join(words))
    return found


def _norm(text: str) -> str:
    return normalize(text, "ramp")


def _names(haystack: str, needle: str) -> bool:
    return contains(_norm(haystack), _norm(needle))


def _clean(description: str) -> str:
    text = " ".join(description.strip().strip("\"'`").split()).rstrip(".")
    return text[:1].lower() + text[1:] if text.lower().startswith("the ") else text


def passage_about(entity: str, hits: Sequence[Hit]) -> Hit | None:
    """The hit whose title is ``entity``, else the first whose text opens with it."""
    for hit in hits:
        if _norm(hit.title) == _norm(entity):
            return hit
    return next((hit for hit in hits if " ".join(hit.text.split()).startswith(entity + " ")), None)


class QuestionSynthesizer:
    """Seeds -> :class:`SynthesizedQuestion` or :class:`~ramp.data.rejections.Rejection` (with its reason)."""

    def __init__(self, retriever: Retriever, config: SynthConfig, describe: Describer | None = None) -> None:
        self.retriever, self.config = retriever, config
        self.describe = describe or rule_descriptions

    def _search(self, query: str, k: int) -> list[Hit]:
        return self.retriever.search([query], k=k)[0]

    def synthesize(self, seed: Seed) -> SynthesizedQuestion | Rejection:
        cfg = self.config
        if any(_names(seed.question, answer) for answer in seed.answers):
            return self._reject(seed, "answer_in_question", "the seed question names its answer")
        found = next(
            (
                h
                for h in self._search(seed.question, cfg.verify_k)
                if any(_names(_text(h), a) for a in seed.answers)
            ),
            None,
        )
        if found is None:
            return self._reject(
                seed, "seed_not_answerable", f"no answer in the top {cfg.verify_k} hits of the seed question"
            )
        question, hops, focus = seed.question, list[Hop](), seed.question
        for hop_number in range(1, cfg.hops + 1):
            replaced = [h.entity for h in hops]
            inside = entity_candidates(focus)
            candidates = [
                e
                for e in [*inside, *(c for c in entity_candidates(question) if c not in inside)]
                if e not in replaced
                and question.count(e) == 1
                and not any(_names(e, a) or _names(a, e) for a in seed.answers)
            ]
            if not candidates:
                reason = "no_entity" if hop_number == 1 else "no_verified_rewrite"
                return self._reject(
                    seed, reason, f"hop {hop_number}: no entity left to replace in {question!r}"
                )
            tried = []
            for entity in candidates[: cfg.max_candidates]:
                outcome = self._rewrite(question, entity, seed.answers, replaced)
                if isinstance(outcome, Hop):
                    hops.append(outcome)
                    question = _replace(question, outcome.replaced, outcome.description)
                    focus = outcome.description
                    break
                tried.append(f"{entity}: {outcome}")
            else:
                return self._reject(seed, "no_verified_rewrite", f"hop {hop_number}: " + "; ".join(tried))
        return SynthesizedQuestion(seed, question, tuple(hops), found.doc_id, cfg.backend)

    def _rewrite(
        self, question: str, entity: str, answers: Sequence[str], replaced: Sequence[str]
    ) -> Hop | str:
        """A verified replacement of ``entity`` in ``question``, or why there is none."""
        cfg = self.config
        about = passage_about(entity, self._search(entity, cfg.search_k))
        if about is None:
            return f"no passage about it in the top {cfg.search_k}"
        context = re.search(rf"\bthe ([a-z]+) {re.escape(entity)}", question)
        noun = context.group(1) if context else None
        span = context.group(0) if context else entity
        problems = []
        for raw in self.describe(entity, about, noun):
            description = _clean(raw)
            words = len(description.split())
            if not cfg.min_description_words <= words <= cfg.max_description_words:
                problems.append(f"{words} words")
            elif _names(description, entity) or any(_names(description, e) for e in replaced):
                problems.append("names an entity it should hide")
            elif any(_names(description, a) for a in answers):
                problems.append("names the answer")
            elif not _finds(
                (hits := self._search(description, max(cfg.search_k, cfg.verify_k)))[: cfg.verify_k],
                about.doc_id,
                entity,
            ):
                problems.append(f"its search misses {about.doc_id} in the top {cfg.verify_k}")
            elif others := _also_fit(description, about, hits):
                problems.append(f"{', '.join(others)} fit it too")
            else:
                inserted = (
                    description[:1].upper() + description[1:] if question.startswith(span) else description
                )
                return Hop(entity, span, inserted, about.doc_id)
        return "no description (" + ", ".join(dict.fromkeys(problems or ["none written"])) + ")"

    @staticmethod
    def _reject(seed: Seed, reason: str, detail: str) -> Rejection:
        return Rejection(seed.id, STAGE, reason, detail, seed.question)


def _text(hit: Hit) -> str:
    return f"{hit.title} {hit.text}"


def _finds(hits: Sequence[Hit], doc_id: str, entity: str) -> bool:
    return any(h.doc_id == doc_id and _names(_text(h), entity) for h in hits)


def _also_fit(description: str, about: Hit, hits: Sequence[Hit]) -> list[str]:
    """Other hits that state every fact of ``description`` that ``about`` states (its content words found
    in ``about``): the description would not single the entity out."""
    own = set(content_tokens(_text(about)))
    facts = {t for t in content_tokens(description) if t in own}
    return [h.doc_id for h in hits if h.doc_id != about.doc_id and facts <= set(content_tokens(_text(h)))]


def _replace(question: str, span: str, description: str) -> str:
    return question.replace(span, description, 1)


def format_synthesis_stats(stats: Mapping[str, Any]) -> str:
    """The console summary of a ``ramp data synthesize`` run."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in stats["rejected_by_reason"].items()) or "none"
    hops = ", ".join(f"{h} hops: {n}" for h, n in stats["kept_by_hops"].items()) or "none"
    check = "ok" if stats["accounted"] else "MISMATCH"
    return (
        f"{stats['seeds_in']} seeds -> {stats['kept']} questions ({hops}), {stats['rejected']} rejected "
        f"({reasons}); seeds in = kept + rejected ({check}); backend {stats['backend']}"
    )
