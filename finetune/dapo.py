"""DAPO reinforcement learning on RAMP samples (or QA sets), one loop, top to bottom.

Per step: the curriculum serves prompts -> the rollout backend (``hf`` or ``vllm``) runs multi-turn search
episodes through the retriever -> rewards (answer, format, overlong shaping) -> dynamic sampling keeps
groups whose answer score has spread, generating more batches until the train batch is full -> group
advantages -> old log-probs from the policy -> PPO-style mini-batch updates (``ppo_epochs``) -> the new
weights go into the rollout backend -> checkpoint. Formulas live in :mod:`ramp.rl.core_algos`.

One process (CPU or one GPU), or ``torchrun --nproc_per_node N -m ramp.finetune.dapo --config ...``: the
policy is sharded with FSDP2 (``fully_shard`` per decoder layer), every rank generates its share of each
generation batch with its own rollout engine, and the token-mean loss divides by the token count over all
ranks. Checkpoints hold the model, optimizer, scheduler, curriculum and step; a resumed run continues
where the last checkpoint stopped and logs into the same MLflow run. There is no other random state to
keep: every draw is seeded from (trainer seed, step, generation batch, task id, sample index).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ramp.agent.parser import parse_mask_fills
from ramp.agent.rollout import Rollout, RolloutLoop
from ramp.agent.task import Task, task_from_qa, task_from_sample
from ramp.metrics import normalize_answer
from ramp.prompts import load_templates
from ramp.rewards import combined_reward
from ramp.rl.config import RLConfig
from ramp.rl.core_algos import (
    aggregate,
    entropy_from_logits,
    fill_train_batch,
    get_adv_estimator,
    get_kl_penalty,
    get_policy_loss,
    masked_mean,
    overlong_penalty,
)
from ramp.rl.curriculum import CurriculumConfig, MaskCurriculum
from ramp.seeding import stable_seed

CHECKPOINT = "checkpoint/state.pt"
POLICY_DIR = "policy"  # the final policy as an HF checkpoint
HISTORY = "history.jsonl"  # one line of metrics per step (rank 0)


# ----------------------------------------------------------------------------------------------------
# Episodes: one scored rollout. The rollout's token masks are read in one place (`sampled_tokens`).


def sampled_tokens(rollout: Rollout) -> list[bool]:
    """Per token of ``rollout.token_ids``: did the policy sample it (carries log-prob and loss)? Prompt,
    retrieved result blocks and the end-of-turn token the loop appends after ``</answer>`` are not."""
    return rollout.sampled_mask


@dataclass
class Episode:
    rollout: Rollout
    group_id: str  # unique per prompt draw: task id @ step.batch
    answer: float
    format: float
    total: float
    score: float  # total + overlong shaping: what advantages are computed from
    sampled: list[bool] = field(repr=False)
    advantage: float = 0.0
    old_log_prob: torch.Tensor | None = field(default=None, repr=False)  # [tokens - 1]
    ref_log_prob: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_sampled(self) -> int:
        return sum(self.sampled)

    @property
    def k(self) -> int:
        return self.rollout.task.num_masks or 0

    def filter_value(self, metric: str) -> float:
        return float(getattr(self, metric))


def score_rollouts(rollouts: Sequence[Rollout], group_suffix: str, config: RLConfig) -> list[Episode]:
    """Reward every rollout (on the whole response: model text and result blocks) and shape length."""
    overlong = config.algorithm.overlong
    max_length = overlong.max_length or config.rollout.max_total_new_tokens
    episodes = []
    for rollout in rollouts:
        task = rollout.task
        reward = combined_reward(
            rollout.response_text, list(task.golds), num_masks=task.num_masks or None, config=config.reward
        )
        sampled = sampled_tokens(rollout)
        shaping = (
            overlong_penalty(sum(sampled), max_length, min(overlong.buffer, max_length), overlong.factor)
            if overlong.enable
            else 0.0
        )
        episodes.append(
            Episode(
                rollout=rollout,
                group_id=f"{task.task_id}@{group_suffix}",
                answer=reward.answer,
                format=reward.format,
                total=reward.total,
                score=reward.total + shaping,
                sampled=sampled,
            )
        )
    return episodes


def answer_words(episode: Episode) -> float:
    """Mean normalised words per fill of the episode's answer (0 without an answer): padding shows here."""
    answer = episode.rollout.answer
    if answer is None:
        return 0.0
    task = episode.rollout.task
    fills = parse_mask_fills(answer, task.num_masks) if task.kind == "ramp" and task.num_masks else [answer]
    return sum(len(normalize_answer(f).split()) for f in fills) / max(1, len(fills))


# ----------------------------------------------------------------------------------------------------
# Distributed helpers (identity on one process).


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def max(self, value: int) -> int:
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def gather(self, value: int) -> list[int]:
        if self.world == 1:
            return [value]
        out = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world)]
        dist.all_gather(out, torch.tensor([value], dtype=torch.long, device=self.device))
        return [int(t.item()) for t in out]


def init_distributed() -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world == 1:
        return Dist(device=device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


# ----------------------------------------------------------------------------------------------------
# Building the parts.


def load_tasks(config: RLConfig) -> list[Task]:
    templates = load_templates(config.data.prompts)
    if config.data.task == "qa":
        if not config.data.qa:
            raise ValueError("data.qa is empty: give a JSONL of {id, question, golden_answers}")
        with open(config.data.qa, encoding="utf-8") as f:
            return [task_from_qa(json.loads(line), templates) for line in f if line.strip()]
    import pyarrow.parquet as pq

    from ramp.data.samples import Sample

    root = Path(config.data.samples)
    files = [root] if root.is_file() else sorted(root.glob("samples-*.parquet"))
    if not files:
        raise ValueError(f"no samples-*.parquet under {root}")
    rows = [row for path in files for row in pq.read_table(path).to_pylist()]
    return [task_from_sample(Sample.from_row(row), templates) for row in rows]


def build_curriculum(tasks: Sequence[Task], config: RLConfig) -> MaskCurriculum:
    if config.data.task == "ramp":
        return MaskCurriculum(tasks, config.curriculum)
    single = CurriculumConfig(
        stages=[1], steps_per_stage=None, reward_threshold=None, seed=config.curriculum.seed
    )
    return MaskCurriculum(tasks, single, key=lambda _: 1)


def load_policy(config: RLConfig, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not config.policy.model:
        raise ValueError("policy.model is empty: give an HF checkpoint directory")
    dtype = torch.bfloat16 if config.policy.dtype == "bfloat16" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(config.policy.model)
    model: Any = AutoModelForCausalLM.from_pretrained(config.policy.model, dtype=dtype)
    model.to(device)
    if config.policy.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model.train(), tokenizer


def shard(model: Any) -> Any:
    """FSDP2: each decoder layer its own unit, the rest (embeddings, norm, head) the root."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def build_rollout_backend(config: RLConfig, dist_info: Dist) -> Any:
    """The rollout engine, on its own copy of the policy's weights (updated every step)."""
    from ramp.agent.backends import build_backend

    backend = config.backend
    if backend.kind == "hf" and not backend.hf.model:
        backend = backend.model_copy(
            update={"hf": backend.hf.model_copy(update={"model": config.policy.model})}
        )
    if backend.kind == "hf" and backend.hf.device == "auto":
        device = str(dist_info.device)
        backend = backend.model_copy(update={"hf": backend.hf.model_copy(update={"device": device})})
    if backend.kind == "vllm" and not backend.vllm.model:
        backend = backend.model_copy(
            update={"vllm": backend.vllm.model_copy(update={"model": config.policy.model})}
        )
    return build_backend(backend)


def sync_rollout_weights(backend: Any, state_dict: dict[str, torch.Tensor]) -> None:
    """Push the policy's full weights into the rollout engine (``update_weights`` where it has one)."""
    update = getattr(backend, "update_weights", None)
    if update is not None:
        update(state_dict)
        return
    model = getattr(backend, "model", None)
    if model is None:
        raise TypeError(f"{type(backend).__name__} can neither update_weights nor load a state dict")
    model.load_state_dict(state_dict)
    backend.clear_cache()


def full_state_dict(model: Any) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}


# ----------------------------------------------------------------------------------------------------
# Tensors: sequences right-padded; position t of the response mask marks token t+1 as a prediction.


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, S]
    response_mask: torch.Tensor  # [B, S-1]: 1 where token t+1 was sampled by the policy
    advantages: torch.Tensor  # [B]


def collate(episodes: Sequence[Episode], pad_id: int, device: torch.device) -> Batch:
    if not episodes:  # a rank without data still joins the collectives with one empty row
        return Batch(
            torch.full((1, 2), pad_id, device=device),
            torch.ones((1, 2), dtype=torch.long, device=device),
            torch.zeros((1, 1), device=device),
            torch.zeros(1, device=device),
        )
    width = max(len(e.rollout.token_ids) for e in episodes)
    ids = torch.full((len(episodes), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(episodes), width), dtype=torch.long)
    response = torch.zeros((len(episodes), width - 1))
    for row, episode in enumerate(episodes):
        tokens = episode.rollout.token_ids
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention[row, : len(tokens)] = 1
        response[row, : len(tokens) - 1] = torch.tensor(episode.sampled[1:], dtype=torch.float32)
    advantages = torch.tensor([e.advantage for e in episodes], dtype=torch.float32)
    return Batch(ids.to(device), attention.to(device), response.to(device), advantages.to(device))


def token_log_probs(
    model: Any, batch: Batch, temperature: float, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of every next token under ``model`` (logits / temperature, as sampled), and entropy."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    logits = logits.float() / temperature
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return log_probs, entropy_from_logits(logits) if with_entropy else None


def split(items: Sequence[Episode], parts: int) -> list[list[Episode]]:
    """``parts`` contiguous chunks of near-equal size (some may be empty)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(list(items[start:end]))
        start = end
    return out


def micro_batches(items: Sequence[Episode], size: int, dist_info: Dist) -> list[list[Episode]]:
    """Chunks of at most ``size``; every rank gets the same number of chunks (FSDP's collectives)."""
    count = dist_info.max(max(1, math.ceil(len(items) / size)))
    return split(items, count)


def trim_to_quota(episodes: list[Episode], target: int, dist_info: Dist) -> list[Episode]:
    """Keep whole groups, ``target`` groups over all ranks (lower ranks first), in generation order."""
    order: list[str] = []
    for e in episodes:
        if e.group_id not in order:
            order.append(e.group_id)
    counts = dist_info.gather(len(order))
    quota = max(0, min(len(order), target - sum(counts[: dist_info.rank])))
    keep = set(order[:quota])
    return [e for e in episodes if e.group_id in keep]


# ----------------------------------------------------------------------------------------------------
# Checkpoints.


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def plot_rewards(history: Sequence[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [h["reward/total"] for h in history], label="total", linewidth=2)
    ax.plot(steps, [h["reward/answer"] for h in history], label="answer")
    for key in sorted(k for k in history[-1] if k.startswith("reward/k")):
        ax.plot(steps, [h.get(key, float("nan")) for h in history], label=key.split("/")[1], alpha=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title("DAPO reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# The loop.


def train(config: RLConfig, on_step_end: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Run DAPO to ``trainer.total_steps``; returns the output directory.

    ``on_step_end(step, metrics)`` runs after each step's checkpoint (tests stop a run there).
    """
    from contextlib import nullcontext

    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from ramp.retrieval.config import build_retriever
    from ramp.retrieval.env import SearchEnv
    from ramp.tracking import mlflow_run

    cfg, algo, tcfg = config, config.algorithm, config.trainer
    if tcfg.threads is not None:
        torch.set_num_threads(tcfg.threads)
    dist_info = init_distributed()
    main = dist_info.rank == 0
    out = Path(tcfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    policy, tokenizer = load_policy(cfg, dist_info.device)
    reference = None
    if algo.kl_coef > 0:
        reference, _ = load_policy(cfg, dist_info.device)
        reference.eval().requires_grad_(False)
    if dist_info.world > 1:
        policy = shard(policy)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / tcfg.warmup_steps) if tcfg.warmup_steps else 1.0
    )
    backend = build_rollout_backend(cfg, dist_info)
    env = SearchEnv(build_retriever(cfg.retriever), cfg.search, owns_retriever=True)
    tasks = load_tasks(cfg)
    curriculum = build_curriculum(tasks, cfg)
    compute_advantages = get_adv_estimator(algo.adv_estimator)
    loss_fn = get_policy_loss(algo.policy_loss)
    kl_fn = get_kl_penalty(algo.kl_penalty) if algo.kl_coef > 0 else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    full_options = StateDictOptions(full_state_dict=True)

    start_step, run_id, history = 0, None, []
    checkpoint = out / CHECKPOINT
    if tcfg.resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        set_model_state_dict(policy, state["model"], options=full_options)
        set_optimizer_state_dict(policy, optimizer, state["optimizer"], options=full_options)
        scheduler.load_state_dict(state["scheduler"])
        curriculum.load_state_dict(state["curriculum"])
        start_step, run_id, history = state["step"], state["mlflow_run_id"], state["history"]
        sync_rollout_weights(backend, full_state_dict(policy))
        if main:  # steps after the checkpoint (a kill between saves) are redone: drop their lines
            (out / HISTORY).write_text("".join(json.dumps(h, sort_keys=True) + "\n" for h in history))

    tracking = (
        mlflow_run(
            tcfg.experiment, tcfg.run_name, cfg.model_dump(mode="json"), uri=tcfg.mlflow_uri, run_id=run_id
        )
        if main
        else nullcontext(None)
    )
    mlflow: Any
    with tracking as mlflow:
        if mlflow is not None:
            run_id = mlflow.active_run().info.run_id
        for step in range(start_step, tcfg.total_steps):
            t_step = time.perf_counter()
            timing = {"rollout": 0.0, "retrieval": 0.0, "reward": 0.0, "update": 0.0}
            generated: list[Episode] = []

            # 1. Rollouts, rewards and dynamic sampling.
            def generate(
                batch_number: int,
                step: int = step,
                timing: dict[str, float] = timing,
                generated: list[Episode] = generated,
            ) -> list[Episode]:
                drawn = curriculum.sample(tcfg.gen_batch_size)  # the same draw on every rank
                mine = drawn[dist_info.rank :: dist_info.world]
                rollout_cfg = cfg.rollout.model_copy(
                    update={"seed": stable_seed(tcfg.seed, "rollout", step, batch_number) % 2**31}
                )
                loop = RolloutLoop(backend, env, rollout_cfg, tokenizer)
                t0 = time.perf_counter()
                rollouts = loop.run(mine, progress=tcfg.progress and main) if mine else []
                timing["rollout"] += time.perf_counter() - t0 - loop.stats.retrieve_s
                timing["retrieval"] += loop.stats.retrieve_s
                t0 = time.perf_counter()
                episodes = score_rollouts(rollouts, f"{step}.{batch_number}", cfg)
                timing["reward"] += time.perf_counter() - t0
                generated.extend(episodes)
                return episodes

            if algo.filter_groups:
                kept, gen_batches = fill_train_batch(
                    generate,
                    group_of=lambda e: e.group_id,
                    metric_of=lambda e: e.filter_value(algo.filter_metric),
                    target_groups=tcfg.train_batch_size,
                    max_num_gen_batches=algo.max_num_gen_batches,
                    global_count=lambda n: int(dist_info.sum(n)),
                )
                kept = trim_to_quota(kept, tcfg.train_batch_size, dist_info)
            else:
                kept, gen_batches = trim_to_quota(generate(0), tcfg.train_batch_size, dist_info), 1

            # 2. Advantages (groups are whole on each rank).
            t_update = time.perf_counter()
            if kept:
                advantages = compute_advantages(
                    torch.tensor([e.score for e in kept]), [e.group_id for e in kept], eps=algo.adv_eps
                )
                for episode, advantage in zip(kept, advantages.tolist(), strict=True):
                    episode.advantage = advantage

            # 3. Old (and reference) log-probs, then PPO-style mini-batch updates.
            temperature = cfg.rollout.temperature
            with torch.no_grad():
                for chunk in micro_batches(kept, tcfg.micro_batch_size, dist_info):
                    batch = collate(chunk, pad_id, dist_info.device)
                    old, _ = token_log_probs(policy, batch, temperature)
                    ref = token_log_probs(reference, batch, temperature)[0] if reference is not None else None
                    for row, episode in enumerate(chunk):
                        episode.old_log_prob = old[row]
                        episode.ref_log_prob = ref[row] if ref is not None else None
            sums = {"pg_loss": 0.0, "kl": 0.0, "clipfrac": 0.0, "approx_kl": 0.0, "entropy": 0.0}
            tokens_seen, updates, grad_norms = 0.0, 0, []
            for epoch in range(tcfg.ppo_epochs):
                order = list(kept)
                random.Random(stable_seed(tcfg.seed, "shuffle", step, epoch)).shuffle(order)
                for mini in split(order, tcfg.mini_batches):
                    # token-mean / seq-mean denominators over the whole mini-batch on every rank
                    agg_kw = {
                        "global_tokens": max(1.0, dist_info.sum(sum(e.num_sampled for e in mini))),
                        "global_seqs": max(1.0, dist_info.sum(sum(e.num_sampled > 0 for e in mini))),
                    }
                    optimizer.zero_grad(set_to_none=True)
                    for chunk in micro_batches(mini, tcfg.micro_batch_size, dist_info):
                        batch = collate(chunk, pad_id, dist_info.device)
                        log_prob, entropy = token_log_probs(policy, batch, temperature, with_entropy=True)
                        assert entropy is not None
                        old = stack_rows([e.old_log_prob for e in chunk], batch.response_mask)
                        pg_loss, pg_metrics = loss_fn(
                            log_prob,
                            old,
                            batch.advantages,
                            batch.response_mask,
                            clip_low=algo.clip_low,
                            clip_high=algo.clip_high,
                            clip_c=algo.clip_c,
                            agg=algo.loss_agg_mode,
                            **agg_kw,
                        )
                        loss = pg_loss
                        if algo.entropy_coef > 0:
                            bonus = aggregate(entropy, batch.response_mask, algo.loss_agg_mode, **agg_kw)
                            loss = loss - algo.entropy_coef * bonus
                        if kl_fn is not None:
                            ref = stack_rows([e.ref_log_prob for e in chunk], batch.response_mask)
                            kl = aggregate(
                                kl_fn(log_prob, ref), batch.response_mask, algo.loss_agg_mode, **agg_kw
                            )
                            loss = loss + algo.kl_coef * kl
                            sums["kl"] += float(kl)
                        # FSDP averages gradients over ranks; the loss already divides by the global count.
                        (loss * dist_info.world).backward()
                        local_tokens = float(batch.response_mask.sum())
                        tokens_seen += local_tokens
                        sums["pg_loss"] += float(pg_loss.detach())
                        sums["clipfrac"] += pg_metrics["clipfrac"] * local_tokens
                        sums["approx_kl"] += pg_metrics["approx_kl"] * local_tokens
                        sums["entropy"] += (
                            float(masked_mean(entropy.detach(), batch.response_mask)) * local_tokens
                        )
                    norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), tcfg.grad_clip)
                    grad_norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
                    optimizer.step()
                    updates += 1
            scheduler.step()
            sync_rollout_weights(backend, full_state_dict(policy))
            timing["update"] = time.perf_counter() - t_update

            # 4. Metrics (over every generated episode of this step, all ranks), curriculum, checkpoint.
            stage = curriculum.stage
            metrics_out = step_metrics(generated, kept, dist_info, cfg)
            total_tokens = max(1.0, dist_info.sum(tokens_seen))
            for name, value in sums.items():  # losses: mean per update; the rest: mean per sampled token
                metrics_out[f"actor/{name}"] = dist_info.sum(value) / (
                    updates if "loss" in name else total_tokens
                )
            if kl_fn is not None:
                metrics_out["actor/kl"] = dist_info.sum(sums["kl"]) / updates
            else:
                del metrics_out["actor/kl"]
            metrics_out["actor/grad_norm"] = sum(grad_norms) / max(1, len(grad_norms))
            metrics_out["actor/lr"] = float(scheduler.get_last_lr()[0])
            metrics_out["train/gen_batches"] = float(gen_batches)
            metrics_out["curriculum/stage"] = float(stage)
            advanced = curriculum.record(metrics_out["reward/answer"])
            metrics_out["curriculum/advanced"] = float(advanced)
            for name, seconds in timing.items():
                metrics_out[f"time/{name}_s"] = dist_info.sum(seconds) / dist_info.world
            metrics_out["time/step_s"] = time.perf_counter() - t_step
            metrics_out["step"] = float(step + 1)
            history.append(metrics_out)
            last = step + 1 == tcfg.total_steps
            full_model = full_state_dict(policy)
            full_optim = get_optimizer_state_dict(policy, optimizer, options=full_options)
            if main:
                mlflow.log_metrics({k: v for k, v in metrics_out.items() if k != "step"}, step=step + 1)
                with open(out / HISTORY, "a", encoding="utf-8") as f:
                    f.write(json.dumps(metrics_out, sort_keys=True) + "\n")
                if (step + 1) % tcfg.save_every == 0 or last:
                    save_checkpoint(
                        checkpoint,
                        {
                            "model": full_model,
                            "optimizer": full_optim,
                            "scheduler": scheduler.state_dict(),
                            "curriculum": curriculum.state_dict(),
                            "step": step + 1,
                            "mlflow_run_id": run_id,
                            "history": history,
                        },
                    )
            if dist_info.world > 1:
                dist.barrier()
            if on_step_end is not None:
                on_step_end(step + 1, metrics_out)

        # 5. The final policy as an HF checkpoint, and the reward curve.
        final = full_state_dict(policy)
        if main:
            model = policy.module if hasattr(policy, "module") else policy
            model.save_pretrained(out / POLICY_DIR, state_dict=final)
            tokenizer.save_pretrained(out / POLICY_DIR)
            if history:
                plot_rewards(history, out / "reward_curve.png")
                mlflow.log_artifact(str(out / "reward_curve.png"))
    env.close()
    if dist_info.world > 1:
        dist.barrier()
    return out


def stack_rows(rows: Sequence[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
    """Per-token rows (computed in other micro-batches, so of other widths) fitted to ``like``'s shape."""
    out = torch.zeros_like(like)
    for i, row in enumerate(rows):
        if row is not None:
            width = min(row.shape[0], out.shape[1])
            out[i, :width] = row[:width]
    return out


def step_metrics(
    generated: Sequence[Episode], kept: Sequence[Episode], dist_info: Dist, config: RLConfig
) -> dict[str, float]:
    """Rewards (total, answer, format, per k), lengths, searches and answer words over all ranks."""
    n = dist_info.sum(len(generated))

    def mean(values: Sequence[float]) -> float:
        return dist_info.sum(sum(values)) / max(1.0, n)

    metrics = {
        "reward/total": mean([e.total for e in generated]),
        "reward/answer": mean([e.answer for e in generated]),
        "reward/format": mean([e.format for e in generated]),
        "reward/score": mean([e.score for e in generated]),
        "response/sampled_tokens": mean([float(e.num_sampled) for e in generated]),
        "response/searches": mean([float(len(e.rollout.queries)) for e in generated]),
        "response/answer_words": mean([answer_words(e) for e in generated]),
        "train/episodes": n,
        "train/kept_episodes": dist_info.sum(len(kept)),
    }
    ks = config.curriculum.stages if config.data.task == "ramp" else []
    for k in ks:
        of_k = [e for e in generated if e.k == k]
        count = dist_info.sum(len(of_k))
        metrics[f"count/k{k}"] = count
        if count:
            metrics[f"reward/k{k}"] = dist_info.sum(sum(e.answer for e in of_k)) / count
            metrics[f"response/answer_words_k{k}"] = dist_info.sum(sum(answer_words(e) for e in of_k)) / count
    return metrics


def main() -> None:
    """``torchrun ... -m ramp.finetune.dapo --config configs/rl.yaml [--set key=value ...]``."""
    import argparse

    from ramp.config import load_config

    parser = argparse.ArgumentParser(description="DAPO RL (see ramp rl train)")
    parser.add_argument("--config", default="rl")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    train(load_config(RLConfig, args.config, args.overrides))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
