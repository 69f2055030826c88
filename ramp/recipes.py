"""Recipes: how each seed system trains a search agent, as an ordered list of the project's own stages
(``configs/recipes/<name>.yaml``; the README's "Recipes" section lists them), and :func:`run_recipe`, which
runs one from a starting checkpoint.

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
``simulator`` takes ``pairs:`` (:class:`~ramp.data.sim_pairs.PrepareConfig`). A ``simulator`` stage trains
ZeroSearch's simulated search engine on real searches of the stage's questions and leaves the policy as
it was; later stages with ``retriever: simulated`` search it. :func:`load_recipe` validates every stage's
settings over its base file, so a typo fails before anything runs. Paths (checkpoints, data, index) are
the runner's: :meth:`RecipeStage.config` takes them as ``key=value`` overrides after the recipe's
settings, and :func:`run_recipe` sets them from :class:`RecipeData`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from ramp.config import CONFIG_DIR, ConfigError, StrictModel, load_config, read_yaml
from ramp.cot.curate import CurateConfig
from ramp.data.sim_pairs import PrepareConfig as SimPairsConfig
from ramp.rl.config import RLConfig
from ramp.rl.dpo import DPOConfig
from ramp.stages import Stage, StageRunner
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

    def pairs(self, overrides: Iterable[str] = ()) -> SimPairsConfig | None:
        """``simulator``: its training pairs' config (defaults, ``settings.pairs``, then ``overrides``)."""
        if self.kind != "simulator":
            return None
        return load_config(SimPairsConfig, None, overrides, values=dotted(self.settings.get("pairs") or {}))

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


# ------------------------------------------------------------------------------------------- the runner


class RecipeData(StrictModel):
    """What a recipe's stages read (the runner's paths); a stage whose input is empty fails naming it."""

    index: str  # the real Lucene index: every search but a simulator's, and the simulator's training pairs
    ramp_samples: str = ""  # dapo: samples-*.parquet
    ramp_trajectories: str = ""  # ramp_sft: verified RAMP trajectories
    qa: str = ""  # questions: qa: the training questions (JSONL {id, question, golden_answers})
    qa_trajectories: str = ""  # their verified trajectories (qa_sft, curated_sft, decompose_sft)
    synthesized: str = ""  # questions: synthesized: `ramp data synthesize` questions (JSONL)
    synthesized_trajectories: str = ""  # their verified trajectories
    prompts: str = "prompts"  # the agent's prompt templates (RL stages' data.prompts)


@dataclass(frozen=True)
class StageRun:
    name: str
    kind: str
    output: Path
    policy: Path  # the policy after the stage (a simulator stage passes its input through)
    ran: bool  # False: skipped, finished before with the same config


@dataclass(frozen=True)
class RecipeRun:
    recipe: str
    inference: Literal["agent", "decompose"]  # how the final policy answers (Recipe.inference)
    policy: Path
    stages: tuple[StageRun, ...]


STATE_DIR = ".stages"  # the stages' markers (ramp.stages), under the recipe's workdir


def run_recipe(
    recipe: Recipe | str | Path,
    start: str | Path,
    workdir: str | Path,
    data: RecipeData,
    overrides: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    tracking_uri: str | None = None,
) -> RecipeRun:
    """Run ``recipe``'s stages in order from the HF checkpoint ``start``, each in ``workdir/<n>-<name>``
    from the previous stage's policy; ``overrides[stage name]`` are ``key=value`` sets after the recipe's
    settings and the runner's paths (e.g. a CI size). Each stage is a :mod:`ramp.stages` stage (marker
    ``workdir/.stages/<n>-<name>.json``): done when its resolved config and its inputs' content (the
    policy it starts from, the data it reads) are unchanged. Seeds, paths and MLflow are the runner's."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    root, policy, simulator = Path(workdir), Path(start), None
    runner = StageRunner(root / STATE_DIR, echo=lambda line: None)
    runs = []
    for n, stage in enumerate(recipe.stages):
        out = root / f"{n}-{stage.name}"
        sets = list((overrides or {}).get(stage.name, ()))
        config, extra = _stage_config(stage, out, policy, simulator, data, sets, seed, tracking_uri)
        reads = [Path(v) for v in data.model_dump().values() if v and Path(v).exists()]
        outcome = runner.run_one(
            Stage(
                out.name,
                partial(_run_stage, stage, config, out, policy, data, sets),
                settings={"config": config, "extra": extra},
                inputs=(policy, *([simulator] if simulator else []), *reads),
                outputs=(out,),
                command=f"recipe {recipe.name}, stage {stage.name} ({stage.kind})",
            )
        )
        if stage.kind == "simulator":
            simulator = out / "policy"
        else:
            policy = out / "policy"
        runs.append(StageRun(stage.name, stage.kind, out, policy, outcome.status == "ran"))
    return RecipeRun(recipe.name, recipe.inference, policy, tuple(runs))


def _questions(stage: RecipeStage, data: RecipeData) -> tuple[str, str]:
    """The stage's question file and its trajectories (``questions: qa | synthesized``)."""
    if stage.questions == "synthesized":
        return data.synthesized, data.synthesized_trajectories
    return data.qa, data.qa_trajectories


def _need(value: str, name: str, stage: RecipeStage) -> str:
    if not value:
        raise ConfigError(f"stage {stage.name} ({stage.kind}) reads data.{name}: give RecipeData.{name}")
    return value


def _stage_config(
    stage: RecipeStage,
    out: Path,
    policy: Path,
    simulator: Path | None,
    data: RecipeData,
    sets: Sequence[str],
    seed: int,
    uri: str | None,
) -> tuple[BaseModel, dict[str, Any]]:
    """The stage's resolved config (the runner's paths, then ``sets``) and what else decides its output."""
    from ramp.finetune.sft import sft_overrides

    qa, trajectories = _questions(stage, data)
    questions_name = "synthesized" if stage.questions == "synthesized" else "qa"
    base, model = BASES[stage.kind]
    values: dict[str, Any] = dotted({k: v for k, v in stage.settings.items() if k not in EXTRA_SECTIONS})
    extra: dict[str, Any] = {}
    if stage.kind in RL_KINDS:
        values |= {
            "policy.model": str(policy),
            "retriever.kind": "lucene",
            "retriever.index": data.index,
            "data.prompts": data.prompts,
            "curriculum.seed": seed,
            "rollout.seed": seed,
            "trainer.seed": seed,
            "trainer.output_dir": str(out),
            "trainer.mlflow_uri": uri,
            "trainer.run_name": out.name,
            "trainer.progress": False,
        }
        if stage.kind == "dapo":
            values |= {"data.task": "ramp", "data.samples": _need(data.ramp_samples, "ramp_samples", stage)}
        else:
            values |= {"data.task": "qa", "data.qa": _need(qa, questions_name, stage)}
        if stage.retriever == "simulated":
            assert simulator is not None  # Recipe checks a simulator stage comes first
            values |= {
                "retriever.kind": "simulated",
                "retriever.simulator.backend": "hf",
                "retriever.simulator.model": str(simulator),
            }
    elif stage.kind == "dpo":
        values |= {
            "policy.model": str(policy),
            "retriever.kind": "lucene",
            "retriever.index": data.index,
            "data.qa": _need(qa, questions_name, stage),
            "trainer.seed": seed,
            "trainer.output_dir": str(out),
            "trainer.mlflow_uri": uri,
            "trainer.run_name": out.name,
        }
    else:  # the SFT kinds and the simulator: the Megatron SFT stage from the current policy
        values |= {
            **sft_overrides(out),
            "model.hf": str(policy),
            "model.init": "hf",
            "train.seed": seed,
            "tracking.tracking_uri": uri,
            "tracking.run_name": out.name,
            "checkpoint.resume": True,
        }
        if stage.kind == "ramp_sft":
            extra["trajectories"] = _need(data.ramp_trajectories, "ramp_trajectories", stage)
        elif stage.kind == "simulator":
            extra["questions"] = _need(qa, questions_name, stage)
            extra["pairs"] = stage.pairs().model_dump(mode="json")  # type: ignore[union-attr]
        elif stage.kind == "lm":
            raise ConfigError(f"stage {stage.name}: run_recipe has no passages input for kind lm")
        else:
            extra["trajectories"] = _need(trajectories, f"{questions_name}_trajectories", stage)
            if stage.kind == "decompose_sft":
                extra["questions"] = _need(qa, questions_name, stage)
            if stage.kind == "curated_sft":
                extra["curate"] = stage.curate().model_dump(mode="json")  # type: ignore[union-attr]
    try:
        return load_config(model, base, sets, values=values), extra
    except ConfigError as err:
        raise ConfigError(f"stage {stage.name} ({stage.kind}): {err}") from None


def _run_stage(
    stage: RecipeStage, config: BaseModel, out: Path, policy: Path, data: RecipeData, sets: Sequence[str]
) -> None:
    from ramp.finetune.sft import run_sft

    if isinstance(config, RLConfig):
        from ramp.finetune.dapo import train

        train(config)
        return
    if isinstance(config, DPOConfig):
        from ramp.rl.dpo import train_dpo

        train_dpo(config)
        return
    assert isinstance(config, PretrainConfig)
    qa, trajectories = _questions(stage, data)
    if stage.kind == "ramp_sft":
        run_sft(data.ramp_trajectories, out, config)
    elif stage.kind == "qa_sft":
        run_sft(trajectories, out, config)
    elif stage.kind == "curated_sft":
        from ramp.cot.curate import run_curate

        run_curate(trajectories, out / "curated", stage.curate() or CurateConfig())
        run_sft(out / "curated", out, config)
    elif stage.kind == "decompose_sft":
        from ramp.agent.decompose import decomposition_trajectories
        from ramp.cot.trajectories import read_trajectories

        questions = {str(r["id"]): r["question"] for r in _jsonl(qa)}
        _write_trajectories(
            decomposition_trajectories(read_trajectories(trajectories), questions), out / "conversations"
        )
        run_sft(out / "conversations", out, config)
    elif stage.kind == "simulator":
        _train_simulator(stage, config, out, qa, data.index)


def _jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _write_trajectories(trajectories: Sequence[Any], directory: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ramp.cot.trajectories import TRAJECTORY_SCHEMA

    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([t.to_row() for t in trajectories], schema=TRAJECTORY_SCHEMA)
    pq.write_table(table, directory / "trajectories-00000-of-00001.parquet")


def _train_simulator(
    stage: RecipeStage, config: PretrainConfig, out: Path, questions: str, index: str
) -> None:
    """``ramp sim prepare`` on the stage's questions against the real index, then ``ramp sim train``."""
    import shutil

    from ramp.data.sim_pairs import (
        DOCUMENTS,
        collect_pairs,
        pair_trajectories,
        queries_from_questions,
        read_pairs,
        write_pairs,
    )
    from ramp.finetune.sft import run_sft
    from ramp.retrieval.lucene import LuceneRetriever
    from ramp.retrieval.simulated import DOCUMENTS_FILE

    queries, rejected = queries_from_questions(questions)
    retriever = LuceneRetriever(index, threads=1)
    try:
        pairs, unanswered = collect_pairs(queries, retriever, stage.pairs() or SimPairsConfig())
    finally:
        retriever.close()
    write_pairs(out / "pairs", pairs, [*rejected, *unanswered], len(queries) + len(rejected))
    _write_trajectories(pair_trajectories(read_pairs(out / "pairs")), out / "conversations")
    result = run_sft(out / "conversations", out, config)
    shutil.copyfile(out / "pairs" / DOCUMENTS, Path(result["policy"]) / DOCUMENTS_FILE)
