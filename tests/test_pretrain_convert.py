"""HF Qwen2 <-> megatron-core conversion: check-conversion (fp32 logits) and the exact round trip."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from pretrain_helpers import save_tiny_hf
from ramp.pretrain.convert import _parallel, load_hf
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from ramp.cli import app
from ramp.train import weights
from ramp.train.model import (
    Qwen2Shape,
    build_gpt_model,
    causal_segment_mask,
    padded_vocab_size,
    transformer_config,
)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("hf")
    return {"untied": save_tiny_hf(tmp / "untied", tie=False), "tied": save_tiny_hf(tmp / "tied", tie=True)}


def _check(hf: Path, *extra: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["pretrain", "check-conversion", "--hf", str(hf), *extra])
    found = re.search(r'\{"max_abs_logit_diff".*?\}', result.output)  # stderr progress bars share the output
    assert found, result.output
    return result.exit_code, json.loads(found.group(0))


def test_check_conversion_untied_gqa_biases(hf_dirs: dict[str, Path]):
    code, report = _check(hf_dirs["untied"])
    assert code == 0 and report["round_trip_exact"]
    assert report["max_abs_logit_diff"] <= 1e-5


def test_check_conversion_fails_on_a_naive_qkv_concatenation(hf_dirs: dict[str, Path], monkeypatch):
    monkeypatch.setattr(weights, "_interleave_qkv", lambda q, k, v, shape: torch.cat([q, k, v]))
    code, report = _check(hf_dirs["untied"])
    assert code == 1 and report["max_abs_logit_diff"] > 1e-2


def test_convert_commands_round_trip_tied(hf_dirs: dict[str, Path], tmp_path: Path):
    hf = hf_dirs["tied"]
    runner = CliRunner()
    mcore = tmp_path / "mcore"
    result = runner.invoke(
        app, ["pretrain", "convert", "hf-to-mcore", "--hf", str(hf), "--out", str(mcore), "--tp", "2"]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((mcore / "ramp-mcore.json").read_text())
    assert meta["padded_vocab_size"] % 256 == 0 and meta["shape"]["tie_word_embeddings"]
    back = tmp_path / "back"
    result = runner.invoke(
        app,
        [
            "pretrain",
            "convert",
            "mcore-to-hf",
            "--ckpt",
            str(mcore),
            "--hf-config",
            str(hf),
            "--out",
            str(back),
        ],
    )
    assert result.exit_code == 0, result.output
    original = AutoModelForCausalLM.from_pretrained(hf).state_dict()
    restored = AutoModelForCausalLM.from_pretrained(back).state_dict()
    assert set(original) == set(restored) and all(torch.equal(original[k], restored[k]) for k in original)
    assert (back / "tokenizer.json").is_file()


def test_packed_conversations_attend_only_within_themselves(hf_dirs: dict[str, Path]):
    """A conversation packed after another (block-diagonal mask, positions not reset) gets the logits it
    gets alone: RoPE is relative, so the local spec needs no position-id reset."""
    hf = load_hf(hf_dirs["untied"])
    shape = Qwen2Shape.from_hf(hf.config)
    first, second = torch.randint(0, 500, (1, 23)), torch.randint(0, 500, (1, 17))
    with _parallel():
        padded = padded_vocab_size(shape.vocab_size)
        model = build_gpt_model(shape, transformer_config(shape), vocab_size=padded)
        model.load_state_dict(weights.hf_to_mcore(hf.state_dict(), shape, padded), strict=False)
        packed = torch.cat([first, second], dim=1)
        segments = torch.tensor([[0] * 23 + [1] * 17])
        positions = torch.arange(40)[None]
        with torch.no_grad():
            together = model(packed, positions, causal_segment_mask(segments))
            one_segment = torch.zeros(1, 40, dtype=torch.long)
            alone = model(second, positions[:, :17], causal_segment_mask(one_segment[:, :17]))
            leaky = model(packed, positions, causal_segment_mask(one_segment))
    assert (together[:, 23:] - alone).abs().max() < 1e-4
    assert (leaky[:, 23:] - alone).abs().max() > 1e-2  # plain causal attention would see the first one
