"""The search environment: the one place every stage searches through (CoT builder, rollouts, RL, eval).

``SearchEnv`` owns the retriever and the settings of one ``search:`` config section: documents per
search (``top_k``), characters shown per document (``max_chars_per_doc``: hits come back cut to what
the model is shown), the documents budget of an episode (``budget_docs``) and the token budget of a
whole conversation (``max_context_tokens``, enforced by the agent loop). Each episode (one task, one
sample) gets a :class:`SearchEpisode` holding its excluded documents (the sample's own passage, at
least) and what is left of its budget. The environment returns hits and a status; turning them into
the text the model reads is the agent protocol's job (``ramp.agent.protocol.format_result_block``),
so this module never imports ``ramp.agent``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from ramp.config import StrictModel
from ramp.retrieval.base import Hit, Retriever

SearchStatus = Literal["ok", "no_query", "no_budget"]
ELLIPSIS = "…"


class SearchConfig(StrictModel):
    """The ``search:`` section shared by the agent, CoT, RL and evaluation configs."""

    top_k: int = Field(default=3, ge=1)  # documents per search (Search-R1's default)
    max_chars_per_doc: int | None = Field(default=600, ge=1)  # characters of a document shown
    budget_docs: int | None = Field(default=None, ge=0)  # documents over a whole episode
    max_context_tokens: int | None = Field(default=None, ge=1)  # prompt + turns + results (agent loop)


def shown_text(text: str, max_chars: int | None) -> str:
    """``text`` with whitespace collapsed, cut at a word boundary to at most ``max_chars`` characters."""
    text = " ".join(text.split())
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


def shown_hit(hit: Hit, max_chars: int | None) -> Hit:
    """``hit`` as the model sees it: whitespace collapsed, text cut (ending with ``…`` when cut)."""
    full = " ".join(hit.text.split())
    text = shown_text(full, max_chars)
    return Hit(hit.doc_id, " ".join(hit.title.split()), text + (ELLIPSIS if text != full else ""), hit.score)


@dataclass
class SearchEpisode:
    """One task's search state: documents it must never see and documents left in its budget."""

    exclude_doc_ids: frozenset[str]
    docs_left: int | None  # None: no budget


@dataclass(frozen=True)
class SearchOutcome:
    query: str
    hits: tuple[Hit, ...]  # shown hits, best first
    status: SearchStatus  # ok (hits may be empty) | no_query (empty query) | no_budget


class SearchEnv:
    """Batched search with per-episode exclusions and budgets; hits cut to what the model is shown."""

    def __init__(
        self, retriever: Retriever, config: SearchConfig | None = None, owns_retriever: bool = False
    ):
        self.retriever = retriever
        self.config = config or SearchConfig()
        self._owns = owns_retriever

    def episode(self, exclude_doc_ids: Iterable[str] = ()) -> SearchEpisode:
        return SearchEpisode(frozenset(exclude_doc_ids), self.config.budget_docs)

    def search(self, calls: Sequence[tuple[SearchEpisode, str | None]]) -> list[SearchOutcome]:
        """One outcome per ``(episode, query)``, in order; one retriever call per distinct ``k``.

        ``k`` is ``top_k``, or what is left of the episode's budget if less; the hits are charged to
        the episode. An empty query or an exhausted budget searches nothing.
        """
        outcomes: list[SearchOutcome | None] = [None] * len(calls)
        by_k: dict[int, list[int]] = {}
        for i, (episode, query) in enumerate(calls):
            query = (query or "").strip()
            k = self.config.top_k if episode.docs_left is None else min(self.config.top_k, episode.docs_left)
            if not query:
                outcomes[i] = SearchOutcome("", (), "no_query")
            elif k <= 0:
                outcomes[i] = SearchOutcome(query, (), "no_budget")
            else:
                by_k.setdefault(k, []).append(i)
        for k, group in by_k.items():
            found = self.retriever.search(
                [(calls[i][1] or "").strip() for i in group],
                k=k,
                exclude_doc_ids=[calls[i][0].exclude_doc_ids for i in group],
            )
            for i, hits in zip(group, found, strict=True):
                episode, query = calls[i]
                shown = tuple(shown_hit(hit, self.config.max_chars_per_doc) for hit in hits)
                if episode.docs_left is not None:
                    episode.docs_left = max(0, episode.docs_left - len(shown))
                outcomes[i] = SearchOutcome((query or "").strip(), shown, "ok")
        return [o for o in outcomes if o is not None]

    def close(self) -> None:
        """Close the retriever if this environment built it."""
        if self._owns:
            self.retriever.close()
