"""The trajectory record: schema, row round trip, validation, readers (pyarrow and datasets)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from ramp.cot.trajectories import TRAJECTORY_SCHEMA, Trajectory, read_trajectories


def make_trajectory(sample_id: str = "s1", **changes: object) -> Trajectory:
    fields: dict[str, object] = dict(
        sample_id=sample_id,
        kind="ramp",
        teacher="builtin",
        teacher_model="",
        round=0,
        messages=(
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "Passage: [mask] wrote it."},
            {"role": "assistant", "content": "<think>plan</think>\n<search>who wrote it</search>"},
            {"role": "tool", "content": "\n<result>\n[1] T\nAda wrote it.\n</result>\n"},
            {"role": "assistant", "content": "<think>found</think>\n<answer>\n[1] Ada\n</answer>"},
        ),
        answer="[1] Ada",
        fills=("Ada",),
        golds=("Ada",),
        score=1.0,
        reward=1.2,
        verified=True,
        num_masks=1,
        queries=("who wrote it",),
        retrieved_doc_ids=(("7",),),
        exclude_doc_ids=("3",),
    )
    fields.update(changes)
    return Trajectory(**fields)  # type: ignore[arg-type]


def test_row_round_trip_through_parquet(tmp_path):
    trajectories = [make_trajectory("s1"), make_trajectory("s2", judge_verdict=True, round=2)]
    table = pa.Table.from_pylist([t.to_row() for t in trajectories], schema=TRAJECTORY_SCHEMA)
    pq.write_table(table, tmp_path / "trajectories-00000-of-00001.parquet", compression="zstd")
    back = read_trajectories(tmp_path)
    assert back == trajectories
    assert back[0].num_searches == 1 and back[1].judge_verdict is True and back[0].judge_verdict is None
    assert read_trajectories(tmp_path / "trajectories-00000-of-00001.parquet") == trajectories


def test_invalid_records_are_refused():
    with pytest.raises(ValueError, match="bad trajectory message"):
        make_trajectory(messages=({"role": "observer", "content": "x"},))
    with pytest.raises(ValueError, match="one entry per query"):
        make_trajectory(retrieved_doc_ids=())


def test_readable_by_datasets(tmp_path):
    rows = [make_trajectory(f"s{i}").to_row() for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA), tmp_path / "trajectories-0.parquet")
    dataset = load_dataset("parquet", data_files=str(tmp_path / "trajectories-*.parquet"), split="train")
    assert dataset.num_rows == 3
    assert dataset[1]["messages"][2] == {"role": "assistant", "content": rows[1]["messages"][2]["content"]}
    assert dataset[0]["retrieved_doc_ids"] == [["7"]]
