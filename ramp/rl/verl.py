"""Scale-out with verl: RAMP samples and QA sets in verl's RL parquet layout, and its reward function.

Rows: ``data_source`` (``ramp`` or the QA set's name), ``prompt`` (system + user chat messages, the same
prompts as ``ramp rl train``), ``ability``, ``reward_model`` ``{"style": "rule", "ground_truth":
{"target", "num_masks"}}`` (``target``: per mask its accepted fills; QA: one entry, the accepted answers;
``num_masks`` 0 for QA), ``extra_info`` (``index``: a unique id, ``split``, ``num_masks``,
``exclude_doc_ids``, and ``tools_kwargs``: the same exclusions as the search tool's ``create_kwargs``) and
``agent_name`` (``ramp_search``: RAMP's agent loop, :mod:`ramp.finetune.verl_agent`). verl calls
:func:`compute_score` with ``custom_reward_function.path=pkg://ramp.rl.verl``
``custom_reward_function.name=compute_score``. The configs and launch script of a run:
:mod:`ramp.rl.verl_launch`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ramp.agent.task import Task, task_from_qa, task_from_sample
from ramp.prompts import load_templates
from ramp.rewards import RewardConfig, combined_reward

RAMP_SOURCE = "ramp"
AGENT_NAME = "ramp_search"  # ramp.finetune.verl_agent.RampAgentLoop

MESSAGE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])
VERL_SCHEMA = pa.schema(
    [
        pa.field("data_source", pa.string(), nullable=False),
        pa.field("prompt", pa.list_(MESSAGE), nullable=False),
        pa.field("ability", pa.string(), nullable=False),
        pa.field(
            "reward_model",
            pa.struct(
                [
                    pa.field("style", pa.string()),
                    pa.field(
                        "ground_truth",
                        pa.struct(
                            [
                                pa.field("target", pa.list_(pa.list_(pa.string()))),
                                pa.field("num_masks", pa.int32()),
                            ]
                        ),
                    ),
                ]
            ),
            nullable=False,
        ),
        pa.field(
            "extra_info",
            pa.struct(
                [
                    pa.field("index", pa.string()),
                    pa.field("split", pa.string()),
                    pa.field("num_masks", pa.int32()),
                    pa.field("exclude_doc_ids", pa.list_(pa.string())),
                    pa.field(
                        "tools_kwargs",
                        pa.struct(
                            [
                                pa.field(
                                    "search",
                                    pa.struct(
                                        [
                                            pa.field(
                                                "create_kwargs",
                                                pa.struct(
                                                    [pa.field("exclude_doc_ids", pa.list_(pa.string()))]
                                                ),
                                            )
                                        ]
                                    ),
                                )
                            ]
                        ),
                    ),
                ]
            ),
            nullable=False,
        ),
        pa.field("agent_name", pa.string(), nullable=False),
    ]
)


def verl_row(task: Task, data_source: str, split: str = "train") -> dict[str, Any]:
    """One task as a verl RL row."""
    if task.kind == "ramp":
        target, num_masks = [[g] for g in task.golds], task.num_masks
    else:
        target, num_masks = [list(task.golds)], 0
    return {
        "data_source": data_source,
        "prompt": [{"role": m["role"], "content": m["content"]} for m in task.messages],
        "ability": "search-mask-filling" if task.kind == "ramp" else "search-qa",
        "reward_model": {"style": "rule", "ground_truth": {"target": target, "num_masks": num_masks}},
        "extra_info": {
            "index": f"{data_source}:{task.task_id}",
            "split": split,
            "num_masks": num_masks,
            "exclude_doc_ids": list(task.exclude_doc_ids),
            "tools_kwargs": {"search": {"create_kwargs": {"exclude_doc_ids": list(task.exclude_doc_ids)}}},
        },
        "agent_name": AGENT_NAME,
    }


def write_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> tuple[Path, int]:
    import pyarrow.parquet as pq

    ids = [r["extra_info"]["index"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate extra_info.index values (ids must be unique per row)")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows), schema=VERL_SCHEMA), path)
    return path, len(rows)


def export_samples(
    samples_dir: str | Path, output: Path, by_k: bool = True, prompts: str = "prompts"
) -> list[tuple[Path, int]]:
    """RAMP samples -> ``ramp-k{k}.parquet`` per mask count (``by_k``) or one ``ramp.parquet``."""
    import pyarrow.parquet as pq

    from ramp.data.samples import Sample

    root = Path(samples_dir)
    files = [root] if root.is_file() else sorted(root.glob("samples-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no samples-*.parquet under {root}")
    templates = load_templates(prompts)
    tasks = sorted(
        (
            task_from_sample(Sample.from_row(row), templates)
            for f in files
            for row in pq.read_table(f).to_pylist()
        ),
        key=lambda t: t.task_id,
    )
    if not by_k:
        return [write_rows([verl_row(t, RAMP_SOURCE) for t in tasks], output / "ramp.parquet")]
    by_count: dict[int, list[Task]] = {}
    for task in tasks:
        by_count.setdefault(task.num_masks or 0, []).append(task)
    return [
        write_rows([verl_row(t, RAMP_SOURCE) for t in group], output / f"ramp-k{k}.parquet")
        for k, group in sorted(by_count.items())
    ]


def export_qa(path: str | Path, output: Path, data_source: str, prompts: str = "prompts") -> tuple[Path, int]:
    """A QA JSONL (``{"id", "question", "golden_answers"}``) -> one verl parquet file."""
    templates = load_templates(prompts)
    with open(path, encoding="utf-8") as f:
        tasks = [task_from_qa(json.loads(line), templates) for line in f if line.strip()]
    return write_rows([verl_row(t, data_source) for t in tasks], output)


def _strings(values: Iterable[Any]) -> list[str]:
    return [str(v) for v in values]


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Mapping[str, Any],
    extra_info: Mapping[str, Any] | None = None,
    reward_config: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """verl's reward hook: ``ramp``'s combined reward of one response (``score``), with its parts.

    ``solution_str`` is the whole response (model text and the inserted result blocks). Values may come
    as numpy arrays (verl reads parquet through pandas); they are read as plain lists. ``reward_config``
    is the recipe's ``reward:`` section (``custom_reward_function.reward_kwargs.reward_config``).
    """
    config = RewardConfig.model_validate(dict(reward_config)) if reward_config is not None else None
    target = [_strings(golds) for golds in ground_truth["target"]]
    num_masks = int(ground_truth.get("num_masks") or 0)
    if num_masks:
        reward = combined_reward(solution_str, target, num_masks=num_masks, config=config)
    else:
        reward = combined_reward(solution_str, target[0] if target else [], config=config)
    return {"score": reward.total, "answer": reward.answer, "format": reward.format}
