"""Token shards: assistant-only loss masks, packing, the Beam job, megatron IndexedDataset round trip,
blends."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pretrain_helpers import make_trajectories, qwen_style_tokenizer, write_trajectories
from ramp.pretrain.prepare import run_prepare
from tiny_model import tiny_tokenizer

from ramp import engines
from ramp.config import load_config
from ramp.train.config import PretrainConfig
from ramp.train.packing import pack_best_fit
from ramp.train.shards import PackedPair, build_train_dataset, packed_sample, shard_prefixes
from ramp.train.tokens import check_fingerprint, tokenize_messages, tokenizer_fingerprint


def test_loss_mask_alignment_without_protocol_tokens():
    tok = qwen_style_tokenizer()
    assert "</search>" not in tok.get_vocab() and "<result>" not in tok.get_added_vocab()
    merged_somewhere = False
    for trajectory in make_trajectories(8):
        messages = trajectory.messages
        conv = tokenize_messages(trajectory.sample_id, messages, tok)
        ids, mask = list(conv.input_ids), list(conv.loss_mask)
        # the prompt (system, user, generation prompt) never carries loss
        prompt = tok.apply_chat_template(list(messages[:2]), add_generation_prompt=True, tokenize=False)
        n_prompt = len(tok.encode(prompt, add_special_tokens=False))
        assert tok.decode(ids[:n_prompt]) == prompt and not any(mask[:n_prompt])
        # after it: runs of equal mask are exactly the messages, assistant = 1, tool (<result>) = 0
        runs: list[tuple[int, list[int]]] = []
        for token, m in zip(ids[n_prompt:], mask[n_prompt:], strict=True):
            if runs and runs[-1][0] == m:
                runs[-1][1].append(token)
            else:
                runs.append((m, [token]))
        turn = messages[2:]
        assert [m for m, _ in runs] == [int(x["role"] == "assistant") for x in turn]
        for (_, tokens), message in zip(runs[:-1], turn[:-1], strict=True):
            assert tok.decode(tokens) == message["content"]
        assert runs[-1][1][-1] == tok.eos_token_id  # the end-of-turn token is the assistant's
        assert tok.decode(runs[-1][1][:-1]) == turn[-1]["content"]
        # every retrieved token is in a 0 run: no result text carries loss
        assert all("<result>" not in tok.decode(t) for m, t in runs if m)
        # the case the test is about: one joint encoding merges across the `</search>\n` seam
        joint = tok.encode(turn[0]["content"] + turn[1]["content"], add_special_tokens=False)
        merged_somewhere |= joint != tok.encode(turn[0]["content"], add_special_tokens=False) + tok.encode(
            turn[1]["content"], add_special_tokens=False
        )
        # the training shift: labels = tokens[1:], the loss mask follows the labels
        sample = packed_sample([np.array(ids)], [np.array(mask)], seq_length=len(ids) + 5)
        assert sample["labels"][: len(ids) - 1].tolist() == ids[1:]
        assert sample["loss_mask"].tolist() == [float(x) for x in mask[1:]] + [0.0] * 6
    assert merged_somewhere


def test_best_fit_decreasing_packing():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(20, 700, size=300)] + [1500, 1025]
    packing = pack_best_fit(lengths, 1025)
    placed = sorted(i for row in packing.rows for i in row)
    assert placed == sorted(set(range(len(lengths))) - {300}) and packing.too_long == [300]
    assert all(sum(lengths[i] for i in row) <= 1025 for row in packing.rows)
    assert packing.tokens == sum(lengths) - 1500
    # no worse than the lower bound by more than one row, and never worse than first-fit decreasing
    assert len(packing.rows) <= -(-packing.tokens // 1025) + 2
    assert packing.efficiency > 0.95
    assert pack_best_fit(lengths, 1025) == packing


def test_train_refuses_shards_of_another_tokenizer():
    ours = tokenizer_fingerprint(qwen_style_tokenizer())
    check_fingerprint(ours, tokenizer_fingerprint(qwen_style_tokenizer()), "shards")
    with pytest.raises(ValueError, match="another tokenizer"):
        check_fingerprint(ours, tokenizer_fingerprint(tiny_tokenizer()), "shards")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tok")
    qwen_style_tokenizer().save_pretrained(directory)
    return directory


def _prepare(
    trajectories, tmp: Path, tokenizer_dir: Path, name: str, seq_length: int = 1024
) -> tuple[Path, dict]:

    config = load_config(
        PretrainConfig,
        "pretrain",
        [f"model.hf={tokenizer_dir}", f"prepare.seq_length={seq_length}", "prepare.num_shards=2"],
    )
    out = tmp / name
    return out, run_prepare(write_trajectories(trajectories, tmp / f"{name}-in"), out, config)


def test_prepare_job_round_trip_through_megatron_reader(tmp_path: Path, tokenizer_dir: Path):
    IndexedDataset = engines.megatron("datasets.indexed_dataset").IndexedDataset
    trajectories = make_trajectories(24)
    long_one = trajectories[0]
    m = long_one.messages
    messages = (*m[:3], {**m[3], "content": m[3]["content"] * 10}, m[4])  # a result block 10x over
    too_long = replace(long_one, sample_id="too-long", messages=messages)
    no_answer = replace(long_one, sample_id="prompt-only", messages=messages[:2])
    out, manifest = _prepare([*trajectories, too_long, no_answer], tmp_path, tokenizer_dir, "a")

    tok = qwen_style_tokenizer()
    expected = {tokenize_messages(t.sample_id, t.messages, tok) for t in trajectories}
    assert manifest["conversations_in"] == 26 and manifest["accounted"]
    assert manifest["packed"] == 24 and manifest["rejected_by_reason"] == {"too_long": 1, "unrenderable": 1}
    rejected = [
        json.loads(line) for f in sorted(out.glob("rejected-*.jsonl")) for line in f.read_text().splitlines()
    ]
    assert sorted(r["record_id"] for r in rejected) == ["prompt-only", "too-long"]
    assert manifest["tokenizer_sha256"] == tokenizer_fingerprint(tok)["tokenizer_sha256"]

    seen, rows, tokens = set(), 0, 0
    for prefix in shard_prefixes(out):
        reader = IndexedDataset(prefix)  # megatron-core's own reader
        pair = PackedPair(prefix)
        rows += len(pair)
        for r in range(len(pair)):
            ids, masks = pair.row(r)
            assert sum(len(t) for t in ids) <= 1025
            for t, m in zip(ids, masks, strict=True):
                seen.add((tuple(int(x) for x in t), tuple(int(x) for x in m)))
                tokens += len(t)
        assert len(reader) == sum(len(pair.row(r)[0]) for r in range(len(pair)))
    assert seen == {(c.input_ids, c.loss_mask) for c in expected}
    assert manifest["rows"] == rows and manifest["tokens"] == tokens
    assert manifest["packing_efficiency"] == pytest.approx(tokens / (rows * 1025))
    print(f"packing efficiency {manifest['packing_efficiency']:.3f} ({rows} rows of 1025)")

    # a second shard set with other trajectories; a 0.3 / 0.7 blend draws them in those ratios
    out_b, _ = _prepare(make_trajectories(16, offset=200), tmp_path, tokenizer_dir, "b")
    dataset = build_train_dataset(
        ["0.3", str(out), "0.7", str(out_b)], seq_length=1024, num_samples=3000, seed=7
    )
    a_prefixes = set(shard_prefixes(out))
    from_a = Counter(dataset.dataset_index[: len(dataset)].tolist())
    share_a = sum(n for d, n in from_a.items() if dataset.datasets[d].dataset_path in a_prefixes) / len(
        dataset
    )
    assert len(dataset) >= 3000 and abs(share_a - 0.3) < 0.01
    # the order follows the shards' content and the seed, not where they live
    shard = shard_prefixes(out)[0]
    moved = Path(shutil.copytree(out, tmp_path / "elsewhere" / "a")) / Path(shard).name
    orders = [
        [build_train_dataset([str(p)], 1024, 40, seed=s).sample_rows.tolist() for p in (shard, moved)]
        for s in (7, 8)
    ]
    assert orders[0][0] == orders[0][1] and orders[1][0] == orders[1][1] and orders[0][0] != orders[1][0]
    item = dataset[0]
    assert item["tokens"].shape == (1024,) and item["loss_mask"].sum() > 0
