"""The configurations of the experiments in the world: the RAMP effect
(``configs/experiment/ramp_effect.yaml``) and the recipe comparison (``configs/experiment/recipes.yaml``).

Each stage's settings are a partial of that stage's own recipe (``ramp_sft: {train: {steps: 900}}`` over
``configs/pretrain.yaml``), validated into the stage's config model when the experiment's config is
loaded: a typo in any stage fails before anything runs, and ``--set ramp_sft.train.steps=900`` works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, model_validator

from ramp.config import ConfigError, StrictModel, load_config
from ramp.data.config import DataConfig
from ramp.data.synthesis import SynthConfig
from ramp.qa.config import EvalConfig
from ramp.recipes import StageKind, load_recipe, recipe_names
from ramp.retrieval.config import RetrievalSettings
from ramp.retrieval.env import SearchConfig
from ramp.rl.config import RLConfig
from ramp.train.config import PretrainConfig
from ramp.train.init import InitConfig

ARMS = ("A", "A-mixed", "B", "C")
# stage field -> (its recipe, its config model)
STAGE_RECIPES: dict[str, tuple[str, type[BaseModel]]] = {
    "data": ("data", DataConfig),
    "answerability": ("retrieval", RetrievalSettings),
    "ramp_sft": ("pretrain", PretrainConfig),
    "dapo": ("rl", RLConfig),
    "qa_sft": ("pretrain", PretrainConfig),
    "eval": ("eval", EvalConfig),
}


class WorldConfig(StrictModel):
    seed: int = 0  # the world of experiment seed 0; seed i draws world seed + i
    countries: int = Field(default=16, ge=2)
    cities_per_country: int = Field(default=16, ge=2)
    people: int = Field(default=800, ge=2)
    companies: int = Field(default=600, ge=2)
    held_out: float = Field(default=0.3, ge=0.25, lt=1)  # share of cities, people, companies never searched


class QuestionSplit(StrictModel):
    train: int = Field(default=60, ge=2)  # the low-data fine-tuning set
    dev: int = Field(default=20, ge=1)  # carved from `train`: what the QA grid tunes on
    test: int = Field(default=200, ge=1)  # held out

    @model_validator(mode="after")
    def _dev_inside_train(self) -> QuestionSplit:
        if self.dev >= self.train:
            raise ValueError("questions.dev is carved from questions.train: it must be smaller")
        return self


class QAGrid(StrictModel):
    """The grid every arm's QA stage is tuned on (the dev questions of one world; its choice is reused)."""

    steps: list[int] = Field(default_factory=lambda: [100, 300], min_length=1)
    lr: list[float] = Field(default_factory=lambda: [1e-3, 3e-3], min_length=1)
    mix: list[float] = Field(
        default_factory=lambda: [0.0, 0.5], min_length=1
    )  # share of the arm's earlier data
    seed: int = Field(default=0, ge=0)  # the experiment seed whose world tunes the grid

    @model_validator(mode="after")
    def _check(self) -> QAGrid:
        if any(s < 1 for s in self.steps) or any(v <= 0 for v in self.lr):
            raise ValueError("qa_grid.steps must be >= 1 and qa_grid.lr > 0")
        if any(not 0 <= m < 1 for m in self.mix):
            raise ValueError("qa_grid.mix values are shares in [0, 1)")
        return self


class GateConfig(StrictModel):
    threshold: float = Field(default=0.5, gt=0, le=1)  # held-out RAMP copy rate after RAMP SFT
    tasks: int = Field(default=100, ge=1)  # held-out RAMP tasks evaluated after each stage of A


class TrackingSettings(StrictModel):
    experiment: str = "ramp-effect"
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite runs/mlflow.db


class RampEffectConfig(StrictModel):
    """``ramp experiment ramp-effect``: arms A, A-mixed, B and C on held-out two-hop questions."""

    output: str = "runs/experiment/ramp-effect"
    seeds: int = Field(default=3, ge=1)
    workers: int = Field(default=3, ge=1)  # processes at once (one torch thread each)
    ablation: bool = True  # also arm A-mixed (DAPO on every mask count at once)
    world: WorldConfig = WorldConfig()
    questions: QuestionSplit = QuestionSplit()
    init: InitConfig = InitConfig(tokenizer="word")
    prompts: str = "prompts"  # task prompt templates of every stage (recipe name or YAML path)
    search: SearchConfig = SearchConfig(top_k=1, max_chars_per_doc=400)
    draws: int = Field(default=3, ge=1)  # mask draws of the world's articles (more RAMP tasks)
    renamed_copies: int = Field(default=0, ge=0)  # per RAMP SFT trajectory (ramp.experiment.renaming)
    data: dict[str, Any] = Field(default_factory=dict)  # partial configs/data.yaml
    answerability: dict[str, Any] = Field(default_factory=dict)  # partial configs/retrieval.yaml
    ramp_sft: dict[str, Any] = Field(default_factory=dict)  # A's RAMP SFT; C's LM pretraining, same rows
    dapo: dict[str, Any] = Field(default_factory=dict)  # partial configs/rl.yaml
    qa_sft: dict[str, Any] = Field(default_factory=dict)  # every arm's QA stage (the grid sets steps, lr)
    eval: dict[str, Any] = Field(default_factory=dict)  # partial configs/eval.yaml
    qa_grid: QAGrid = QAGrid()
    gate: GateConfig = GateConfig()
    tracking: TrackingSettings = TrackingSettings()

    @model_validator(mode="after")
    def _stages_validate(self) -> RampEffectConfig:
        for field in STAGE_RECIPES:
            stage_config(self, field)
        if self.qa_grid.seed >= self.seeds:
            raise ValueError(f"qa_grid.seed {self.qa_grid.seed} is not one of the {self.seeds} seeds")
        return self

    def arms(self) -> tuple[str, ...]:
        return tuple(arm for arm in ARMS if self.ablation or arm != "A-mixed")


def flatten(partial: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{train: {steps: 9}}`` -> ``{"train.steps": 9}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in partial.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= flatten(value, dotted + ".")
        else:
            out[dotted] = value
    return out


def stage_config(config: RampEffectConfig, field: str, values: Mapping[str, Any] | None = None) -> Any:
    """Stage ``field``'s config: its recipe, the experiment's partial, then ``values`` (paths, seeds)."""
    recipe, model = STAGE_RECIPES[field]
    return load_config(model, recipe, values={**flatten(getattr(config, field)), **(values or {})})


class ColdStart(StrictModel):
    """The checkpoint every recipe starts from: the seed's initial policy after ``steps`` of SFT on the
    world oracle's trajectories of one-search fact questions (the question itself is the query), so every
    recipe starts from a policy that writes the protocol, as the papers start from instruct models; with
    ``steps: 0``, the initial policy itself."""

    steps: int = Field(default=100, ge=0)
    questions: int = Field(default=200, ge=1)  # fact questions drawn (seeded) from the world's
    sft: dict[str, Any] = Field(default_factory=dict)  # partial configs/pretrain.yaml over the world's qa_sft


class RecipeComparisonConfig(StrictModel):
    """``ramp experiment recipes``: every recipe from one cold start, in the RAMP-effect experiment's
    world (its world, questions, initial policy, search, prompts and evaluation: ``world_config`` with
    ``world_settings`` on top), each seed its own world; differences against ``reference``."""

    output: str = "runs/experiment/recipes"
    world_config: str = "experiment/ramp_effect"  # a RampEffectConfig file: everything about the world
    world_settings: dict[str, Any] = Field(default_factory=dict)  # a partial of it (e.g. smaller worlds)
    seeds: int = Field(default=3, ge=1)
    workers: int = Field(default=2, ge=1)
    recipes: list[str] = Field(default_factory=recipe_names, min_length=1)  # configs/recipes/<name>.yaml
    reference: str = "masksearch"  # the recipe every other is compared with
    cold_start: ColdStart = ColdStart()
    synthesis: SynthConfig = SynthConfig(hops=1)  # WebDancer's questions, from the world's fact questions
    # key=value sets for every stage of a kind (sizes for this machine), then per recipe and stage
    stage_sets: dict[StageKind, list[str]] = Field(default_factory=dict)
    recipe_sets: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    tracking: TrackingSettings = TrackingSettings(experiment="ramp-recipes")

    @model_validator(mode="after")
    def _recipes_validate(self) -> RecipeComparisonConfig:
        if len(set(self.recipes)) != len(self.recipes):
            raise ValueError(f"recipes are listed twice: {self.recipes}")
        for name in self.recipe_sets:
            if name not in self.recipes:
                raise ValueError(f"recipe_sets.{name}: not one of the recipes {self.recipes}")
        for name in self.recipes:
            recipe = load_recipe(name)
            unknown = set(self.recipe_sets.get(name, {})) - {s.name for s in recipe.stages}
            if unknown:
                raise ValueError(f"recipe_sets.{name}: no stage {sorted(unknown)} in recipe {name}")
            for stage in recipe.stages:
                try:
                    stage.config(self.stage_sets_of(name, stage.name, stage.kind))
                except ConfigError as err:
                    raise ValueError(f"recipe {name}, stage {stage.name}: {err}") from None
        self.world()
        return self

    def stage_sets_of(self, recipe: str, stage: str, kind: str) -> list[str]:
        """The sets of one recipe stage: its kind's, then the recipe's for it."""
        return [*self.stage_sets.get(kind, []), *self.recipe_sets.get(recipe, {}).get(stage, [])]  # type: ignore[call-overload]

    def world(self) -> RampEffectConfig:
        """The world's experiment config, writing under this comparison's output, with its seeds."""
        values = {**flatten(self.world_settings), "output": self.output, "seeds": self.seeds}
        return load_config(RampEffectConfig, self.world_config, values=values)
