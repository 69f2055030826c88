"""DPO (``ramp.rl.dpo_loss``) against hand-computed values, and the pieces of AceSearcher's decomposer-solver
that need no model: parsing sub-questions, filling ``#n`` references, pairing ranked candidates, SFT data
from a QA trajectory, and the recipe-level checks of the new stage kinds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from ramp.agent.decompose import fill_references, format_decomposition, parse_subquestions
from ramp.config import ConfigError
from ramp.cot.decompose_data import decomposition_trajectories
from ramp.cot.trajectories import Trajectory
from ramp.recipes import RECIPES_DIR, load_recipe
from ramp.rl import dpo_loss
from ramp.rl.config import RLConfig
from ramp.rl.dpo import DPOConfig, Pair, preference_pairs


def test_dpo_loss_equals_hand_computed_values() -> None:
    # beta 0.5. Pair 1: (pi_c - ref_c) = 1, (pi_r - ref_r) = -1: margin 0.5 * 2 = 1, loss log(1 + e^-1).
    # Pair 2: 0 and 1: margin -0.5, loss log(1 + e^0.5).
    pc = torch.tensor([-1.0, -2.0], requires_grad=True)
    pr = torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])
    loss, metrics = dpo_loss(pc, pr, rc, rr, beta=0.5)
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert float(loss.detach()) == pytest.approx(expected) == pytest.approx(0.64366934)
    assert metrics == pytest.approx(
        {"rewards_chosen": 0.25, "rewards_rejected": 0.0, "reward_margin": 0.25, "reward_accuracy": 0.5}
    )
    loss.backward()  # d/d pi_c of pair i: -(1/2) * beta * (1 - sigmoid(margin_i))
    sigmoid = [1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(0.5))]
    assert pc.grad is not None
    assert pc.grad.tolist() == pytest.approx([-0.25 * (1 - s) for s in sigmoid])
    same, same_metrics = dpo_loss(rc, rr, rc, rr, beta=0.1)  # the policy is its reference: log 2
    assert float(same) == pytest.approx(math.log(2)) and same_metrics["reward_accuracy"] == 0.0
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, beta=0.0)


def test_subquestions_are_parsed_and_references_filled() -> None:
    text = "1. Who founded Kelvane Mills?\nnoise line\n2) Where was #1 born?\n3. What country is #2 in?"
    subs = parse_subquestions(text, limit=2)  # the budget: two searches
    assert subs == ["Who founded Kelvane Mills?", "Where was #1 born?"]
    assert parse_subquestions("  just one   question ", 3) == ["just one question"]
    assert parse_subquestions("", 3) == []
    assert (
        fill_references("Where was #1 born, near #3?", ["Irsa Doun"]) == "Where was Irsa Doun born, near #3?"
    )
    assert format_decomposition(["a", "b"]) == "1. a\n2. b"


def test_preference_pairs_take_the_best_over_the_worst() -> None:
    pairs = preference_pairs(
        ["q1", "q2", "q3"],
        [["a", "b", "c"], ["x", "y"], ["same", "same"]],
        [[0.5, 1.0, 0.0], [0.3, 0.3], [1.0, 0.0]],
    )
    assert pairs == [Pair("q1", "b", "c")]  # q2: no spread; q3: equal texts
    assert preference_pairs(["q"], [["a", "b", "c"]], [[1.0, 1.0, 0.0]]) == [Pair("q", "a", "c")]


def test_sft_conversations_from_a_qa_trajectory() -> None:
    trajectory = Trajectory(
        sample_id="k",
        kind="qa",
        teacher="t",
        teacher_model="",
        round=0,
        messages=(
            {"role": "user", "content": "PROMPT Who founded Kelvane Mills?"},
            {"role": "assistant", "content": "<search> Kelvane Mills founded by</search>"},
            {"role": "tool", "content": "<result>Kelvane Mills was founded by Irsa Doun</result>"},
            {"role": "assistant", "content": "<answer>Irsa Doun</answer>"},
        ),
        answer="Irsa Doun",
        fills=(),
        golds=("Irsa Doun",),
        score=1.0,
        reward=1.0,
        verified=True,
        num_masks=0,
        queries=(" Kelvane Mills founded by",),
        retrieved_doc_ids=(("kelvane",),),
        exclude_doc_ids=(),
    )
    decomposer, solver = decomposition_trajectories([trajectory], {"k": "Who founded Kelvane Mills?"})
    assert decomposer.messages[1:] == (
        {"role": "user", "content": "Who founded Kelvane Mills?"},
        {"role": "assistant", "content": "1. Kelvane Mills founded by"},
    )
    assert solver.messages[1]["content"] == (
        "Kelvane Mills founded by\n<result>Kelvane Mills was founded by Irsa Doun</result>\n"
        "Question: Who founded Kelvane Mills?"
    )
    assert solver.messages[-1] == {"role": "assistant", "content": "Irsa Doun"}
    with pytest.raises(KeyError, match="not one of the questions"):
        decomposition_trajectories([trajectory], {})


def _edited(tmp_path: Path, name: str, edit) -> Path:
    data = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
    edit(data)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_new_stage_kinds_validate_on_load(tmp_path: Path) -> None:
    zerosearch = load_recipe("zerosearch")
    grpo = zerosearch.stages[1].config()
    assert isinstance(grpo, RLConfig) and grpo.retriever.kind == "simulated"
    noise = grpo.retriever.simulator.noise
    assert (noise.p_start, noise.p_end, noise.base, grpo.reward.metric) == (0.0, 0.5, 4.0, "f1")
    assert zerosearch.stages[0].pairs() is not None and zerosearch.stages[1].pairs() is None
    ace = load_recipe("acesearcher")
    dpo = ace.stages[1].config()
    assert isinstance(dpo, DPOConfig) and dpo.dpo.rounds == 3 and ace.inference == "decompose"
    assert [s.questions for s in load_recipe("webdancer").stages] == ["synthesized", "synthesized"]
    bad = _edited(tmp_path, "acesearcher", lambda d: d["stages"][1]["settings"]["dpo"].update(betta=1))
    with pytest.raises(ConfigError, match=r"stage dpo \(dpo\): .*dpo\.betta"):
        load_recipe(bad)
    bad = _edited(tmp_path, "zerosearch", lambda d: d["stages"].pop(0))
    with pytest.raises(ConfigError, match="a simulator stage must come first"):
        load_recipe(bad)
    bad = _edited(tmp_path, "webdancer", lambda d: d["stages"][0].update(retriever="simulated"))
    with pytest.raises(ConfigError, match="retriever: simulated is for qa_rl"):
        load_recipe(bad)
    bad = _edited(tmp_path, "masksearch", lambda d: d["stages"][0].update(questions="synthesized"))
    with pytest.raises(ConfigError, match="questions: synthesized needs"):
        load_recipe(bad)
    bad = _edited(tmp_path, "masksearch", lambda d: d["stages"][1]["settings"].update(pairs={"docs": 1}))
    with pytest.raises(ConfigError, match=r"settings\.pairs belongs to kind simulator"):
        load_recipe(bad)
