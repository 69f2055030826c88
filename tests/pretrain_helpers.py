"""Shared by the pretraining tests and benchmarks: a Qwen2-style tokenizer *without* the protocol tags as
added tokens (the tiny policy's, :mod:`tiny_model`), trajectories in the real format built from the
bundled wiki-18 passages, and tiny HF Qwen2 checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tiny_model import corpus_lines, tiny_model, tiny_tokenizer
from transformers import PreTrainedTokenizerFast

from ramp.agent.protocol import format_result_block
from ramp.cot.trajectories import TRAJECTORY_SCHEMA, Trajectory
from ramp.prompts import chat, ramp_user_prompt
from ramp.retrieval.base import Hit

_CAPS = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)+\b")
# Trained on often enough that BPE merges across the tags' seams (`</search>\n`), as Qwen2's vocabulary does.
PROTOCOL_TEXT = "<think></think>\n<search></search>\n<result>\n</result>\n<answer>\n[1] </answer>"


def qwen_style_tokenizer(vocab_size: int = 1500) -> PreTrainedTokenizerFast:
    return tiny_tokenizer(vocab_size, protocol_tokens=False, passages=400, extra=(PROTOCOL_TEXT,) * 50)


def make_trajectories(
    count: int,
    offset: int = 0,
    passage_chars: int = 400,
    result_chars: int = 300,
    short_prompts: bool = False,
) -> list[Trajectory]:
    """One-search RAMP trajectories: mask a capitalised name, search, read a result, answer.

    ``short_prompts``: one-line system and user prompts instead of the configured ones (fast training tests).
    """
    lines = corpus_lines(1000)
    out: list[Trajectory] = []
    for n, contents in enumerate(lines[offset:]):
        title, _, text = contents.partition("\n")
        found = _CAPS.search(text)
        if not found:
            continue
        answer = found.group(0)
        masked = (text[: found.start()] + "[mask]" + text[found.end() :])[:passage_chars]
        query = " ".join(masked.split()[:8])
        hit = Hit(doc_id=str(n), title=title.strip('"'), text=text[:result_chars], score=1.0)
        prompt = chat(ramp_user_prompt(masked, 1))
        if short_prompts:
            prompt = [
                {"role": "system", "content": "Search, then fill."},
                {"role": "user", "content": masked},
            ]
        messages = (
            *prompt,
            {
                "role": "assistant",
                "content": f"<think>One name is missing.</think>\n<search>{query}</search>",
            },
            {"role": "tool", "content": format_result_block([hit])},
            {
                "role": "assistant",
                "content": f"<think>The result names it.</think>\n<answer>\n[1] {answer}\n</answer>",
            },
        )
        out.append(
            Trajectory(
                sample_id=f"wiki18-{offset + n}",
                kind="ramp",
                teacher="builtin",
                teacher_model="",
                round=0,
                messages=messages,
                answer=f"[1] {answer}",
                fills=(answer,),
                golds=(answer,),
                score=1.0,
                reward=1.0,
                verified=True,
                num_masks=1,
                queries=(query,),
                retrieved_doc_ids=((str(n),),),
                exclude_doc_ids=(str(offset + n),),
            )
        )
        if len(out) == count:
            break
    return out


def write_trajectories(trajectories: list[Trajectory], directory: Path, files: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        rows = [t.to_row() for t in trajectories[f::files]]
        pq.write_table(
            pa.Table.from_pylist(rows, schema=TRAJECTORY_SCHEMA),
            directory / f"trajectories-{f:05d}-of-{files:05d}.parquet",
        )
    return directory


def save_tiny_hf(directory: Path, tie: bool = False, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny HF Qwen2 checkpoint with the Qwen-style tokenizer, saved to ``directory`` (GQA 4 heads / 2
    groups, rope_theta 50,000, QKV biases made non-zero so that the conversion must carry them)."""
    tokenizer = qwen_style_tokenizer()
    sizes = {"intermediate_size": hidden * 3 // 2, "max_position_embeddings": 4096, "rope_theta": 50_000.0}
    model = tiny_model(tokenizer, hidden, layers, tie_word_embeddings=tie, **sizes)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
