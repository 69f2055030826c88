"""Configuration of an evaluation run (``configs/eval.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ramp.agent.config import AgentConfig, BackendConfig
from ramp.agent.decompose import DecomposeConfig
from ramp.config import StrictModel
from ramp.cot.config import BuiltinTeacherConfig
from ramp.qa.loaders import DATASETS
from ramp.retrieval.config import RetrieverConfig


class EvalDatasetConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # the column in tables and metric keys (unique in a run)
    loader: str | None = None  # a dataset of ramp.qa.loaders.DATASETS; default: ``name``
    path: str | None = None  # a local file or hub:REPO[:CONFIG[:SPLIT]]; fanoutqa defaults to its package
    limit: int | None = Field(default=None, ge=1)  # the first N questions

    @property
    def loader_name(self) -> str:
        return self.loader or self.name

    @model_validator(mode="after")
    def _known_loader(self) -> EvalDatasetConfig:
        if self.loader_name not in DATASETS:
            raise ValueError(f"unknown dataset {self.loader_name!r}; known datasets: {', '.join(DATASETS)}")
        return self


class JudgeConfig(StrictModel):
    enabled: bool = False  # adds a ``judge`` column and metric (an LLM's correct/incorrect verdict)
    backend: BackendConfig = BackendConfig(kind="openai")
    max_new_tokens: int = Field(default=256, ge=1)


class EvalConfig(StrictModel):
    experiment: str = "ramp-eval"  # MLflow experiment
    run_name: str | None = None  # default: "<policy>-<model name>"
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else sqlite runs/mlflow.db
    output_dir: str = "runs/eval/default"  # rows, predictions.parquet, plots (resumable)
    # builtin: the no-model search-and-read floor; decompose: AceSearcher's decompose-then-solve (the
    # agent's backend and search settings, one greedy decomposition, one search per sub-question)
    policy: Literal["agent", "builtin", "decompose"] = "agent"
    agent: AgentConfig = AgentConfig()  # backend (any HF or converted checkpoint) and the rollout loop
    decompose: DecomposeConfig = DecomposeConfig()
    retriever: RetrieverConfig
    datasets: list[EvalDatasetConfig] = Field(min_length=1)
    chunk_size: int = Field(default=32, ge=1)  # questions per resumable part file
    builtin: BuiltinTeacherConfig = BuiltinTeacherConfig()  # the built-in reader's scoring
    judge: JudgeConfig = JudgeConfig()

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: list[EvalDatasetConfig]) -> list[EvalDatasetConfig]:
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        return datasets

    @model_validator(mode="after")
    def _one_rollout_per_question(self) -> EvalConfig:
        if self.agent.rollout.n != 1:
            raise ValueError("agent.rollout.n must be 1 for evaluation (one answer per question)")
        return self
