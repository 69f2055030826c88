"""A RAMP RL run for verl: the tool and agent-loop configs, one hydra config per curriculum stage, the launch.

``ramp rl export-verl`` writes, beside the parquet files (:mod:`ramp.rl.verl`):

- ``tool_config.yaml``: RAMP's search tool (:class:`ramp.finetune.verl_agent.RampSearchTool`) with the
  recipe's ``search:`` settings, calling the retriever every node serves on ``127.0.0.1``;
- ``agent_loop.yaml``: RAMP's agent loop (``ramp_search``, :class:`ramp.finetune.verl_agent.RampAgentLoop`);
- ``ramp_dapo.yaml``: ``verl.trainer.main_ppo``'s ``ppo_trainer`` config with DAPO as verl's recipe sets it
  (clip-higher, token-mean, overlong buffer through the ``dapo`` reward manager, group filtering on the
  ``answer`` score) from the RL recipe's values;
- the curriculum: one config per stage (``ramp-k1.yaml`` … over ``ramp_dapo``: its data file, its steps, its
  checkpoint folder). verl's trainer has no curriculum hook (its prompt sampler only shuffles), so
  ``launch.sh`` runs the stages in order, each from the previous stage's merged policy: stages advance by
  ``curriculum.steps_per_stage`` (a reward-threshold advance needs the trainer's feedback and is not
  available on verl). ``curriculum.mode: mixed`` is one stage over ``ramp.parquet``;
- ``launch.sh``: run on every node; each node serves its own retriever (verl's agent loops run on every
  node and call ``127.0.0.1``), the head starts Ray and trains, the others join Ray.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ramp.rl.config import RLConfig

TOOL_CLASS = "ramp.finetune.verl_agent.RampSearchTool"
AGENT_LOOP_TARGET = "ramp.finetune.verl_agent.RampAgentLoop"
AGENT_LOOP_NAME = "ramp_search"
REWARD_MODULE = "pkg://ramp.rl.verl"
BASE_CONFIG = "ramp_dapo"
FILTER_METRICS = {"answer": "answer", "total": "score", "format": "format"}  # compute_score's keys


@dataclass(frozen=True)
class VerlStage:
    name: str  # the config name (ramp-k1) and the stem of its data file
    train_file: Path
    steps: int


@dataclass(frozen=True)
class Cluster:
    nnodes: int = 1
    gpus_per_node: int = 8
    retriever_port: int = 8000
    max_prompt_length: int = 1024
    rollout_engine: str = "vllm"


def curriculum_stages(config: RLConfig, files: dict[str, Path]) -> list[VerlStage]:
    """The stages verl runs, in order: one per ``curriculum.stages`` k (``staged``) or one ``ramp`` stage."""
    cur = config.curriculum
    if cur.mode == "mixed":
        if "ramp" not in files:
            raise ValueError("curriculum.mode mixed trains on one file: export with --no-by-k")
        return [VerlStage("ramp", files["ramp"], config.trainer.total_steps)]
    if cur.steps_per_stage is None:
        raise ValueError(
            "verl runs the curriculum stage by stage for a fixed number of steps: set "
            "curriculum.steps_per_stage (a reward-threshold advance is not available on verl)"
        )
    missing = [k for k in cur.stages if f"ramp-k{k}" not in files]
    if missing:
        have = ", ".join(sorted(files)) or "none"
        raise ValueError(f"no exported samples with {missing} masks for the curriculum stages (have {have})")
    return [VerlStage(f"ramp-k{k}", files[f"ramp-k{k}"], cur.steps_per_stage) for k in cur.stages]


def tool_config(config: RLConfig, cluster: Cluster) -> dict[str, Any]:
    search = config.search
    return {
        "tools": [
            {
                "class_name": TOOL_CLASS,
                "config": {
                    "type": "native",
                    "retriever_url": f"http://127.0.0.1:{cluster.retriever_port}",
                    "top_k": search.top_k,
                    "max_chars_per_doc": search.max_chars_per_doc,
                    "budget_docs": search.budget_docs,
                },
            }
        ]
    }


def dapo_config(config: RLConfig, cluster: Cluster, out: Path, val_files: Sequence[Path]) -> dict[str, Any]:
    """``ramp_dapo.yaml``: verl's ``ppo_trainer`` with the RL recipe's DAPO, rollout and reward values."""
    algo, trainer, rollout = config.algorithm, config.trainer, config.rollout
    context = config.search.max_context_tokens or cluster.max_prompt_length + rollout.max_total_new_tokens
    response_length = context - cluster.max_prompt_length
    if response_length < rollout.max_new_tokens_per_turn:
        raise ValueError(
            f"search.max_context_tokens {context} leaves {response_length} response tokens after a "
            f"{cluster.max_prompt_length}-token prompt: raise it or lower --max-prompt-length"
        )
    kl = algo.kl_coef > 0
    return {
        "defaults": ["ppo_trainer", "_self_"],
        "data": {
            "train_batch_size": trainer.train_batch_size,
            "gen_batch_size": trainer.gen_batch_size,
            "max_prompt_length": cluster.max_prompt_length,
            "max_response_length": response_length,
            "val_files": [str(p) for p in val_files],
            "seed": trainer.seed,
        },
        "algorithm": {
            "adv_estimator": algo.adv_estimator,
            "use_kl_in_reward": False,
            "filter_groups": {
                "enable": algo.filter_groups,
                "metric": FILTER_METRICS[algo.filter_metric],
                "max_num_gen_batches": algo.max_num_gen_batches,
            },
        },
        "actor_rollout_ref": {
            "actor": {
                "clip_ratio_low": algo.clip_low,
                "clip_ratio_high": algo.clip_high,
                "clip_ratio_c": algo.clip_c if algo.clip_c is not None else 1.0e9,
                "loss_agg_mode": algo.loss_agg_mode,
                "entropy_coeff": algo.entropy_coef,
                "use_kl_loss": kl,
                "kl_loss_coef": algo.kl_coef,
                "kl_loss_type": algo.kl_penalty,
                "ppo_epochs": trainer.ppo_epochs,
                "ppo_mini_batch_size": max(1, trainer.train_batch_size // trainer.mini_batches),
                "ppo_micro_batch_size_per_gpu": trainer.micro_batch_size,
                "grad_clip": trainer.grad_clip,
                "optim": {
                    "lr": trainer.lr,
                    "lr_warmup_steps": trainer.warmup_steps,
                    "weight_decay": trainer.weight_decay,
                },
            },
            "rollout": {
                "name": cluster.rollout_engine,
                "n": rollout.n,
                "temperature": rollout.temperature,
                "top_p": rollout.top_p,
                "skip_tokenizer_init": False,  # the agent loop stops on the protocol's stop strings
                "log_prob_micro_batch_size_per_gpu": trainer.micro_batch_size,
                "multi_turn": {
                    "enable": True,
                    "max_assistant_turns": rollout.max_turns,
                    "tool_config_path": str(out / "tool_config.yaml"),
                },
                "agent": {
                    "default_agent_loop": AGENT_LOOP_NAME,
                    "agent_loop_config_path": str(out / "agent_loop.yaml"),
                },
            },
            "ref": {"log_prob_micro_batch_size_per_gpu": trainer.micro_batch_size},
        },
        "reward": {
            "reward_manager": {"name": "dapo"},
            "custom_reward_function": {
                "path": REWARD_MODULE,
                "name": "compute_score",
                "reward_kwargs": {"reward_config": config.reward.model_dump(mode="json")},
            },
            "reward_kwargs": {
                "overlong_buffer_cfg": {
                    "enable": algo.overlong.enable,
                    "len": algo.overlong.buffer,
                    "penalty_factor": algo.overlong.factor,
                    "log": True,
                },
                "max_resp_len": response_length,
            },
        },
        "trainer": {
            "project_name": trainer.experiment,
            "logger": ["console"],
            "nnodes": cluster.nnodes,
            "n_gpus_per_node": cluster.gpus_per_node,
            "save_freq": trainer.save_every,
            "test_freq": -1,
            "val_before_train": False,
            "resume_mode": "auto",
        },
    }


def stage_config(stage: VerlStage, out: Path) -> dict[str, Any]:
    """A primary config (``--config-name``): hydra reads the search path for verl's configs only here."""
    return {
        "hydra": {"searchpath": ["pkg://verl.trainer.config"]},
        "defaults": [BASE_CONFIG, "_self_"],
        "data": {"train_files": [str(stage.train_file.resolve())]},
        "trainer": {
            "experiment_name": stage.name,
            "total_training_steps": stage.steps,
            "default_local_dir": str(out / "checkpoints" / stage.name),
        },
    }


def launch_script(config: RLConfig, cluster: Cluster, stages: Sequence[VerlStage], out: Path) -> str:
    index = config.retriever.index if config.retriever.kind == "lucene" else ""
    values = {
        "STAGES": "(" + " ".join(s.name for s in stages) + ")",
        "POLICY": shlex.quote(str(Path(config.policy.model).resolve())) if config.policy.model else "",
        "INDEX": shlex.quote(str(Path(index).resolve())) if index else "",
        "PORT": str(cluster.retriever_port),
    }
    return LAUNCH_TEMPLATE.format(**values)


LAUNCH_TEMPLATE = """#!/usr/bin/env bash
# Written by `ramp rl export-verl`: RAMP's DAPO with the mask-count curriculum on verl, stage by stage.
# Run it on EVERY node: NODE_RANK=0 on the head, NNODES and HEAD_ADDR (the head's address) on all of them.
# Each node serves its own retriever on 127.0.0.1 (verl's agent loops run on every node and call it
# there); the head starts Ray and trains the stages in order, each from the previous stage's merged policy
# (a finished stage, policy/STAGE/config.json, is skipped on a rerun); the other nodes join Ray.
# Arguments are passed to every stage as hydra overrides (e.g. trainer.n_gpus_per_node=4).
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
NODE_RANK=${{NODE_RANK:-0}}
NNODES=${{NNODES:-1}}
HEAD_ADDR=${{HEAD_ADDR:-127.0.0.1}}
RAY_PORT=${{RAY_PORT:-6379}}
RAMP=${{RAMP:-ramp}}          # serves the index (pyserini and its Java runtime)
PYTHON=${{PYTHON:-python}}    # a Python with verl and ramp installed
INDEX=${{RAMP_INDEX:-{INDEX}}}
MODEL=${{RAMP_POLICY:-{POLICY}}}
PORT={PORT}
STAGES={STAGES}

mkdir -p "$HERE/logs"
"$RAMP" serve-retriever --index "$INDEX" --host 127.0.0.1 --port "$PORT" \\
    > "$HERE/logs/retriever-node$NODE_RANK.log" 2>&1 &
RETRIEVER=$!
trap 'kill "$RETRIEVER" 2>/dev/null || true' EXIT
for second in $(seq 600); do
    if "$PYTHON" -c "import httpx; httpx.get('http://127.0.0.1:$PORT/health').raise_for_status()" 2>/dev/null
    then
        break
    fi
    if ! kill -0 "$RETRIEVER" 2>/dev/null || [ "$second" = 600 ]; then
        echo "the retriever is not serving: $HERE/logs/retriever-node$NODE_RANK.log" >&2
        exit 1
    fi
    sleep 1
done

if [ "$NODE_RANK" != 0 ]; then
    ray start --address "$HEAD_ADDR:$RAY_PORT" --block
    exit 0
fi
if [ "$NNODES" -gt 1 ]; then
    ray start --head --port "$RAY_PORT"
    export RAY_ADDRESS="$HEAD_ADDR:$RAY_PORT"
    ALIVE="import ray; ray.init(logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    until [ "$("$PYTHON" -c "$ALIVE")" = "$NNODES" ]; do
        sleep 5  # every node joins Ray (after starting its retriever)
    done
fi
for STAGE in "${{STAGES[@]}}"; do
    POLICY="$HERE/policy/$STAGE"
    if [ ! -f "$POLICY/config.json" ]; then
        "$PYTHON" -m verl.trainer.main_ppo --config-path "$HERE" --config-name "$STAGE" \\
            actor_rollout_ref.model.path="$MODEL" trainer.nnodes="$NNODES" "$@"
        STEP=$(cat "$HERE/checkpoints/$STAGE/latest_checkpointed_iteration.txt")
        "$PYTHON" -m verl.model_merger merge --backend fsdp \\
            --local_dir "$HERE/checkpoints/$STAGE/global_step_$STEP/actor" --target_dir "$POLICY"
    fi
    MODEL="$POLICY"
done
echo "final policy: $MODEL"
"""


def write_run(
    config: RLConfig, files: dict[str, Path], out: Path, cluster: Cluster, val_files: Sequence[Path] = ()
) -> list[Path]:
    """The run's configs and launch script under ``out`` (beside the exported parquet ``files``)."""
    out = out.resolve()
    stages = curriculum_stages(config, files)
    validation = list(val_files) or [stages[0].train_file]
    written = {
        "tool_config.yaml": _yaml(tool_config(config, cluster)),
        "agent_loop.yaml": _yaml([{"name": AGENT_LOOP_NAME, "_target_": AGENT_LOOP_TARGET}]),
        f"{BASE_CONFIG}.yaml": _yaml(dapo_config(config, cluster, out, [p.resolve() for p in validation])),
        **{f"{s.name}.yaml": _yaml(stage_config(s, out)) for s in stages},
        "launch.sh": launch_script(config, cluster, stages, out),
    }
    paths = []
    for name, text in written.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    (out / "launch.sh").chmod(0o755)
    return paths


def _yaml(data: Any) -> str:
    return "# Written by `ramp rl export-verl`.\n" + yaml.safe_dump(data, sort_keys=False)
