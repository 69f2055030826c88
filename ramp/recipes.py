"""Recipes: how each seed system trains a search agent, as an ordered list of the project's own stages
(``configs/recipes/<name>.yaml``; the README's "Recipes" section lists them);
:func:`ramp.cli.recipes.run_recipe` runs one from a starting checkpoint.

A recipe file::

    name: search-r1                # the file's stem
    paper: arXiv:2503.09516 (github.com/PeterGriffinJin/Search-R1)
    description: PPO with a value model (GAE), exact-match reward
    stages:                        # in order; each stage starts from the previous one's policy
      - name: ppo
        kind: qa_rl                # see StageKind
        questions: qa              # qa | synthesized: the question set the stage reads (default qa)
        retriever: index           # index | simulated: what an RL stage searches (default index)
        settings: {...}            # a partial of the kind's config (below)

``settings`` is a partial of ``configs/rl.yaml`` (:class:`~ramp.rl.config.RLConfig`) for ``dapo`` and
``qa_rl``, of ``configs/dpo.yaml`` (:class:`~ramp.rl.dpo.DPOConfig`) for ``dpo``, and of
``configs/pretrain.yaml`` (:class:`~ramp.train.config.PretrainConfig`) for the SFT kinds and
``simulator``; ``curated_sft`` also takes ``curate:`` (:class:`~ramp.cot.curate.CurateConfig`) and
``simulator`` takes ``pairs:`` (:class:`~ramp.cot.sim_pairs.SimPrepareConfig`). A ``simulator`` stage trains
ZeroSearch's simulated search engine on real searches of the stage's questions and leaves the policy as
it was; later stages with ``retriever: simulated`` search it. :func:`load_recipe` validates every stage's
settings over its base file, so a typo fails before anything runs. Paths (checkpoints, data, index) are
the runner's: :meth:`RecipeStage.config` takes them as ``key=value`` overrides after the recipe's
settings, and the runner sets them from its ``RecipeData``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from ramp.config import CONFIG_DIR, ConfigError, StrictModel, load_config, read_yaml
from ramp.cot.curate import CurateConfig
from ramp.cot.sim_pairs import SimPrepareConfig
from ramp.rl.config import RLConfig
from ramp.rl.dpo import DPOConfig
from ramp.train.config import PretrainConfig

RECIPES_DIR = CONFIG_DIR / "recipes"

StageKind = Literal[
    "ramp_sft", "lm", "dapo", "qa_sft", "qa_rl", "curated_sft", "simulator", "decompose_sft", "dpo"
]
RL_KINDS = frozenset({"dapo", "qa_rl"})
QUESTION_KINDS = frozenset({"qa_sft", "qa_rl", "curated_sft", "simulator", "decompose_sft", "dpo"})
# kind -> (base config file in configs/, its model)
BASES: dict[str, tuple[str, type[BaseModel]]] = {
    kind: ("rl", RLConfig)
    if kind in RL_KINDS
    else ("dpo", DPOConfig)
    if kind == "dpo"
    else ("pretrain", PretrainConfig)
    for kind in StageKind.__args__  # type: ignore[attr-defined]
}
EXTRA_SECTIONS = {"curate": "curated_sft", "pairs": "simulator"}  # settings sections of one kind only
SIMULATOR_PLACEHOLDER = "<simulator stage's policy>"  # validation only: run_recipe sets the real path


class RecipeStage(StrictModel):
    name: str = Field(min_length=1)
    kind: StageKind
    questions: Literal["qa", "synthesized"] = "qa"  # the question set (and its trajectories) it reads
    retriever: Literal["index", "simulated"] = "index"  # what an RL stage searches
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_sections(self) -> RecipeStage:
        for section, kind in EXTRA_SECTIONS.items():
            if section in self.settings and self.kind != kind:
                raise ValueError(f"settings.{section} belongs to kind {kind}, not {self.kind}")
        if self.questions != "qa" and self.kind not in QUESTION_KINDS:
            raise ValueError(f"questions: {self.questions} needs a question-reading kind, not {self.kind}")
        if self.retriever == "simulated" and self.kind != "qa_rl":
            raise ValueError(
                f"retriever: simulated is for qa_rl stages (QA tasks exclude nothing), not {self.kind}"
            )
        if (
            self.retriever == "simulated"
            and "retriever" in self.settings
            and set(self.settings["retriever"]) - {"simulator"}
        ):
            raise ValueError(
                "retriever: simulated sets settings.retriever.kind; give only retriever.simulator"
            )
        return self

    def config(self, overrides: Iterable[str] = ()) -> BaseModel:
        """The stage's config: its kind's base file, the recipe's settings, then ``overrides``."""
        base, model = BASES[self.kind]
        stage_settings = {k: v for k, v in self.settings.items() if k not in EXTRA_SECTIONS}
        values = dotted(stage_settings)
        if self.retriever == "simulated":
            values |= {
                "retriever.kind": "simulated",
                "retriever.simulator.backend": "hf",
                "retriever.simulator.model": SIMULATOR_PLACEHOLDER,
            }
        return load_config(model, base, overrides, values=values)

    def pairs(self, overrides: Iterable[str] = ()) -> SimPrepareConfig | None:
        """``simulator``: its training pairs' config (defaults, ``settings.pairs``, then ``overrides``)."""
        if self.kind != "simulator":
            return None
        return load_config(SimPrepareConfig, None, overrides, values=dotted(self.settings.get("pairs") or {}))

    def curate(self, overrides: Iterable[str] = ()) -> CurateConfig | None:
        """``curated_sft``: the curation's config (its defaults, ``settings.curate``, then ``overrides``)."""
        if self.kind != "curated_sft":
            return None
        return load_config(CurateConfig, None, overrides, values=dotted(self.settings.get("curate") or {}))


class Recipe(StrictModel):
    name: str = Field(min_length=1)
    paper: str = Field(min_length=1)  # arXiv id and/or repository
    description: str = Field(min_length=1)
    stages: list[RecipeStage] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_stages(self) -> Recipe:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for i, stage in enumerate(self.stages):
            if stage.retriever == "simulated" and not any(s.kind == "simulator" for s in self.stages[:i]):
                raise ValueError(
                    f"stage {stage.name} searches a simulator: a simulator stage must come first"
                )
        return self

    @property
    def inference(self) -> Literal["agent", "decompose"]:
        """How its policy answers: the agent's search loop, or decompose-then-solve (AceSearcher)."""
        return "decompose" if any(s.kind in ("decompose_sft", "dpo") for s in self.stages) else "agent"


def dotted(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``{"trainer": {"lr": 1e-4}}`` -> ``{"trainer.lr": 1e-4}``)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(dotted(value, f"{name}."))  # an empty section changes nothing
        else:
            out[name] = value
    return out


def recipe_names() -> list[str]:
    """The recipes in ``configs/recipes/``."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    candidate = RECIPES_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    raise ConfigError(f"recipe not found: {name_or_path} (a YAML file or one of {', '.join(recipe_names())})")


def load_recipe(name_or_path: str | Path) -> Recipe:
    """The recipe named (``configs/recipes/<name>.yaml``) or at a path, with every stage's settings
    validated against its kind's config; any error names the recipe, the stage and the key."""
    path = recipe_path(name_or_path)
    try:
        recipe = Recipe.model_validate(read_yaml(path))
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {' '.join(str(e['msg']).split())}"
            for e in err.errors()
        )
        raise ConfigError(f"invalid recipe {path}: {problems}") from None
    if recipe.name != path.stem:
        raise ConfigError(f"invalid recipe {path}: name {recipe.name!r} is not the file's name {path.stem!r}")
    for stage in recipe.stages:
        try:
            stage.config()
            stage.curate()
            stage.pairs()
        except ConfigError as err:
            raise ConfigError(f"recipe {recipe.name}, stage {stage.name} ({stage.kind}): {err}") from None
    return recipe
