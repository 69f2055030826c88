"""``ramp pretrain train``: megatron-core SFT on packed RAMP shards, from 2 CPU cores to many GPUs.

One process per rank (``torchrun`` or ``ramp pretrain launch``; a plain process is a world of one).
``GPTModel`` (local spec on CPU, Transformer Engine spec on GPU when importable), TP/PP/DP from the
config, megatron ``DistributedDataParallel`` with ``finalize_model_grads``, the loss
``sum(per-token loss × loss mask) / sum(loss mask)`` over the global batch (megatron's per-token
loss: each rank backpropagates its masked sum and ``finalize_model_grads`` divides the all-reduced
gradients by the global mask count), cosine LR with warmup, gradient clipping, ``dist_checkpointing``
save/resume and MLflow logging. With ``train.logits: loss`` the output layer and the cross entropy run
only where the loss mask is 1 (``ramp.train.model.gpt_model_class``): same loss, same gradients.

CPU (tests, demo): a hand micro-batch loop and ``torch.optim.AdamW`` (megatron's optimizer, its
pipeline schedules and activation recomputation need CUDA). GPU: megatron's optimizer (optionally
distributed), ``get_forward_backward_func`` schedules, optional recomputation, bf16. Attention
(``ramp.train.model.packed_rows_loss``): on the CPU the padding is dropped and each packed conversation is
one causal SDPA call (``ramp.train.attention``); on a GPU the local spec takes the block-diagonal mask in
one SDPA call per layer, and the TE spec its own causal mask, so packed conversations see earlier
conversations of their row (labels across a boundary still carry no loss).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ramp.train.checkpoint import (
    LATEST_FILE,
    iteration_dir,
    latest_iteration,
    load_model,
    resolve_checkpoint,
    save_model,
)
from ramp.train.config import PretrainConfig
from ramp.train.flops import peak_flops, train_flops_per_token
from ramp.train.health import HealthMonitor, guard_optimizer, last_good_checkpoint
from ramp.train.model import (
    Qwen2Shape,
    build_gpt_model,
    packed_rows_loss,
    padded_vocab_size,
    te_spec_available,
    transformer_config,
)
from ramp.train.parallel import ParallelInfo, init_parallel, shutdown_parallel
from ramp.train.schedule import cosine_lr
from ramp.train.shards import build_train_dataset, expand_blend, read_manifest
from ramp.train.tokens import check_fingerprint, tokenizer_fingerprint
from ramp.train.weights import hf_to_mcore

OPTIMIZER_FILE = "optimizer-tp{tp:02d}-pp{pp:02d}.pt"
TRAIN_STATE = "train_state.json"


def run_training(config: PretrainConfig, config_text: str | None = None) -> dict[str, Any]:
    """Train on this process's rank; returns a summary (per-step losses on the logging rank)."""
    info = init_parallel(config.parallel.tp, config.parallel.pp, config.train.seed)
    try:
        return Trainer(config, info, config_text).run()
    finally:
        shutdown_parallel()


def train_log_name() -> str:
    """``pretrain-train`` (``-rankN`` under torchrun with several processes): the log of this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return "pretrain-train" if world == 1 else f"pretrain-train-rank{os.environ.get('RANK', '0')}"


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _collate(items: list[dict[str, torch.Tensor]], device: torch.device) -> dict[str, torch.Tensor]:
    """Stack the tensors of a micro-batch (a blend adds a ``dataset_id`` scalar, not needed here)."""
    keys = [k for k, v in items[0].items() if isinstance(v, torch.Tensor)]
    return {k: torch.stack([item[k] for item in items]).to(device) for k in keys}


class Trainer:
    def __init__(self, config: PretrainConfig, info: ParallelInfo, config_text: str | None) -> None:
        from megatron.core import parallel_state
        from transformers import AutoConfig, AutoTokenizer

        self.config, self.info, self.config_text = config, info, config_text
        self.cuda = torch.cuda.is_available()
        par = config.parallel
        if not self.cuda and (par.pp > 1 or par.recompute or par.use_distributed_optimizer):
            raise ValueError(
                "pipeline parallelism, activation recomputation and the distributed optimizer need a GPU "
                "(megatron's schedules and optimizer allocate on CUDA); set parallel.pp=1 and turn them off"
            )
        self.bf16 = config.train.precision == "bf16" or (config.train.precision == "auto" and self.cuda)
        self.shape = Qwen2Shape.from_hf(AutoConfig.from_pretrained(config.model.hf))
        tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
        if len(tokenizer) > self.shape.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model only {self.shape.vocab_size}")
        self.seq_length = self._check_shards(
            tokenizer_fingerprint(tokenizer, config.prepare.end_of_turn_token)
        )
        self.dp, self.accumulation = info.dp, config.grad_accumulation(info.world_size)
        self.padded_vocab = padded_vocab_size(self.shape.vocab_size, par.tp)
        self.tc = transformer_config(
            self.shape,
            tp=par.tp,
            pp=par.pp,
            bf16=self.bf16,
            recompute=par.recompute,
            sequence_parallel=par.sequence_parallel,
        )
        self.local_spec = not te_spec_available()
        self.model = build_gpt_model(
            self.shape,
            self.tc,
            vocab_size=self.padded_vocab,
            max_sequence_length=self.seq_length,
            use_te=not self.local_spec,
        )
        if self.cuda:
            self.model.cuda()
        self.logging_rank = (
            parallel_state.is_pipeline_last_stage()
            and parallel_state.get_tensor_model_parallel_rank() == 0
            and info.dp_rank == 0
        )

    # -- setup ---------------------------------------------------------------------------------
    def _check_shards(self, fingerprint: dict[str, Any]) -> int:
        _, _, directories = expand_blend(self.config.data.blend)
        lengths = set()
        for directory in dict.fromkeys(directories):
            manifest = read_manifest(directory)
            check_fingerprint(manifest, fingerprint, f"shards in {directory}")
            lengths.add(int(manifest["seq_length"]))
        if len(lengths) != 1:
            raise ValueError(f"the blend mixes sequence lengths {sorted(lengths)}")
        return lengths.pop()

    def _init_weights(self) -> None:
        model_cfg, par = self.config.model, self.config.parallel
        if model_cfg.init == "mcore":
            load_model(self.model, resolve_checkpoint(model_cfg.load or ""))
        elif model_cfg.init == "hf":
            if par.tp > 1 or par.pp > 1:
                raise ValueError(
                    "model.init=hf loads full tensors at TP=PP=1 only; run "
                    "`ramp pretrain convert hf-to-mcore "
                    "--tp N` and train with model.init=mcore model.load=DIR"
                )
            from ramp.pretrain.convert import load_hf

            state = hf_to_mcore(load_hf(model_cfg.hf).state_dict(), self.shape, self.padded_vocab)
            self.model.load_state_dict(state, strict=False)

    def _optimizer(self, ddp: Any) -> Any:
        opt = self.config.optim
        if self.cuda:
            from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

            return get_megatron_optimizer(
                OptimizerConfig(
                    optimizer="adam",
                    lr=opt.lr,
                    min_lr=opt.min_lr,
                    weight_decay=opt.weight_decay,
                    adam_beta1=opt.beta1,
                    adam_beta2=opt.beta2,
                    adam_eps=opt.eps,
                    clip_grad=opt.clip_grad,
                    bf16=self.bf16,
                    params_dtype=self.tc.params_dtype,
                    use_distributed_optimizer=self.config.parallel.use_distributed_optimizer,
                ),
                [ddp],
            )
        decay = [p for n, p in self.model.named_parameters() if p.dim() > 1 and "norm" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if not (p.dim() > 1 and "norm" not in n)]
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=opt.lr,
            betas=(opt.beta1, opt.beta2),
            eps=opt.eps,
        )

    # -- checkpoints -----------------------------------------------------------------------------
    def _save(self, step: int, optimizer: Any) -> None:
        from megatron.core import dist_checkpointing

        root = Path(self.config.checkpoint.dir)
        directory = iteration_dir(root, step)
        save_model(self.model, directory, self.shape, self.padded_vocab, step=step)
        if self.cuda:
            optim_dir = directory / "optimizer"
            if self.info.rank == 0:
                optim_dir.mkdir(exist_ok=True)
            _barrier()
            dist_checkpointing.save(
                optimizer.sharded_state_dict(self.model.sharded_state_dict()), str(optim_dir)
            )
        elif self.info.dp_rank == 0:
            name = OPTIMIZER_FILE.format(tp=self.info.tp_rank, pp=self.info.pp_rank)
            torch.save(optimizer.state_dict(), directory / name)
        if self.info.rank == 0:
            state = {
                "step": step,
                "consumed_rows": step * self.config.train.global_batch_size,
                "tp": self.info.tp,
                "pp": self.info.pp,
                "dp": self.dp,
            }
            (directory / TRAIN_STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
            (root / LATEST_FILE).write_text(f"{step}\n", encoding="utf-8")
        _barrier()

    def _resume(self, optimizer: Any) -> int:
        from megatron.core import dist_checkpointing

        root = self.config.checkpoint.dir
        step = latest_iteration(root) if self.config.checkpoint.resume else None
        if step is None:
            self._init_weights()
            return 0
        directory = iteration_dir(root, step)
        load_model(self.model, directory)
        if self.cuda:
            optimizer.load_state_dict(
                dist_checkpointing.load(
                    optimizer.sharded_state_dict(self.model.sharded_state_dict(), is_loading=True),
                    str(directory / "optimizer"),
                )
            )
        else:
            name = OPTIMIZER_FILE.format(tp=self.info.tp_rank, pp=self.info.pp_rank)
            optimizer.load_state_dict(torch.load(directory / name, weights_only=True))
        return step

    # -- one step --------------------------------------------------------------------------------
    def _micro_batches(self, dataset: Any, step: int) -> Iterator[dict[str, torch.Tensor]]:
        """This DP rank's micro-batches of global step ``step`` (the global batch split by rank)."""
        per_rank, mbs = self.config.train.global_batch_size // self.dp, self.config.train.micro_batch_size
        start = step * self.config.train.global_batch_size + self.info.dp_rank * per_rank
        device = self.info.device
        for k in range(self.accumulation):
            yield _collate([dataset[start + k * mbs + i] for i in range(mbs)], device)

    def _forward(self, ddp: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # per conversation on the CPU's local spec; on a GPU one (masked or TE-causal) call per layer
        return packed_rows_loss(
            ddp, batch, logits=self.config.train.logits, per_conversation=self.local_spec and not self.cuda
        )

    def _cpu_step(
        self, ddp: Any, optimizer: Any, batches: Iterator[dict[str, torch.Tensor]]
    ) -> tuple[Any, ...]:
        from megatron.core.distributed import finalize_model_grads

        loss_sum = torch.zeros((), dtype=torch.float64)
        count = torch.zeros((), dtype=torch.float64)
        for batch in batches:
            per_token = self._forward(ddp, batch)
            masked = (per_token.float() * batch["loss_mask"]).sum()
            masked.backward()
            loss_sum += masked.detach().double()
            count += batch["loss_mask"].sum().double()
        finalize_model_grads([ddp], num_tokens=count.clone().to(torch.int64))
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = self._clip([p.main_grad for p in params], self.config.optim.clip_grad)
        for p in params:
            p.grad = p.main_grad.to(p.dtype)
        optimizer.step()
        ddp.zero_grad_buffer()
        optimizer.zero_grad(set_to_none=True)
        return loss_sum, count, grad_norm

    def _clip(self, grads: list[torch.Tensor], max_norm: float) -> float:
        """Global grad norm over TP shards (replicated params counted once), then clip in place."""
        import torch.distributed as dist
        from megatron.core import parallel_state

        params = [p for p in self.model.parameters() if p.requires_grad]
        sharded = sum(
            (
                g.float().pow(2).sum()
                for p, g in zip(params, grads, strict=True)
                if getattr(p, "tensor_model_parallel", False)
            ),
            torch.zeros(()),
        )
        replicated = sum(
            (
                g.float().pow(2).sum()
                for p, g in zip(params, grads, strict=True)
                if not getattr(p, "tensor_model_parallel", False)
            ),
            torch.zeros(()),
        )
        dist.all_reduce(sharded, group=parallel_state.get_tensor_model_parallel_group())
        norm = float(torch.sqrt(sharded + replicated))
        if norm > max_norm:
            for g in grads:
                g.mul_(max_norm / (norm + 1e-6))
        return norm

    def _gpu_step(
        self, ddp: Any, optimizer: Any, batches: Iterator[dict[str, torch.Tensor]]
    ) -> tuple[Any, ...]:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        def forward_step(
            data_iterator: Iterator[dict[str, torch.Tensor]], model: Any
        ) -> tuple[Any, Callable]:
            batch = next(data_iterator)

            def loss_func(
                per_token: torch.Tensor,
            ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
                masked = (per_token.float() * batch["loss_mask"]).sum()
                count = batch["loss_mask"].sum().to(torch.int)
                return masked, count, {"lm loss": torch.stack([masked.detach(), count.float()])}

            return self._forward(model, batch), loss_func

        reports = get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=batches,
            model=[ddp],
            num_microbatches=self.accumulation,
            seq_length=self.seq_length,
            micro_batch_size=self.config.train.micro_batch_size,
            forward_only=False,
        )
        _, grad_norm, _ = optimizer.step()
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        total = (
            torch.stack([r["lm loss"] for r in reports]).sum(0) if reports else torch.zeros(2, device="cuda")
        )
        return total[0].double(), total[1].double(), float(grad_norm or 0.0)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import torch.distributed as dist
        from megatron.core import parallel_state
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )

        cfg = self.config
        ddp = DistributedDataParallel(
            self.tc,
            DistributedDataParallelConfig(
                grad_reduce_in_fp32=True,
                overlap_grad_reduce=False,
                use_distributed_optimizer=cfg.parallel.use_distributed_optimizer,
            ),
            self.model,
        )
        self.tc.finalize_model_grads_func = finalize_model_grads
        self.tc.no_sync_func = ddp.no_sync
        optimizer = guard_optimizer(self._optimizer(ddp), cfg.train.health)
        start = self._resume(optimizer)
        dataset = build_train_dataset(
            cfg.data.blend,
            self.seq_length,
            cfg.train.steps * cfg.train.global_batch_size,
            cfg.train.seed,
            cfg.data.cache_dir,
        )
        flops = train_flops_per_token(self.shape, self.seq_length)
        peak = peak_flops(torch.cuda.get_device_name()) if self.cuda else None
        losses: dict[int, float] = {}
        timing = {"tokens": 0.0, "seconds": 0.0, "cpu_seconds": 0.0}
        tracker = _Tracker(cfg, self.config_text, start) if self.logging_rank else None
        health = HealthMonitor(
            cfg.train.health,
            lambda: last_good_checkpoint(latest_iteration(cfg.checkpoint.dir), cfg.checkpoint.dir),
            tracker.log if tracker is not None else None,
        )
        try:
            stop = min(cfg.train.stop_at or cfg.train.steps, cfg.train.steps)
            bar = tqdm(range(start, stop), "train", total=stop, initial=start, disable=not self.logging_rank)
            for step in bar:
                lr = cosine_lr(
                    step,
                    lr=cfg.optim.lr,
                    min_lr=cfg.optim.min_lr,
                    warmup_steps=cfg.optim.warmup_steps,
                    total_steps=cfg.train.steps,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                began, cpu_began = time.perf_counter(), time.process_time()
                batches = list(self._micro_batches(dataset, step))
                batch_tokens = float(sum((b["segment_ids"] >= 0).sum() for b in batches))  # non-pad
                step_fn = self._gpu_step if self.cuda else self._cpu_step
                loss_sum, count, grad_norm = step_fn(ddp, optimizer, iter(batches))
                totals = torch.stack([loss_sum, count, torch.tensor(batch_tokens, dtype=torch.float64)])
                totals = totals.to(self.info.device)
                dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
                seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
                loss = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
                tokens = float(totals[2])
                if step > start:  # the first step warms up
                    timing["tokens"] += tokens
                    timing["seconds"] += seconds
                    timing["cpu_seconds"] += cpu_seconds
                losses[step + 1] = loss
                health.check(step + 1, loss=loss, grad_norm=grad_norm)  # stop: raises before the save
                health_metrics = health.end_step()
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if tracker is not None and ((step + 1) % cfg.tracking.log_interval == 0 or step + 1 == stop):
                    metrics = {
                        "loss": loss,
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "tokens_per_s": tokens / seconds,
                        "loss_tokens": float(totals[1]),
                        **health_metrics,
                    }
                    if peak:
                        metrics["mfu"] = tokens / seconds * flops / (peak * self.info.world_size)
                    tracker.log(metrics, step + 1)
                if (step + 1) % cfg.checkpoint.save_interval == 0 or step + 1 == stop:
                    self._save(step + 1, optimizer)
        finally:
            if tracker is not None:
                tracker.close()
        return {
            "start_step": start,
            "steps": cfg.train.steps,
            "losses": losses if self.logging_rank else {},
            "tokens_per_s": timing["tokens"] / timing["seconds"] if timing["seconds"] else None,
            # per second of this process's CPU time (all its threads): steadier than tokens_per_s on a shared
            # machine
            "tokens_per_cpu_s": timing["tokens"] / timing["cpu_seconds"] if timing["cpu_seconds"] else None,
            "run_id": tracker.run_id if tracker is not None else None,
            "world_size": self.info.world_size,
            "dp": self.dp,
        }


class _Tracker:
    """The MLflow run of the logging rank: params, the config as an artifact, per-step metrics."""

    def __init__(self, config: PretrainConfig, config_text: str | None, start: int) -> None:
        import tempfile

        from ramp.tracking import mlflow_run

        self._context = mlflow_run(
            config.tracking.experiment,
            config.tracking.run_name,
            params=config.model_dump(mode="json"),
            uri=config.tracking.tracking_uri,
            tags={"stage": "pretrain", "resumed_from_step": str(start)},
        )
        self.mlflow = self._context.__enter__()
        self.run_id = self.mlflow.active_run().info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pretrain.yaml"
            import yaml

            path.write_text(config_text or yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
            self.mlflow.log_artifact(str(path))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self._context.__exit__(None, None, None)
