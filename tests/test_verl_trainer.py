"""An exported RAMP run as verl's trainer reads it (run in ``.venv-verl``; ``make test`` runs it there):
every curriculum stage loaded by ``verl.trainer.main_ppo``'s own config loader and validated, the launch
script's stages, verl's DAPO reward manager scoring exported rows with ``compute_score``, and verl's own
policy-loss function equal to ``ramp.rl.policy_loss`` on the same tensors."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("verl", reason="verl runs in its own environment: make verl-env (make test runs it)")

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf
from tiny_model import tiny_tokenizer
from verl import DataProto
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.trainer.ppo.reward import load_reward_manager
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import omega_conf_to_dataclass, validate_config
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl_run import STAGES, compose_stage, export_run

from ramp.rewards import combined_reward
from ramp.rl.core_algos import AGG_MODES, overlong_penalty, policy_loss
from ramp.rl.verl import compute_score

GOOD = (
    "<search> Orla Vance</search>\n<result>\n[1] Orla Vance\nOrla Vance is from Paris.\n</result>\n"
    "<answer>\n[1] Paris\n</answer>"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return export_run(tmp_path_factory.mktemp("verl-trainer"), 8123)


def _model(run) -> list[str]:
    return [f"actor_rollout_ref.model.path={run['policy']}"]


def test_every_stage_loads_with_verls_config_loader(run):
    out = run["out"]
    launch = (out / "launch.sh").read_text()
    subprocess.run(["bash", "-n", str(out / "launch.sh")], check=True)  # the script parses
    stages = re.search(r"^STAGES=\((.*)\)$", launch, re.M).group(1).split()
    assert stages == [f"ramp-k{k}" for k in STAGES]  # the curriculum, in order
    assert '-m verl.trainer.main_ppo --config-path "$HERE" --config-name "$STAGE"' in launch
    assert "serve-retriever" in launch and "ray start --address" in launch  # a retriever on every node
    # the launch script's own command with hydra's --cfg job (compose and print the config, do not train)
    command = [sys.executable, "-m", "verl.trainer.main_ppo", "--config-path", str(out)]
    printed = subprocess.run(
        [*command, "--config-name", stages[0], *_model(run), "trainer.nnodes=1", "--cfg", "job"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    composed = compose_stage(out, stages[0], [*_model(run), "trainer.nnodes=1"])
    assert yaml.safe_load(printed) == OmegaConf.to_container(composed)
    for stage in stages:
        config = compose_stage(out, stage, [*_model(run), "trainer.nnodes=1"])
        validate_config(
            config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
        )
        assert list(config.data.train_files) == [str(out / f"{stage}.parquet")]
        assert list(config.data.val_files) == [str(out / "hotpotqa.parquet")]
        assert config.trainer.total_training_steps == 100  # curriculum.steps_per_stage
        assert config.trainer.default_local_dir == str(out / "checkpoints" / stage)
        # the typed configs verl's workers build from it
        actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
        assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c) == (0.2, 0.28, 3.0)
        assert actor.loss_agg_mode == "token-mean" and actor.policy_loss.loss_mode == "vanilla"
        rollout = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
        assert rollout.multi_turn.enable and rollout.multi_turn.max_assistant_turns == 8
        assert rollout.multi_turn.tool_config_path == str(out / "tool_config.yaml")
        assert rollout.agent.default_agent_loop == "ramp_search" and not rollout.skip_tokenizer_init
        filter_groups = omega_conf_to_dataclass(config.algorithm).filter_groups
        assert (filter_groups.enable, filter_groups.metric, filter_groups.max_num_gen_batches) == (
            True,
            "answer",
            10,
        )
        assert omega_conf_to_dataclass(config.actor_rollout_ref.model).path == str(run["policy"])
        assert config.reward.reward_manager.name == "dapo"
        assert config.reward.reward_kwargs.overlong_buffer_cfg.len == 512
        (entry,) = OmegaConf.load(rollout.agent.agent_loop_config_path)
        assert entry._target_ == "ramp.finetune.verl_agent.RampAgentLoop"


def _batch(tokenizer, prompt_ids: list[int], response: str, row: dict[str, Any]) -> DataProto:
    response_ids = tokenizer.encode(response, add_special_tokens=False)
    ids = torch.tensor(prompt_ids + response_ids)
    return DataProto.from_dict(
        tensors={"responses": torch.tensor(response_ids)[None], "attention_mask": torch.ones_like(ids)[None]},
        non_tensors={
            k: np.array([row[k]], dtype=object) for k in ("data_source", "reward_model", "extra_info")
        },
    )


def test_verl_reward_manager_scores_exported_rows_with_compute_score(run):
    tokenizer = tiny_tokenizer()
    overlong = ["reward.reward_kwargs.max_resp_len=60", "reward.reward_kwargs.overlong_buffer_cfg.len=20"]
    config = compose_stage(run["out"], "ramp-k1", [*_model(run), *overlong])
    manager = load_reward_manager(config, tokenizer)  # the dapo manager with pkg://ramp.rl.verl:compute_score
    rows = []
    for name in ("ramp-k1", "ramp-k2", "hotpotqa"):
        dataset = RLHFDataset([str(run["out"] / f"{name}.parquet")], tokenizer, config.data)
        rows.append(dataset[0])
    responses = [
        GOOD,
        GOOD.replace("Paris", "Oslo").replace("[1] Oslo\n</answer>", "[1] Oslo\n[2] 1901\n</answer>"),
    ]
    responses += ["<answer>Paris</answer>", "no answer at all"]
    checked = 0
    for row in rows:
        for response in responses:
            result = manager.loop.run_until_complete(
                manager.run_single(_batch(tokenizer, [1, 2, 3], response, row))
            )
            truth = row["reward_model"]["ground_truth"]
            expected = compute_score(row["data_source"], response, truth)  # numpy arrays, as verl reads them
            golds = [list(g) for g in truth["target"]]
            num_masks = int(truth["num_masks"])
            direct = combined_reward(response, golds if num_masks else golds[0], num_masks=num_masks or None)
            assert expected["score"] == pytest.approx(direct.total)
            length = len(tokenizer.encode(response, add_special_tokens=False))
            shaped = expected["score"] + overlong_penalty(length, 60, 20)
            assert result["reward_score"] == pytest.approx(shaped)
            info = result["reward_extra_info"]
            assert info["answer"] == expected["answer"] and info["format"] == expected["format"]
            checked += overlong_penalty(length, 60, 20) < 0
    assert checked  # the long responses were shaped
    k2 = manager.loop.run_until_complete(manager.run_single(_batch(tokenizer, [1], responses[1], rows[1])))
    assert k2["reward_extra_info"]["answer"] == 1.0  # Perrin Vale's Oslo, 1901 (2 masks)


def test_verl_policy_loss_equals_ramp_policy_loss(run):
    generator = torch.Generator().manual_seed(0)
    old = torch.randn(6, 9, generator=generator) * 0.5
    new = old + torch.randn(6, 9, generator=generator) * 0.4
    advantages = torch.randn(6, generator=generator) * 2.0
    mask = (torch.rand(6, 9, generator=generator) > 0.3).float()
    mask[5] = 0.0  # a row with no sampled token
    for mode in AGG_MODES:
        config = compose_stage(
            run["out"], "ramp-k1", [*_model(run), f"actor_rollout_ref.actor.loss_agg_mode={mode}"]
        )
        actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)  # the exported clip values
        verl_loss = get_policy_loss_fn(actor.policy_loss.loss_mode)
        ours, metrics = policy_loss(
            new, old, advantages, mask, actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_c, mode
        )
        theirs, their_metrics = verl_loss(old, new, advantages[:, None].expand_as(new), mask, mode, actor)
        assert theirs.item() == pytest.approx(ours.item(), abs=1e-6), mode
        assert their_metrics["actor/pg_clipfrac"] == pytest.approx(metrics["clipfrac"], abs=1e-6)
        assert their_metrics["actor/ppo_kl"] == pytest.approx(metrics["approx_kl"], abs=1e-6)
        assert their_metrics["actor/pg_clipfrac_lower"] == pytest.approx(metrics["clipfrac_dual"], abs=1e-6)
        # split into micro-batches with the global counts: the parts sum to the whole batch's loss
        tokens, seqs = float(mask.sum()), float((mask.sum(-1) > 0).sum())
        actor.global_batch_info.update(dp_size=1, batch_num_tokens=tokens, global_batch_size=seqs)
        parts = []
        for rows in (slice(0, 2), slice(2, 6)):
            part, _ = verl_loss(
                old[rows], new[rows], advantages[rows, None].expand_as(new[rows]), mask[rows], mode, actor
            )
            ramp_part, _ = policy_loss(
                new[rows], old[rows], advantages[rows], mask[rows], actor.clip_ratio_low,
                actor.clip_ratio_high, actor.clip_ratio_c, mode, global_tokens=tokens, global_seqs=seqs,
            )  # fmt: skip
            assert part.item() == pytest.approx(ramp_part.item(), abs=1e-6), mode
            parts.append(part.item())
        assert sum(parts) == pytest.approx(ours.item(), abs=1e-6), mode
