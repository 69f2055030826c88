"""Teachers that play the planner, rewriter and observer roles (:class:`ramp.cot.policy.RolePolicy`).

- :class:`ChatTeacher`: one served LLM (any :class:`GenerationBackend` taking chat messages, e.g. the
  ``openai`` backend) plays every role with the prompts of ``configs/cot_prompts.yaml``.
- :class:`BuiltinTeacher`: no LLM. It searches for the sentence around each mask (and its nearest
  context words) and takes the candidate fill that the mask's context words surround best in the
  hits (:mod:`ramp.cot.reading`); it reads only the masked passage, never the answers.
  It makes trajectories on machines without a model and is the baseline an LLM teacher has to
  beat on verified yield. It has no QA mode: QA tasks are rejected as ``unsupported_task``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from ramp.agent.backends.base import GenerationBackend, GenerationRequest, GenerationResult
from ramp.agent.rollout import PolicyError
from ramp.cot.config import BuiltinTeacherConfig, TeacherConfig
from ramp.cot.policy import RoleEpisode
from ramp.cot.reading import (
    Reading,
    candidate_readings,
    content_word_count,
    context_query,
    mask_query,
    mask_windows,
    neighbour_sentence,
    substitute_fills,
)
from ramp.cot.roles import (
    ChatMessages,
    Observation,
    PlanOutput,
    RoleTemplates,
    UnparseableOutput,
    format_history,
    observer_messages,
    parse_observation,
    parse_plan,
    parse_rewrites,
    planner_messages,
    rewriter_messages,
)
from ramp.seeding import stable_seed

T = TypeVar("T")
UNSUPPORTED_QA = PolicyError(
    "unsupported_task", "the built-in teacher has no QA mode: use --teacher openai or --teacher student"
)


class ChatTeacher:
    """A served LLM playing all three roles; every request is seeded from (seed, task, role, turn)."""

    name = "openai"

    def __init__(
        self,
        backend: GenerationBackend,
        model: str,
        templates: RoleTemplates,
        config: TeacherConfig,
        seed: int,
    ) -> None:
        self.backend, self.model, self.templates, self.config, self.seed = (
            backend,
            model,
            templates,
            config,
            seed,
        )

    def _request(self, episode: RoleEpisode, role: str, messages: ChatMessages) -> GenerationRequest:
        return GenerationRequest(
            messages=messages,
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=stable_seed(self.seed, episode.task.task_id, role, episode.searches) % 2**31,
        )

    def _generate(self, requests: list[GenerationRequest]) -> list[GenerationResult | PolicyError]:
        """All requests in one backend call; if it fails, one by one, so a failure stays with its task."""
        try:
            return list(self.backend.generate(requests))
        except Exception:
            results: list[GenerationResult | PolicyError] = []
            for request in requests:
                try:
                    results.append(self.backend.generate([request])[0])
                except Exception as err:
                    results.append(PolicyError("teacher_error", f"{type(err).__name__}: {err}"[:500]))
            return results

    def _run(
        self,
        episodes: Sequence[RoleEpisode],
        role: str,
        prompts: list[ChatMessages],
        parse: Callable[[str], T],
    ) -> list[T | PolicyError]:
        requests = [self._request(e, role, p) for e, p in zip(episodes, prompts, strict=True)]
        parsed: list[T | PolicyError] = []
        for result in self._generate(requests):
            if isinstance(result, PolicyError):
                parsed.append(result)
                continue
            try:
                parsed.append(parse(result.text))
            except UnparseableOutput as err:
                parsed.append(
                    PolicyError("unparseable_teacher_output", f"{role}: {err}: {result.text[:300]!r}")
                )
        return parsed

    def plan(self, episodes: Sequence[RoleEpisode]) -> list[PlanOutput | PolicyError]:
        prompts = [planner_messages(self.templates, e.task.user_prompt) for e in episodes]
        return self._run(episodes, "planner", prompts, parse_plan)

    def rewrite(
        self, episodes: Sequence[RoleEpisode], queries: Sequence[str], num_queries: int
    ) -> list[list[str] | PolicyError]:
        prompts = [
            rewriter_messages(self.templates, e.task.user_prompt, query, num_queries)
            for e, query in zip(episodes, queries, strict=True)
        ]
        return self._run(episodes, "rewriter", prompts, lambda text: parse_rewrites(text, num_queries))

    def observe(self, episodes: Sequence[RoleEpisode]) -> list[Observation | PolicyError]:
        prompts = [
            observer_messages(
                self.templates, e.task.user_prompt, e.plan, format_history(e.history()), e.turns_left
            )
            for e in episodes
        ]
        return self._run(episodes, "observer", prompts, parse_observation)


class BuiltinTeacher:
    """Deterministic search-and-read for RAMP tasks: one mask at a time, in passage order.

    Scratch state per episode: ``focus`` (the mask being searched), ``searched`` (masks searched
    so far) and ``reported`` (masks whose evidence the reasoning already quoted).
    """

    name = "builtin"
    model = ""

    def __init__(self, config: BuiltinTeacherConfig, templates: RoleTemplates) -> None:
        self.config, self.templates = config, templates

    def _queries(self, episode: RoleEpisode, index: int) -> list[str]:
        """Mask ``index``'s queries: its sentence (with the neighbouring one when it has too few
        content words), then its nearest words; the other masks' fills read so far are shown."""
        c = self.config
        fills: dict[int, str] = episode.scratch.get("fills", {}) if c.chain else {}
        text, at = substitute_fills(episode.task.source, fills, index)
        sentence = mask_query(text, at, c.query_max_words)
        if content_word_count(sentence) < c.min_query_words:
            extra = neighbour_sentence(text, at).split()[: max(0, c.query_max_words - len(sentence.split()))]
            sentence = " ".join([sentence, *extra]) if extra else sentence
        near = context_query(text, at, c.context_words)
        return [q for q in (sentence, near) if q]

    def plan(self, episodes: Sequence[RoleEpisode]) -> list[PlanOutput | PolicyError]:
        plans: list[PlanOutput | PolicyError] = []
        for episode in episodes:
            if episode.task.kind != "ramp":
                plans.append(UNSUPPORTED_QA)
                continue
            episode.scratch.update(focus=0, searched={0}, reported=set())
            think = self.templates.builtin_plan.format(num_masks=episode.task.num_masks, index=1)
            plans.append(PlanOutput(think=" ".join(think.split()), query=self._queries(episode, 0)[0]))
        return plans

    def rewrite(
        self, episodes: Sequence[RoleEpisode], queries: Sequence[str], num_queries: int
    ) -> list[list[str] | PolicyError]:
        rewrites: list[list[str] | PolicyError] = []
        for episode in episodes:
            rewrites.append(self._queries(episode, episode.scratch["focus"])[:num_queries])
        return rewrites

    def _readings(self, episode: RoleEpisode) -> list[Reading | None]:
        """Per mask: the best-supported fill over every hit so far, or None without candidates."""
        return [cands[0] if cands else None for cands in self._candidates(episode)]

    def _candidates(self, episode: RoleEpisode) -> list[list[Reading]]:
        """Per mask: every candidate fill over every hit so far, best supported first."""
        hits, masked, c = episode.hits(), episode.task.source, self.config
        found = [candidate_readings(hits, lt, rt, masked, c) for lt, rt in mask_windows(masked, c.window)]
        if not (c.chain_reading and len(found) > 1):
            return found
        searched = episode.scratch.get("searched", set())
        fills = {j: cands[0].fill for j, cands in enumerate(found) if cands and j in searched}
        chained = []
        for index in range(len(found)):
            text, at = substitute_fills(masked, fills, index)
            left, right = mask_windows(text, c.window)[at]
            chained.append(candidate_readings(hits, left, right, text, c))
        return chained

    def observe(self, episodes: Sequence[RoleEpisode]) -> list[Observation | PolicyError]:
        return [self._observe(episode) for episode in episodes]

    def _observe(self, episode: RoleEpisode) -> Observation:
        """Quote the evidence of every searched mask, search the next unsearched one, else answer.

        Every mask gets its own search (a reading from another mask's hits is not trusted), as long
        as turns are left; the answer takes the best reading over all hits for each mask.
        """
        t, scratch = self.templates, episode.scratch
        readings = self._readings(episode)
        searched: set[int] = scratch["searched"]
        unsearched = [i for i in range(len(readings)) if i not in searched] if episode.turns_left > 1 else []
        thoughts = []
        for index, reading in enumerate(readings):
            if reading is not None and index not in scratch["reported"] and index not in unsearched:
                scratch["reported"].add(index)
                thoughts.append(
                    t.builtin_found.format(evidence=reading.evidence, index=index + 1, fill=reading.fill)
                )
        scratch["fills"] = {i: r.fill for i, r in enumerate(readings) if r is not None and i in searched}
        if readings[scratch["focus"]] is None:
            thoughts.append(t.builtin_missing.format(index=scratch["focus"] + 1))
        if unsearched:
            focus = unsearched[0]
            scratch["focus"] = focus
            searched.add(focus)
            thoughts.append(t.builtin_next.format(index=focus + 1))
            return Observation(think=" ".join(thoughts), search=self._queries(episode, focus)[0])
        missing = [i for i, r in enumerate(readings) if r is None]
        thoughts.append(t.builtin_give_up if missing else t.builtin_answer)
        answer = "\n".join(f"[{i}] {r.fill if r else ''}" for i, r in enumerate(readings, start=1))
        return Observation(think=" ".join(thoughts), answer=answer)
