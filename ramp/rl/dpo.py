"""Iterative DPO of a decomposer (AceSearcher's reinforcement stage, arXiv 2509.24193), ``configs/dpo.yaml``.

Each round: the rollout engine (its own copy of the policy) samples ``dpo.candidates`` decompositions per
training question (:class:`~ramp.agent.decompose.DecomposeSolver`, seeded per round, question and
candidate), the solver (the same policy, greedy) answers along each, and the final answer's score against
the golds (``dpo.metric``) ranks them: the best is chosen, the worst rejected (a question whose candidates
all score the same gives no pair). The policy then trains ``dpo.epochs`` passes over the round's pairs with
:func:`~ramp.rl.core_algos.dpo_loss` against a frozen reference, the policy as the round began; the new
weights go into the engine for the next round. Log-probs are summed over the decomposition's tokens only
(:func:`~ramp.rl.actor.response_log_probs`: the output layer runs at those positions alone). Outputs in
``trainer.output_dir``: ``history.jsonl`` (a line per round), the HF ``policy/``, an MLflow run.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from ramp.agent.backends.hf import HFBackend
from ramp.agent.decompose import DecomposeConfig, DecomposeSolver, decomposer_messages
from ramp.agent.protocol import render_trajectory
from ramp.config import StrictModel
from ramp.metrics import exact_match, f1
from ramp.retrieval.config import RetrieverConfig, build_retriever
from ramp.retrieval.env import SearchConfig, SearchEnv
from ramp.rl.actor import Batch, load_policy, response_log_probs
from ramp.rl.checkpoint import HISTORY, POLICY_DIR, append_history, save_policy
from ramp.rl.config import PolicyConfig
from ramp.rl.core_algos import dpo_loss
from ramp.rl.distributed import full_state_dict
from ramp.seeding import stable_seed
from ramp.tracking import mlflow_run

METRICS = {"f1": f1, "exact_match": exact_match}


class DPOSettings(StrictModel):
    rounds: int = Field(default=3, ge=1)  # sample -> rank -> train, each from the last round's policy
    candidates: int = Field(default=4, ge=2)  # decompositions sampled per question
    temperature: float = Field(default=1.0, gt=0)
    metric: Literal["f1", "exact_match"] = "f1"  # the final answer's reward
    beta: float = Field(default=0.1, gt=0)
    epochs: int = Field(default=1, ge=1)  # passes over a round's pairs
    batch_size: int = Field(default=8, ge=1)  # pairs per optimizer step
    lr: float = Field(default=1e-6, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)


class DPODataConfig(StrictModel):
    qa: str = ""  # a JSONL of {"id", "question", "golden_answers"}


class DPOTrainerConfig(StrictModel):
    seed: int = 0
    output_dir: str = "runs/dpo"
    batch_size: int = Field(default=64, ge=1)  # the engine's generation batch
    experiment: str = "ramp-dpo"
    run_name: str | None = None
    mlflow_uri: str | None = None
    threads: int | None = Field(default=None, ge=1)


class DPOConfig(StrictModel):
    policy: PolicyConfig = PolicyConfig()
    retriever: RetrieverConfig
    search: SearchConfig = SearchConfig(top_k=3)
    decompose: DecomposeConfig = DecomposeConfig()
    data: DPODataConfig = DPODataConfig()
    dpo: DPOSettings = DPOSettings()
    trainer: DPOTrainerConfig = DPOTrainerConfig()


@dataclass(frozen=True)
class Pair:
    question: str
    chosen: str
    rejected: str


def preference_pairs(
    questions: Sequence[str], candidates: Sequence[Sequence[str]], rewards: Sequence[Sequence[float]]
) -> list[Pair]:
    """Per question, the best candidate (first among equals) over the worst (last among equals); none
    when every candidate scores the same or the two texts are equal."""
    pairs = []
    for question, texts, scores in zip(questions, candidates, rewards, strict=True):
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        worst = min(range(len(scores)), key=lambda i: (scores[i], -i))
        if scores[best] > scores[worst] and texts[best] != texts[worst]:
            pairs.append(Pair(question, texts[best], texts[worst]))
    return pairs


def _batch(texts: Sequence[tuple[str, str]], tokenizer: Any, device: torch.device) -> Batch:
    """(question, decomposition) rows as a right-padded batch; the loss mask covers the decomposition and
    its end-of-turn token."""
    rendered = [
        render_trajectory([*decomposer_messages(q), {"role": "assistant", "content": d}], tokenizer)
        for q, d in texts
    ]
    width = max(len(r.input_ids) for r in rendered)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rendered), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rendered), width), dtype=torch.long)
    response = torch.zeros((len(rendered), width - 1))
    for row, r in enumerate(rendered):
        ids[row, : len(r.input_ids)] = torch.tensor(r.input_ids)
        attention[row, : len(r.input_ids)] = 1
        response[row, : len(r.input_ids) - 1] = torch.tensor(r.is_model_token[1:], dtype=torch.float32)
    return Batch(ids.to(device), attention.to(device), response.to(device), torch.zeros(len(rendered)))


def sequence_log_probs(model: Any, texts: Sequence[tuple[str, str]], tokenizer: Any) -> torch.Tensor:
    """``[N]`` log-probability of each decomposition given its question (summed over its tokens)."""
    device = next(model.parameters()).device
    log_probs, _ = response_log_probs(model, _batch(texts, tokenizer, device), temperature=1.0)
    return log_probs.sum(-1)


def _questions(path: str) -> list[dict[str, Any]]:
    if not path:
        raise ValueError("data.qa is empty: give a JSONL of {id, question, golden_answers}")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def train_dpo(config: DPOConfig) -> Path:
    """Run ``dpo.rounds`` rounds; returns the output directory (the policy in ``policy/``)."""
    tcfg, settings = config.trainer, config.dpo
    if tcfg.threads is not None:
        torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    out = Path(tcfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / HISTORY).unlink(missing_ok=True)
    rows = _questions(config.data.qa)
    device = torch.device("cpu")
    policy, tokenizer = load_policy(config.policy, device)
    engine, _ = load_policy(config.policy, device)
    backend = HFBackend(engine.eval(), tokenizer, batch_size=tcfg.batch_size)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    env = SearchEnv(build_retriever(config.retriever), config.search, owns_retriever=True)
    solver = DecomposeSolver(backend, tokenizer, env, config.decompose)
    score = METRICS[settings.metric]
    questions, ids = [r["question"] for r in rows], [str(r["id"]) for r in rows]
    try:
        with mlflow_run(
            tcfg.experiment, tcfg.run_name, config.model_dump(mode="json"), uri=tcfg.mlflow_uri
        ) as mlflow:
            for round_ in range(settings.rounds):
                seed = stable_seed(tcfg.seed, "round", round_)
                candidates = solver.decompose(questions, settings.candidates, settings.temperature, seed, ids)
                flat = [c for texts in candidates for c in texts]
                solutions = solver.solve([q for q in questions for _ in range(settings.candidates)], flat)
                n = settings.candidates
                rewards = [
                    [score(s.answer, rows[i]["golden_answers"]) for s in solutions[i * n : (i + 1) * n]]
                    for i in range(len(rows))
                ]
                pairs = preference_pairs(questions, candidates, rewards)
                metrics = _train_round(policy, tokenizer, optimizer, pairs, settings, seed)
                metrics.update(
                    {
                        "round": float(round_ + 1),
                        "pairs": float(len(pairs)),
                        "reward/mean": sum(map(sum, rewards)) / max(1, len(flat)),
                        "reward/best": sum(map(max, rewards)) / max(1, len(rows)),
                        "decompose/subquestions": sum(len(s.queries) for s in solutions) / max(1, len(flat)),
                    }
                )
                append_history(out / HISTORY, metrics)
                mlflow.log_metrics({k: v for k, v in metrics.items() if k != "round"}, step=round_ + 1)
                backend.update_weights(full_state_dict(policy))
            save_policy(policy, tokenizer, full_state_dict(policy), out / POLICY_DIR)
    finally:
        env.close()
    return out


def _train_round(
    policy: Any, tokenizer: Any, optimizer: Any, pairs: Sequence[Pair], settings: DPOSettings, seed: int
) -> dict[str, float]:
    """``epochs`` passes of DPO over the round's pairs against the policy as the round began."""
    if not pairs:
        return {"dpo/loss": 0.0, "dpo/steps": 0.0}
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    chosen = [(p.question, p.chosen) for p in pairs]
    rejected = [(p.question, p.rejected) for p in pairs]
    with torch.no_grad():
        ref_chosen = sequence_log_probs(reference, chosen, tokenizer)
        ref_rejected = sequence_log_probs(reference, rejected, tokenizer)
    del reference
    totals: dict[str, float] = {}
    steps = 0
    for epoch in range(settings.epochs):
        order = list(range(len(pairs)))
        random.Random(stable_seed(seed, "shuffle", epoch)).shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            loss, metrics = dpo_loss(
                sequence_log_probs(policy, [chosen[i] for i in rows], tokenizer),
                sequence_log_probs(policy, [rejected[i] for i in rows], tokenizer),
                ref_chosen[rows],
                ref_rejected[rows],
                settings.beta,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), settings.grad_clip)
            optimizer.step()
            for name, value in {"loss": float(loss.detach()), **metrics}.items():
                totals[f"dpo/{name}"] = totals.get(f"dpo/{name}", 0.0) + value
            steps += 1
    return {**{k: v / steps for k, v in totals.items()}, "dpo/steps": float(steps)}
