"""Every recipe file loads, and every stage's settings validate against its kind's config (ramp.recipes);
a typo, a wrong kind or a misplaced section fails on load, naming the recipe, the stage and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ramp.config import ConfigError
from ramp.cot.curate import CurateConfig
from ramp.recipes import RECIPES_DIR, load_recipe, recipe_names
from ramp.rl.config import RLConfig
from ramp.train.config import PretrainConfig

EXPECTED = {
    "masksearch": ["ramp_sft", "dapo", "qa_rl"],
    "masksearch-sft": ["ramp_sft", "qa_sft"],
    "search-r1": ["qa_rl"],
    "search-r1-grpo": ["qa_rl"],
    "research": ["qa_rl"],
    "r1-searcher": ["qa_rl", "qa_rl"],
    "r1-searcher-pp": ["qa_sft", "qa_rl"],
    "simpledeepsearcher": ["curated_sft"],
}


def test_every_recipe_loads_and_validates():
    assert recipe_names() == sorted(EXPECTED)
    for name, kinds in EXPECTED.items():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.paper and recipe.description
        assert [s.kind for s in recipe.stages] == kinds
        for stage in recipe.stages:
            config = stage.config()
            assert isinstance(config, RLConfig if stage.kind in ("dapo", "qa_rl") else PretrainConfig)
            assert isinstance(stage.curate(), CurateConfig) == (stage.kind == "curated_sft")
            if isinstance(config, RLConfig):  # RL stages say their task
                assert config.data.task == ("ramp" if stage.kind == "dapo" else "qa")


def test_recipes_select_their_mechanisms():
    ppo = load_recipe("search-r1").stages[0].config()
    assert isinstance(ppo, RLConfig)
    assert (ppo.algorithm.adv_estimator, ppo.critic.enable, ppo.rollout.n) == ("gae", True, 1)
    assert ppo.reward.kind == "exact_match" and ppo.algorithm.kl_in_reward > 0 and ppo.search.top_k == 3
    research = load_recipe("research").stages[0].config()
    assert isinstance(research, RLConfig) and research.reward.kind == "research"
    first, second = (s.config() for s in load_recipe("r1-searcher").stages)
    assert isinstance(first, RLConfig) and isinstance(second, RLConfig)
    assert first.reward.kind == "r1_searcher_stage1" and first.algorithm.filter_metric == "total"
    assert second.reward.kind == "r1_searcher_stage2"
    rl = load_recipe("r1-searcher-pp").stages[1].config()
    assert isinstance(rl, RLConfig) and rl.reward.fewest_searches.enable
    curate = load_recipe("simpledeepsearcher").stages[0].curate()
    assert curate is not None and curate.limit == 871
    dapo = load_recipe("masksearch").stages[1].config()
    assert isinstance(dapo, RLConfig) and dapo.curriculum.mode == "staged"


def test_runner_overrides_apply_after_the_settings():
    stage = load_recipe("search-r1").stages[0]
    config = stage.config(["policy.model=runs/x/policy", "trainer.total_steps=2"])
    assert isinstance(config, RLConfig)
    assert (config.policy.model, config.trainer.total_steps, config.critic.enable) == (
        "runs/x/policy",
        2,
        True,
    )
    curate = load_recipe("simpledeepsearcher").stages[0].curate(["limit=5"])
    assert curate is not None and (curate.limit, curate.easy_drop) == (5, 0.8)


def edited(tmp_path: Path, name: str, edit) -> Path:
    data = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text())
    edit(data)
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_typo_fails_on_load_naming_recipe_stage_and_key(tmp_path):
    path = edited(tmp_path, "search-r1", lambda d: d["stages"][0]["settings"]["trainer"].update(lrr=1.0))
    with pytest.raises(
        ConfigError, match=r"recipe search-r1, stage ppo \(qa_rl\): .*trainer\.lrr.*unknown key"
    ):
        load_recipe(path)
    path = edited(tmp_path, "research", lambda d: d["stages"][0]["settings"]["reward"].update(kind="f1"))
    with pytest.raises(ConfigError, match=r"stage grpo .*reward\.kind"):
        load_recipe(path)
    path = edited(tmp_path, "search-r1", lambda d: d["stages"][0]["settings"]["critic"].update(enable=False))
    with pytest.raises(ConfigError, match=r"set critic\.enable=true"):
        load_recipe(path)
    path = edited(
        tmp_path, "simpledeepsearcher", lambda d: d["stages"][0]["settings"]["curate"].update(limt=3)
    )
    with pytest.raises(ConfigError, match=r"stage curated_sft .*limt"):
        load_recipe(path)


def test_bad_recipe_structure(tmp_path):
    path = edited(tmp_path, "research", lambda d: d["stages"][0].update(kind="ppo"))
    with pytest.raises(ConfigError, match=r"stages\.0\.kind"):
        load_recipe(path)
    path = edited(tmp_path, "masksearch", lambda d: d["stages"][1]["settings"].update(curate={"limit": 3}))
    with pytest.raises(ConfigError, match=r"settings\.curate belongs to kind curated_sft"):
        load_recipe(path)
    path = edited(tmp_path, "masksearch", lambda d: d["stages"][2].update(name="dapo"))
    with pytest.raises(ConfigError, match="stage names must be unique"):
        load_recipe(path)
    renamed = tmp_path / "other.yaml"
    renamed.write_text((RECIPES_DIR / "research.yaml").read_text(), encoding="utf-8")
    with pytest.raises(ConfigError, match="is not the file's name 'other'"):
        load_recipe(renamed)
    with pytest.raises(ConfigError, match=r"recipe not found: nope .*masksearch"):
        load_recipe("nope")
