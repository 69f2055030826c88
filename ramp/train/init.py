"""A policy from scratch (``ramp pretrain init``): a tokenizer trained on a corpus and a random Qwen2.

The tokenizer is byte-level BPE (``bpe``) or word-level over the corpus words (``word``: BPE merged
until every corpus word, with its leading space, is one token; digits stay single tokens), with
the ChatML control tokens, the protocol tags (``ramp.agent.protocol.TAG_STRINGS``) and a ChatML chat
template. The model is a ``Qwen2ForCausalLM`` with the sizes of :class:`InitConfig` and weights drawn
from ``model.seed``; both are saved as one Hugging Face directory that every stage loads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pydantic import Field, model_validator
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from ramp.agent.protocol import NO_BUDGET, NO_QUERY, NO_RESULTS, TAG_STRINGS
from ramp.config import CONFIG_DIR, StrictModel, read_yaml

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class InitModelConfig(StrictModel):
    """Sizes of the random Qwen2 (``--set model.hidden_size=128``)."""

    hidden_size: int = Field(default=128, ge=8)
    intermediate_size: int = Field(default=256, ge=8)
    num_layers: int = Field(default=2, ge=1)
    num_heads: int = Field(default=4, ge=1)
    num_kv_heads: int = Field(default=2, ge=1)
    max_position_embeddings: int = Field(default=4096, ge=64)
    rope_theta: float = Field(default=10000.0, gt=0)
    tie_word_embeddings: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> InitModelConfig:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("model.hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        return self


class InitConfig(StrictModel):
    tokenizer: Literal["bpe", "word"] = "bpe"
    vocab_size: int = Field(default=4000, ge=64)  # the most tokens learned (word: the most frequent words)
    model: InitModelConfig = Field(default_factory=InitModelConfig)


def corpus_texts(paths: Sequence[str | Path]) -> Iterator[str]:
    """Every string in the corpus files: all string values (nested too) of ``.jsonl`` rows, all string
    columns of ``.parquet`` files, the lines of any other file; a directory means its files."""
    for item in paths:
        path = Path(item)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"corpus not found: {item}")
        for file in files:
            if file.suffix == ".jsonl":
                with file.open(encoding="utf-8") as handle:
                    for line in handle:
                        if line.strip():
                            yield from _strings(json.loads(line))
            elif file.suffix == ".parquet":
                table = pq.read_table(file)
                for column in table.itercolumns():
                    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                        yield from (v for v in column.to_pylist() if v)
            else:
                yield from file.read_text(encoding="utf-8").splitlines()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _protocol_texts() -> list[str]:
    """The prompt templates and protocol text, so the policy's own scaffolding has no unknown words."""
    prompts = [v for v in read_yaml(CONFIG_DIR / "prompts.yaml").values() if isinstance(v, str)]
    return [
        *prompts,
        NO_RESULTS,
        NO_BUDGET,
        NO_QUERY,
        "\n[1] a\n[2] b\n[3] c\n[4] d\n",
        "user system assistant",
    ]


def train_tokenizer(
    texts: Sequence[str], kind: Literal["bpe", "word"], vocab_size: int, protocol_tokens: bool = True
) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer trained on ``texts`` (deterministic for the same texts).

    Both kinds are byte-level BPE with Qwen2's normaliser and pre-tokenizer (the pipeline
    ``AutoTokenizer`` rebuilds for a ``qwen2`` model, so what is trained is what every stage loads);
    ``word`` keeps merging until every corpus word is one token (as far as ``vocab_size`` allows).
    ``protocol_tokens``: the protocol tags are added tokens (else BPE pieces, as in Qwen2's vocabulary).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1 if kind == "word" else 2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator([*texts, *_protocol_texts()], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )
    if protocol_tokens:
        fast.add_tokens(list(TAG_STRINGS))
    return fast


def random_model(tokenizer: Any, config: InitModelConfig) -> Qwen2ForCausalLM:
    """A ``Qwen2ForCausalLM`` of the configured sizes with weights drawn from ``config.seed``."""
    hf_config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    torch.manual_seed(config.seed)
    return Qwen2ForCausalLM(hf_config).eval()


def init_policy(corpus: Sequence[str | Path], output: str | Path, config: InitConfig) -> dict[str, Any]:
    """Train the tokenizer on ``corpus``, build the random model and save both under ``output``."""
    texts = list(corpus_texts(corpus))
    if not texts:
        raise ValueError(f"no text in the corpus {list(map(str, corpus))}")
    tokenizer = train_tokenizer(texts, config.tokenizer, config.vocab_size)
    model = random_model(tokenizer, config.model)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {
        "output": str(out),
        "tokenizer": config.tokenizer,
        "vocab": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "texts": len(texts),
    }
    (out / "ramp-init.json").write_text(
        json.dumps({**summary, "config": config.model_dump(mode="json")}, indent=2, sort_keys=True) + "\n"
    )
    return summary
