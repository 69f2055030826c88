"""Configuration of the CoT trajectory builder (``configs/cot.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ramp.agent.config import BackendConfig, RolloutConfig
from ramp.config import StrictModel
from ramp.retrieval.config import RetrieverConfig
from ramp.retrieval.env import SearchConfig
from ramp.rewards import RewardConfig


class TeacherConfig(StrictModel):
    """Who plays the roles: the built-in search-and-read teacher, a served LLM, or a trained student."""

    kind: Literal["builtin", "openai", "student"] = "builtin"
    # openai: the served teacher model; student: the student's backend (hf, vllm or openai).
    backend: BackendConfig = BackendConfig(kind="openai")
    # student only: its single-agent rollout (no log-probs needed: trajectories are text)
    rollout: RolloutConfig = RolloutConfig(logprobs=False)
    tokenizer: str | None = None  # student on an openai completions endpoint: a local tokenizer path
    temperature: float = Field(default=0.7, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=512, ge=1)

    @property
    def model_name(self) -> str:
        """The model recorded in trajectories ("" for the built-in teacher)."""
        if self.kind == "builtin":
            return ""
        b = self.backend
        return {"hf": b.hf.model, "vllm": b.vllm.model, "openai": b.openai.model}[b.kind]


class BuiltinTeacherConfig(StrictModel):
    """The deterministic search-and-read teacher (:mod:`ramp.cot.reading` explains the scoring)."""

    query_max_words: int = Field(default=24, ge=2)  # words of the mask's sentence kept in its query
    context_words: int = Field(default=6, ge=1)  # words each side of the mask in its second query
    window: int = Field(default=12, ge=1)  # context tokens each side, in the passage and in a hit
    max_fill_words: int = Field(default=8, ge=1)  # longest candidate fill
    min_anchor_tokens: int = Field(default=4, ge=1)  # exact neighbours making any span a candidate
    decay: float = Field(default=0.15, ge=0.0)  # context weight 1 / (1 + decay * (distance - 1))
    cross_side: float = Field(default=0.5, ge=0.0, le=1.0)  # a context word found on the other side
    anchor_weight: float = Field(default=1.0, ge=0.0)  # per exact neighbour token repeated by the hit
    hit_score_power: float = Field(default=0.0, ge=0.0)  # occurrences weighted by (BM25 / best) ** this
    agreement: float = Field(default=1.0, ge=0.0)  # weight of a candidate's further occurrences
    agreement_cap: float = Field(default=5.0, ge=0.0)  # ... at most this many times its best one
    part_weight: float = Field(default=0.7, ge=0.0, le=1.0)  # a shorter part of a capitalised run
    read_chars: int | None = Field(default=None, ge=50)  # None: read the hits as the search env shows them
    chain: bool = True  # a mask's query shows the fills already read for the other masks
    chain_reading: bool = False  # ... and so does its reading context (a second pass over the hits)
    min_query_words: int = Field(default=4, ge=0)  # fewer content words: add the neighbouring sentence


class LoopConfig(StrictModel):
    max_turns: int = Field(default=4, ge=1)  # observer decisions; the last one must answer
    queries_per_turn: int = Field(default=2, ge=1)  # rewriter queries kept per search turn


class VerifyConfig(StrictModel):
    """Verified = well formed and (answer score >= ``threshold``, or the LLM judge says correct)."""

    method: Literal["score", "judge"] = "score"
    threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    reward: RewardConfig = Field(
        default_factory=lambda: RewardConfig.model_validate({"metric": "f1"})
    )  # the score/reward recorded (and used by method=score)
    judge_backend: BackendConfig = BackendConfig(kind="openai")  # method=judge
    judge_max_new_tokens: int = Field(default=256, ge=1)


class CotOutputConfig(StrictModel):
    num_shards: int = Field(default=1, ge=1)
    batch_size: int = Field(default=8, ge=1)  # samples per teacher/retriever batch


class CotConfig(StrictModel):
    seed: int = 0
    round: int = Field(default=0, ge=0)  # self-evolving round recorded in every trajectory
    prompts: str = "cot_prompts"  # role prompt templates (a recipe name in configs/ or a path)
    task_prompts: str = "prompts"  # the tasks' own prompts, what SFT trains on (recipe name or path)
    teacher: TeacherConfig = TeacherConfig()
    builtin: BuiltinTeacherConfig = BuiltinTeacherConfig()
    retriever: RetrieverConfig = RetrieverConfig(kind="lucene", index="runs/index")
    search: SearchConfig = SearchConfig()  # documents per search, characters shown, budgets
    loop: LoopConfig = LoopConfig()
    verify: VerifyConfig = VerifyConfig()
    output: CotOutputConfig = CotOutputConfig()
