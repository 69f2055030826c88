"""The mask-count curriculum: staged serving, advance by steps and by reward, mixed mode, state."""

from __future__ import annotations

import pytest

from ramp.agent.task import Task
from ramp.rl.curriculum import CurriculumConfig, MaskCurriculum


def _tasks(per_k: int = 5, ks=(1, 2, 3, 4)) -> list[Task]:
    return [
        Task(task_id=f"k{k}-{i}", kind="ramp", messages=(), golds=("x",) * k, num_masks=k)
        for k in ks
        for i in range(per_k)
    ]


def test_staged_serving_advances_by_steps():
    cur = MaskCurriculum(_tasks(), CurriculumConfig(steps_per_stage=2, reward_threshold=None))
    seen = []
    for _ in range(9):
        batch = cur.sample(3)
        seen.append({t.num_masks for t in batch})
        cur.record(0.0)
    assert seen == [{1}, {1}, {2}, {2}, {3}, {3}, {4}, {4}, {4}]
    assert [(s, i, r) for s, i, r in cur.advances] == [
        (2, 1, "steps"),
        (4, 2, "steps"),
        (6, 3, "steps"),
        (8, 4, "steps"),
    ]
    assert cur.finished and cur.stage == 4  # training goes on in the last stage


def test_advance_by_reward_over_the_window():
    cur = MaskCurriculum(_tasks(), CurriculumConfig(steps_per_stage=None, reward_threshold=0.6, window=3))
    for reward in (0.9, 0.9):  # a full window is needed
        assert not cur.record(reward)
    assert cur.record(0.0)  # mean 0.6 over 3 steps: passes
    assert cur.stage == 2 and cur.advances == [(3, 1, "reward")]
    for reward in (0.5, 0.6, 0.65, 0.6):  # window means 0.583, 0.617 -> advances at the 4th
        advanced = cur.record(reward)
    assert advanced and cur.stage == 3 and cur.advances[-1] == (7, 2, "reward")
    assert cur.stage_rewards == []  # a new stage starts its own window


def test_each_epoch_serves_every_task_once_in_a_seeded_order():
    tasks = _tasks(per_k=4, ks=(1,))
    a = MaskCurriculum(tasks, CurriculumConfig(stages=[1], seed=3))
    b = MaskCurriculum(list(reversed(tasks)), CurriculumConfig(stages=[1], seed=3))
    first = [t.task_id for t in a.sample(4)]
    assert sorted(first) == sorted(t.task_id for t in tasks)
    assert first == [t.task_id for t in b.sample(4)]  # input order does not matter
    second = [t.task_id for t in a.sample(4)]
    assert sorted(second) == sorted(first) and second != first  # a new permutation per epoch
    other = MaskCurriculum(tasks, CurriculumConfig(stages=[1], seed=4))
    assert [t.task_id for t in other.sample(8)] != first + second


def test_mixed_mode_serves_all_stages_together():
    cur = MaskCurriculum(_tasks(per_k=3), CurriculumConfig(mode="mixed", steps_per_stage=1))
    drawn = cur.sample(12)
    assert {t.num_masks for t in drawn} == {1, 2, 3, 4} and len({t.task_id for t in drawn}) == 12
    assert not cur.record(1.0) and cur.stage == 0 and cur.advances == []


def test_state_round_trip_continues_the_same_draws():
    config = CurriculumConfig(steps_per_stage=3, reward_threshold=0.8, window=2)
    straight = MaskCurriculum(_tasks(), config)
    resumed = MaskCurriculum(_tasks(), config)
    rewards = [0.1, 0.9, 0.9, 0.2, 0.3, 0.4, 0.5, 1.0]
    for r in rewards[:4]:
        resumed.sample(4)
        resumed.record(r)
    state = resumed.state_dict()
    resumed = MaskCurriculum(_tasks(), config)
    resumed.load_state_dict(state)
    draws = []
    for i, r in enumerate(rewards):
        batch = [t.task_id for t in straight.sample(4)]
        straight.record(r)
        if i >= 4:
            draws.append((batch, [t.task_id for t in resumed.sample(4)]))
            resumed.record(r)
    assert all(x == y for x, y in draws)
    assert straight.state_dict() == resumed.state_dict()
    with pytest.raises(ValueError, match="pools"):
        MaskCurriculum(_tasks(), CurriculumConfig(mode="mixed")).load_state_dict(state)


def test_missing_stage_and_qa_tasks_are_clear_errors():
    with pytest.raises(ValueError, match=r"no tasks with \[4\] masks"):
        MaskCurriculum(_tasks(ks=(1, 2, 3)), CurriculumConfig())
    qa = [Task(task_id="q1", kind="qa", messages=(), golds=("a",))]
    with pytest.raises(ValueError, match="no mask count"):
        MaskCurriculum(qa, CurriculumConfig())
    single = MaskCurriculum(qa, CurriculumConfig(stages=[1]), key=lambda _: 1)
    assert [t.task_id for t in single.sample(2)] == ["q1", "q1"]
