"""Renamed copies of RAMP trajectories: the world's names permuted, so a query can only be copied.

A tiny policy trained on a few hundred oracle trajectories learns each searched name's query by heart
(held-out RAMP tasks whose names were searched in training are copied, new names almost never). A
renamed copy is a trajectory with every world name replaced by another of the same kind, consistently
within the copy (passage, thoughts, queries, results and answer alike): the name a query needs is then a
different one in every copy, and the only way to write it is to copy it from the context. Replacement
names are drawn from the entities that are not held out, so a held-out entity still never appears in a
training search. The copies' facts contradict the world (a company "founded" by someone else): they are
trained on, never searched.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

from ramp.cot.trajectories import Trajectory
from ramp.experiment.world import World
from ramp.seeding import record_rng


def renamed_copies(trajectories: Sequence[Trajectory], world: World, copies: int) -> list[Trajectory]:
    """``copies`` renamed copies of each trajectory (ids ``ID~renamedN``), seeded by the world's seed."""
    kind_of = {a.title: a.kind for a in world.articles}
    pool: dict[str, list[str]] = {}
    for article in world.articles:
        if article.id not in world.held_out:
            pool.setdefault(article.kind, []).append(article.title)
    names = sorted(kind_of, key=lambda name: (-len(name), name))  # a person's full name before a part
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    out = []
    for n in range(copies):
        for trajectory in trajectories:
            rng = record_rng(world.seed, trajectory.sample_id, f"renamed copy {n}")
            renamer = _Renamer(pattern, kind_of, {k: rng.sample(v, len(v)) for k, v in sorted(pool.items())})
            out.append(
                dataclasses.replace(
                    trajectory,
                    sample_id=f"{trajectory.sample_id}~renamed{n}",
                    messages=tuple({**m, "content": renamer(m["content"])} for m in trajectory.messages),
                    answer=renamer(trajectory.answer),
                    fills=tuple(map(renamer, trajectory.fills)),
                    golds=tuple(map(renamer, trajectory.golds)),
                    queries=tuple(map(renamer, trajectory.queries)),
                )
            )
    return out


class _Renamer:
    """One copy's renaming: each name met gets the next unused name of its kind (not held out)."""

    def __init__(
        self, pattern: re.Pattern[str], kind_of: Mapping[str, str], draws: dict[str, list[str]]
    ) -> None:
        self.pattern, self.kind_of, self.draws = pattern, kind_of, draws
        self.mapping: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        return self.pattern.sub(self._name, text)

    def _name(self, match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in self.mapping:
            kind = self.kind_of[name]
            if not self.draws.get(kind):
                raise ValueError(
                    f"renamed copies: a trajectory names more {kind} entities than the world has"
                )
            self.mapping[name] = self.draws[kind].pop()
        return self.mapping[name]
