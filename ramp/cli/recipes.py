"""The recipe runner: a recipe's stages in order, each the project's own stage (Megatron SFT, the RL
trainer, DPO, curation, the simulator), each fingerprinted by :mod:`ramp.stages`. It sits in the entry layer
because its stages call the entry folders' jobs; the recipe files and their validation are
:mod:`ramp.recipes`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from ramp.config import ConfigError, StrictModel, load_config
from ramp.cot.curate import CurateConfig, run_curate
from ramp.cot.decompose_data import decomposition_trajectories
from ramp.cot.sim_pairs import (
    DOCUMENTS,
    SimPrepareConfig,
    collect_pairs,
    pair_trajectories,
    queries_from_questions,
    read_pairs,
    write_pairs,
)
from ramp.cot.trajectories import TRAJECTORY_SCHEMA, read_trajectories
from ramp.finetune.dapo import train
from ramp.finetune.sft import run_sft, sft_overrides
from ramp.recipes import BASES, EXTRA_SECTIONS, RL_KINDS, Recipe, RecipeStage, dotted, load_recipe
from ramp.retrieval.lucene import LuceneRetriever
from ramp.retrieval.simulated import DOCUMENTS_FILE
from ramp.rl.config import RLConfig
from ramp.rl.dpo import DPOConfig, train_dpo
from ramp.stages import Stage, StageRunner
from ramp.train.config import PretrainConfig


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


def recipe_stages(
    recipe: Recipe,
    start: str | Path,
    workdir: str | Path,
    data: RecipeData,
    overrides: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    tracking_uri: str | None = None,
) -> list[tuple[RecipeStage, Stage, Path]]:
    """Each of ``recipe``'s stages (its recipe stage, its :mod:`ramp.stages` stage, and the policy after
    it) as :func:`run_recipe` runs them; building them runs nothing."""
    root, policy, simulator = Path(workdir), Path(start), None
    stages = []
    for n, stage in enumerate(recipe.stages):
        out = stage_output(root, n, stage)
        sets = list((overrides or {}).get(stage.name, ()))
        config, extra = _stage_config(stage, out, policy, simulator, data, sets, seed, tracking_uri)
        reads = [Path(v) for v in data.model_dump().values() if v and Path(v).exists()]
        step = Stage(
            out.name,
            partial(_run_stage, stage, config, out, policy, data, sets),
            settings={"config": config, "extra": extra},
            inputs=(policy, *([simulator] if simulator else []), *reads),
            outputs=(out,),
            command=f"recipe {recipe.name}, stage {stage.name} ({stage.kind})",
        )
        if stage.kind == "simulator":
            simulator = out / "policy"
        else:
            policy = out / "policy"
        stages.append((stage, step, policy))
    return stages


def run_recipe(
    recipe: Recipe | str | Path,
    start: str | Path,
    workdir: str | Path,
    data: RecipeData,
    overrides: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    tracking_uri: str | None = None,
    echo: Callable[[str], None] = lambda line: None,
) -> RecipeRun:
    """Run ``recipe``'s stages in order from the HF checkpoint ``start``, each in ``workdir/<n>-<name>``
    from the previous stage's policy; ``overrides[stage name]`` are ``key=value`` sets after the recipe's
    settings and the runner's paths (e.g. a CI size). Each stage is a :mod:`ramp.stages` stage (marker
    ``workdir/.stages/<n>-<name>.json``): done when its resolved config and its inputs' content (the
    policy it starts from, the data it reads) are unchanged. Seeds, paths and MLflow are the runner's;
    ``echo`` gets the stages' start/done lines."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    runner = StageRunner(Path(workdir) / STATE_DIR, echo=echo)
    runs = []
    policy = Path(start)
    for stage, step, policy in recipe_stages(recipe, start, workdir, data, overrides, seed, tracking_uri):
        outcome = runner.run_one(step)
        runs.append(StageRun(stage.name, stage.kind, step.outputs[0], policy, outcome.status == "ran"))
    return RecipeRun(recipe.name, recipe.inference, policy, tuple(runs))


def stage_output(workdir: Path, n: int, stage: RecipeStage) -> Path:
    """Where a recipe's ``n``-th stage writes (its policy under ``policy/``)."""
    return workdir / f"{n}-{stage.name}"


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
    if isinstance(config, RLConfig):
        train(config)
        return
    if isinstance(config, DPOConfig):
        train_dpo(config)
        return
    assert isinstance(config, PretrainConfig)
    qa, trajectories = _questions(stage, data)
    if stage.kind == "ramp_sft":
        run_sft(data.ramp_trajectories, out, config)
    elif stage.kind == "qa_sft":
        run_sft(trajectories, out, config)
    elif stage.kind == "curated_sft":
        run_curate(trajectories, out / "curated", stage.curate() or CurateConfig())
        run_sft(out / "curated", out, config)
    elif stage.kind == "decompose_sft":
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
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([t.to_row() for t in trajectories], schema=TRAJECTORY_SCHEMA)
    pq.write_table(table, directory / "trajectories-00000-of-00001.parquet")


def _train_simulator(
    stage: RecipeStage, config: PretrainConfig, out: Path, questions: str, index: str
) -> None:
    """``ramp sim prepare`` on the stage's questions against the real index, then ``ramp sim train``."""
    queries, rejected = queries_from_questions(questions)
    retriever = LuceneRetriever(index, threads=1)
    try:
        pairs, unanswered = collect_pairs(queries, retriever, stage.pairs() or SimPrepareConfig())
    finally:
        retriever.close()
    write_pairs(out / "pairs", pairs, [*rejected, *unanswered], len(queries) + len(rejected))
    _write_trajectories(pair_trajectories(read_pairs(out / "pairs")), out / "conversations")
    result = run_sft(out / "conversations", out, config)
    shutil.copyfile(out / "pairs" / DOCUMENTS, Path(result["policy"]) / DOCUMENTS_FILE)
