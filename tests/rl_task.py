"""A small RL task a tiny policy learns on CPU in a minute (shared by the RL tests and bench/bench_rl.py).

Each sample masks the birthplace of a made-up person (``"Orla Vance was born in [mask]."``); the corpus
holds that sentence (the sample's own passage, excluded from its searches) and a second passage that
states it differently, so one correct search (the name) finds the fill. The policy is the tiny random
Qwen2 of :mod:`tiny_model`, warm-started by supervised steps on two behaviours per sample: search the
name, read the result and copy the fill (reward 1.2), or guess at once with another sample's fill
(well-formed: reward 0.2). It starts out doing each about half the time; RL must learn to search.
Prompts are short (``PROMPTS``) to keep the episodes cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tiny_model import tiny_model, tiny_tokenizer

from ramp.agent.protocol import format_result_block, render_trajectory
from ramp.agent.task import task_from_sample
from ramp.data.samples import SAMPLE_SCHEMA, Mask, Sample
from ramp.prompts import PromptTemplates
from ramp.retrieval.env import SearchConfig, SearchEnv

PEOPLE = [
    ("Orla Vance", "Paris"),
    ("Tobin Marsh", "London"),
    ("Ilse Navarro", "Berlin"),
    ("Cyrus Whitlock", "Madrid"),
    ("Maren Oakes", "Vienna"),
    ("Dario Fenn", "Dublin"),
    ("Hilde Crane", "Boston"),
    ("Quentin Rusk", "Chicago"),
]
TWO_MASKS = [("Perrin Vale", "Oslo", "1901"), ("Tamsin Roe", "Lisbon", "1887")]

PROMPTS = {
    "system": "Search, then answer.",
    "ramp_user": "{masked_passage}",
    "ramp_answer_format": "",
    "qa_user": "{question}",
    "judge": "{context} {golds} {prediction}",
}
SEARCH = SearchConfig(top_k=1, max_chars_per_doc=80)


def _sample(i: int, name: str, fills: list[str], masked: str) -> Sample:
    passage = masked
    masks, cursor = [], 0
    for fill in fills:
        at = passage.index("[mask]", cursor)
        passage = passage[:at] + fill + passage[at + len("[mask]") :]
        masks.append(Mask(fill, "entity", "GPE", at, at + len(fill)))
        cursor = at + len(fill)
    return Sample(
        sample_id=f"person-{i}",
        passage_id=f"p{i}",
        article_id=f"a{i}",
        title=name,
        passage=passage,
        masked_passage=masked,
        masks=tuple(masks),
        exclude_doc_ids=(f"p{i}",),
        prompt="",
        answers=tuple(fills),
    )


def build_corpus(root: Path) -> tuple[Path, Path]:
    """The corpus JSONL and samples directory (k=1 for every person, k=2 for ``TWO_MASKS``)."""
    root.mkdir(parents=True, exist_ok=True)
    docs, samples = [], []
    for i, (name, city) in enumerate(PEOPLE):
        docs.append({"id": f"p{i}", "contents": f'"{name}"\n{name} was born in {city}.'})
        docs.append({"id": f"d{i}", "contents": f'"{name}"\n{name} is from {city}.'})
        samples.append(_sample(i, name, [city], f"{name} was born in [mask]."))
    for j, (name, city, year) in enumerate(TWO_MASKS, start=len(PEOPLE)):
        docs.append({"id": f"p{j}", "contents": f'"{name}"\n{name} was born in {city} in {year}.'})
        docs.append({"id": f"d{j}", "contents": f'"{name}"\n{name}, from {city}, was born in {year}.'})
        samples.append(_sample(j, name, [city, year], f"{name} was born in [mask] in [mask]."))
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    samples_dir = root / "samples"
    samples_dir.mkdir(exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist([s.to_row() for s in samples], schema=SAMPLE_SCHEMA),
        samples_dir / "samples-00000-of-00001.parquet",
    )
    prompts = root / "prompts.yaml"
    prompts.write_text(json.dumps(PROMPTS), encoding="utf-8")  # JSON is YAML
    return corpus, samples_dir


def trajectory_messages(
    sample: Sample, env: SearchEnv, templates: PromptTemplates, fills: tuple[str, ...] | None = None
) -> list[dict[str, str]]:
    """Search the name, read the result, answer ``fills`` (default: the sample's own answers)."""
    task = task_from_sample(sample, templates)
    query = f" {sample.title}"
    outcome = env.search([(env.episode(task.exclude_doc_ids), query)])[0]
    answer = "".join(f"\n[{i}] {fill}" for i, fill in enumerate(fills or sample.answers, start=1))
    return [
        *(dict(m) for m in task.messages),
        {"role": "assistant", "content": f"<search>{query}</search>"},
        {"role": "tool", "content": format_result_block(outcome.hits, status=outcome.status)},
        {"role": "assistant", "content": f"<answer>{answer}\n</answer>"},
    ]


def warm_start_policy(
    out: Path, samples: list[Sample], env: SearchEnv, steps: int, lr: float = 3e-3, seed: int = 0
) -> Path:
    """Save the tiny Qwen2 after ``steps`` full-batch supervised steps (loss on model tokens only) on two
    trajectories per sample: the correct one (search, read, answer) and a guess that answers at once with
    another sample's fill. The policy learns both and picks either about half the time; only the search
    earns the answer reward, which is what RL has to discover."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=seed).train()
    templates = PromptTemplates(**PROMPTS)
    conversations = [trajectory_messages(s, env, templates) for s in samples]
    for i, sample in enumerate(samples):
        wrong = samples[(i + 1) % len(samples)].answers
        guess = "".join(f"\n[{j}] {fill}" for j, fill in enumerate(wrong, start=1))
        task = task_from_sample(sample, templates)
        conversations.append(
            [
                *(dict(m) for m in task.messages),
                {"role": "assistant", "content": f"<answer>{guess}\n</answer>"},
            ]
        )
    rendered = [render_trajectory(messages, tokenizer) for messages in conversations]
    width = max(len(r.input_ids) for r in rendered)
    ids = torch.full((len(rendered), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rendered), width), -100, dtype=torch.long)
    attention = torch.zeros((len(rendered), width), dtype=torch.long)
    for row, r in enumerate(rendered):
        ids[row, : len(r.input_ids)] = torch.tensor(r.input_ids)
        attention[row, : len(r.input_ids)] = 1
        target = [t if m else -100 for t, m in zip(r.input_ids, r.is_model_token, strict=True)]
        labels[row, : len(target)] = torch.tensor(target)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
