"""Shared by the pretraining tests: a Qwen2-style tokenizer *without* the protocol tags as added tokens,
trajectories in the real format built from the bundled wiki-18 passages, and tiny HF Qwen2 checkpoints."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tiny_model import CHAT_TEMPLATE, SPECIAL_TOKENS, corpus_lines
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from ramp.agent.protocol import format_result_block
from ramp.cot.trajectories import TRAJECTORY_SCHEMA, Trajectory
from ramp.prompts import chat, ramp_user_prompt
from ramp.retrieval.base import Hit

# Qwen2's pre-tokenizer split: punctuation runs absorb following newlines, so BPE merges across `</search>\n`.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CAPS = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)+\b")


@lru_cache(maxsize=1)
def qwen_style_tokenizer(vocab_size: int = 1500) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    protocol_text = "<think></think>\n<search></search>\n<result>\n</result>\n<answer>\n[1] </answer>"
    tok.train_from_iterator([*corpus_lines(400), *[protocol_text] * 50], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )


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


def tiny_qwen2(
    vocab_size: int, hidden: int = 64, layers: int = 2, tie: bool = False, seed: int = 0, biases: float = 0.1
) -> Qwen2ForCausalLM:
    """A random tiny Qwen2 (GQA 4 heads / 2 groups, QKV biases made non-zero, rope_theta 50,000)."""
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 3 // 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=tie,
        rope_theta=50_000.0,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, biases)
    return model


def save_tiny_hf(directory: Path, tie: bool = False, hidden: int = 64, layers: int = 2) -> Path:
    """A tiny HF Qwen2 checkpoint with the Qwen-style tokenizer, saved to ``directory``."""
    tokenizer = qwen_style_tokenizer()
    tiny_qwen2(len(tokenizer), hidden, layers, tie).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
