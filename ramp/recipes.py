"""Recipes: how each seed system trains a search agent, as an ordered list of the project's own stages
(``configs/recipes/<name>.yaml``; the README's "Recipes" section lists them).

A recipe file::

    name: search-r1                # the file's stem
    paper: arXiv:2503.09516 (github.com/PeterGriffinJin/Search-R1)
    description: PPO with a value model (GAE), exact-match reward
    stages:                        # in order; each stage starts from the previous one's policy
      - name: ppo
        kind: qa_rl                # ramp_sft | lm | dapo | qa_sft | qa_rl | curated_sft
        settings: {...}            # a partial of the kind's config (below)

``settings`` is a partial of ``configs/rl.yaml`` (:class:`~ramp.rl.config.RLConfig`) for ``dapo`` and
``qa_rl``, and of ``configs/pretrain.yaml`` (:class:`~ramp.train.config.PretrainConfig`) for the SFT
kinds; ``curated_sft`` also takes ``curate:``, a partial of :class:`~ramp.cot.curate.CurateConfig`.
:func:`load_recipe` validates every stage's settings over its base file, so a typo fails before anything
runs. Paths (checkpoints, data, index) are the runner's to set: :meth:`RecipeStage.config` takes them as
``key=value`` overrides after the recipe's settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from ramp.config import CONFIG_DIR, ConfigError, StrictModel, load_config, read_yaml
from ramp.cot.curate import CurateConfig
from ramp.rl.config import RLConfig
from ramp.train.config import PretrainConfig

RECIPES_DIR = CONFIG_DIR / "recipes"

StageKind = Literal["ramp_sft", "lm", "dapo", "qa_sft", "qa_rl", "curated_sft"]
RL_KINDS = frozenset({"dapo", "qa_rl"})
# kind -> (base config file in configs/, its model)
BASES: dict[str, tuple[str, type[BaseModel]]] = {
    kind: ("rl", RLConfig) if kind in RL_KINDS else ("pretrain", PretrainConfig)
    for kind in StageKind.__args__  # type: ignore[attr-defined]
}


class RecipeStage(StrictModel):
    name: str = Field(min_length=1)
    kind: StageKind
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_curate(self) -> RecipeStage:
        if "curate" in self.settings and self.kind != "curated_sft":
            raise ValueError(f"settings.curate belongs to kind curated_sft, not {self.kind}")
        return self

    def config(self, overrides: Iterable[str] = ()) -> BaseModel:
        """The stage's config: its kind's base file, the recipe's settings, then ``overrides``."""
        base, model = BASES[self.kind]
        stage_settings = {k: v for k, v in self.settings.items() if k != "curate"}
        return load_config(model, base, overrides, values=dotted(stage_settings))

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
    def _unique_stage_names(self) -> Recipe:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return self


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
        except ConfigError as err:
            raise ConfigError(f"recipe {recipe.name}, stage {stage.name} ({stage.kind}): {err}") from None
    return recipe
