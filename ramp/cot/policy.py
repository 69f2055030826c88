"""The multi-agent CoT recipe as a turn policy of the agent's one loop (MaskSearch's roles).

Per rollout: the planner writes a plan and a first query; the rewriter expands a query into several
searches; the loop's search environment answers each (with the task's exclusions); then the observer
reads everything so far and either asks for another search (rewritten again) or answers. The observer's
last turn (``cot.loop.max_turns``) must answer; searching then ends the rollout with reason
``max_turns``. Each search becomes one model segment ``<think>…</think>\\n<search>q</search>`` (the plan,
the observer's reasoning, or ``rewrite_think`` for a further wording), so the finished rollout already has
the single-agent format the student learns: ``Rollout.to_messages()`` is the trajectory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ramp.agent.backends.base import GenerationRequest, GenerationResult
from ramp.agent.config import RolloutConfig
from ramp.agent.parser import parse_mask_fills
from ramp.agent.protocol import ANSWER_CLOSE, SEARCH_CLOSE
from ramp.agent.rollout import PolicyError, Rollout, RolloutLoop
from ramp.agent.task import Task
from ramp.cot.config import LoopConfig
from ramp.cot.roles import Observation, PlanOutput, RoleTemplates
from ramp.retrieval.base import Hit
from ramp.retrieval.env import SearchEnv


@dataclass
class RoleEpisode:
    """The roles' view of one rollout; ``scratch`` is private to the teacher."""

    rollout: Rollout
    max_turns: int
    plan: str = ""
    started: bool = False
    observations: int = 0  # observer turns taken
    pending: list[tuple[str, str]] = field(default_factory=list)  # (think, query) searches still to write
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> Task:
        return self.rollout.task

    @property
    def turns_left(self) -> int:
        """Observer turns left, the next one included (1: it must answer)."""
        return self.max_turns - self.observations

    @property
    def searches(self) -> int:
        return len(self.rollout.results)

    def history(self) -> list[tuple[str, str]]:
        """Each search so far with the result block the environment inserted for it."""
        blocks = [s.text for s in self.rollout.segments if s.role == "env"]
        return list(zip(self.rollout.queries, blocks, strict=True))

    def hits(self) -> list[Hit]:
        return [hit for result in self.rollout.results for hit in result.hits]


class RoleTeacher(Protocol):
    """Plays planner, rewriter and observer for a batch of episodes (one result per episode)."""

    name: str
    model: str

    def plan(self, episodes: Sequence[RoleEpisode]) -> list[PlanOutput | PolicyError]: ...

    def rewrite(
        self, episodes: Sequence[RoleEpisode], queries: Sequence[str], num_queries: int
    ) -> list[list[str] | PolicyError]: ...

    def observe(self, episodes: Sequence[RoleEpisode]) -> list[Observation | PolicyError]: ...


def answer_message(task: Task, think: str, answer: str) -> str:
    """The final segment; RAMP answers are rewritten as ``[i] fill`` lines, QA answers on one line."""
    if task.kind == "ramp":
        fills = parse_mask_fills(answer, task.num_masks)
        body = "\n".join(f"[{i}] {fill}" for i, fill in enumerate(fills, start=1))
    else:
        body = " ".join(answer.split())
    return f"<think>{think}</think>\n<answer>\n{body}\n</answer>"


def _segment(text: str, stop: str) -> GenerationResult:
    return GenerationResult(text=text, token_ids=[], logprobs=None, finish_reason="stop", stop_string=stop)


class RolePolicy:
    """Drives a :class:`RoleTeacher` through the agent loop (a :class:`ramp.agent.rollout.TurnPolicy`)."""

    def __init__(self, teacher: RoleTeacher, templates: RoleTemplates, config: LoopConfig) -> None:
        self.teacher, self.templates, self.config = teacher, templates, config

    @property
    def max_segments(self) -> int:
        """The most model segments a rollout can take: every search turn's queries, then the answer."""
        return self.config.max_turns * self.config.queries_per_turn + 1

    def _episode(self, rollout: Rollout) -> RoleEpisode:
        episode = rollout.scratch.get("roles")
        if not isinstance(episode, RoleEpisode):
            episode = rollout.scratch["roles"] = RoleEpisode(rollout, self.config.max_turns)
        return episode

    def next_turns(
        self, rollouts: Sequence[Rollout], requests: Sequence[GenerationRequest]
    ) -> list[GenerationResult | PolicyError]:
        episodes = [self._episode(r) for r in rollouts]
        out: dict[int, GenerationResult | PolicyError] = {}
        to_rewrite: dict[int, tuple[str, str]] = {}  # episode index -> (think, query)
        fresh = [i for i, e in enumerate(episodes) if not e.started]
        for i, plan in zip(fresh, self.teacher.plan([episodes[i] for i in fresh]), strict=True):
            episodes[i].started = True
            if isinstance(plan, PolicyError):
                out[i] = plan
            else:
                episodes[i].plan = plan.think
                to_rewrite[i] = (plan.think, plan.query)
        observing = [
            i for i, e in enumerate(episodes) if i not in out and i not in to_rewrite and not e.pending
        ]
        for i, observation in zip(
            observing, self.teacher.observe([episodes[i] for i in observing]), strict=True
        ):
            episode = episodes[i]
            last = episode.turns_left <= 1
            episode.observations += 1
            if isinstance(observation, PolicyError):
                out[i] = observation
            elif observation.answer is not None:
                text = answer_message(episode.task, observation.think, observation.answer)
                out[i] = _segment(text, ANSWER_CLOSE)
            elif last:
                out[i] = PolicyError("max_turns", f"still searching after {self.config.max_turns} turns")
            else:
                to_rewrite[i] = (observation.think, observation.search or "")
        rewriting = sorted(to_rewrite)
        rewrites = self.teacher.rewrite(
            [episodes[i] for i in rewriting],
            [to_rewrite[i][1] for i in rewriting],
            self.config.queries_per_turn,
        )
        for i, rewritten in zip(rewriting, rewrites, strict=True):
            if isinstance(rewritten, PolicyError):
                out[i] = rewritten
                continue
            think, query = to_rewrite[i]
            queries = self._turn_queries(episodes[i], query, rewritten)
            episodes[i].pending = [(think, queries[0])] + [
                (self.templates.rewrite_think.format(query=q), q) for q in queries[1:]
            ]
        for i, episode in enumerate(episodes):
            if i not in out:
                think, query = episode.pending.pop(0)
                out[i] = _segment(f"<think>{think}</think>\n<search>{query}</search>", SEARCH_CLOSE)
        return [out[i] for i in range(len(episodes))]

    def _turn_queries(self, episode: RoleEpisode, query: str, rewrites: list[str]) -> list[str]:
        """The query leads (the rewrites add wordings); queries already searched are not repeated
        (when every one was, the query is searched again rather than leaving the turn empty)."""
        asked = {q.lower() for q in episode.rollout.queries}
        queries: list[str] = []
        for candidate in [query, *rewrites]:
            key = candidate.lower()
            if candidate and key not in asked and key not in {q.lower() for q in queries}:
                queries.append(candidate)
        return queries[: self.config.queries_per_turn] or [query]


def role_loop(
    teacher: RoleTeacher, templates: RoleTemplates, config: LoopConfig, env: SearchEnv, seed: int = 0
) -> RolloutLoop:
    """The agent loop driven by ``teacher`` in the roles (text-level: no tokenizer, no log-probs)."""
    policy = RolePolicy(teacher, templates, config)
    return RolloutLoop(policy, env, RolloutConfig(max_turns=policy.max_segments, seed=seed, logprobs=False))
