"""Every command line the README shows, run the way a user would run it.

``readme_command_lines`` collects each ``ramp …``, ``make …`` and ``curl …`` line of the README's
```` ```bash ```` blocks (continuations joined, comments dropped). ``ENTRIES`` has one entry per line: the
concrete command(s) that run it here (README placeholders such as ``IDX``/``URL``/``[--workers N]`` filled
in with the bundled data cut to a test's size, a ``ramp serve-retriever`` started on 127.0.0.1 and the fake
OpenAI-compatible teacher of ``tests/openai_server.py``), what it must write and print, or the reason it
cannot run here. A README line without an entry fails ``test_every_readme_command_has_an_entry``: adding a
command to the README means adding its entry here. Commands run as subprocesses in a temporary workspace
whose ``data`` and ``configs`` are the repository's, so the README's relative paths work unchanged.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from facts_corpus import QUERIES, SEEDS, write_corpus, write_jsonl
from openai_server import ScriptedOpenAIServer
from tiny_model import tiny_model, tiny_tokenizer

from ramp.data.synthesis import rule_descriptions
from ramp.retrieval.base import Hit
from ramp.retrieval.indexing import build_index

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIMEOUT_S = 600


@dataclass(frozen=True)
class Entry:
    id: str
    line: str  # the README line, continuations joined and whitespace collapsed
    runs: tuple[str, ...] = ()  # concrete command lines ({placeholders} filled), run in order
    writes: tuple[str, ...] = ()  # globs under the workspace that must each match a file afterwards
    says: tuple[str, ...] = ()  # text the output must contain
    needs: tuple[str, ...] = ()  # entries (or preparations) that must have run first
    serve: bool = False  # the one run is a server, kept up in the background until the module ends
    port: str = "port"  # the placeholder holding a server's port
    skip: str = ""  # why the line cannot run on this machine


SAMPLES = "runs/samples/"
DATAFLOW = (
    "ramp data build --input 'gs://bucket/enwiki-*-multistream.xml.bz2' --format xml --output "
    "gs://bucket/ramp/samples --set output.num_shards=256 -- --runner=DataflowRunner --project=PROJECT "
    "--region=us-central1 --temp_location=gs://bucket/tmp --sdk_container_image=IMAGE_WITH_RAMP"
)
# A tiny policy's single DAPO step: 2 prompts x 2 rollouts of a few tokens.
ONE_TINY_RL_STEP = (
    " --set trainer.total_steps=1 --set trainer.train_batch_size=2 --set trainer.gen_batch_size=2"
    " --set trainer.mini_batches=1 --set trainer.micro_batch_size=2 --set rollout.n=2"
    " --set rollout.max_turns=2"
    " --set rollout.max_new_tokens_per_turn=8 --set rollout.max_total_new_tokens=16"
    " --set algorithm.filter_groups=false --set algorithm.overlong.buffer=4"
)
REMOTE = "needs a remote Beam runner and a cloud bucket; the same job runs on the local runner above"

ENTRIES = [
    # The Makefile target with the data stages only (the later entries need them); every stage of it, at
    # CI size, runs in tests/test_demo.py.
    Entry(
        "make-demo",
        "make demo",
        (
            "make demo -o {venv}/.installed VENV={venv} DEMO_OUT=runs/demo DEMO_INPUT={small_dump}"
            " DEMO_ARGS='--only samples --only index --only answerable --only trajectories'",
        ),
        writes=(
            "runs/demo/samples/samples-*.parquet",
            "runs/demo/index/ramp-manifest.json",
            "runs/demo/answerable/stats.json",
            "runs/demo/trajectories/trajectories-*.parquet",
            "runs/demo/.stages/trajectories.json",
        ),
        says=("verified yield", "trajectories  done"),
    ),
    Entry(  # two quick stages of the demo, forced (the whole demo: tests/test_demo.py)
        "experiment-demo",
        "ramp experiment demo --config configs/demo/demo.yaml [--output runs/demo] [--force] [--only STAGE]"
        " [--set KEY=VALUE]",
        (
            "ramp experiment demo --config configs/demo/demo.yaml --output runs/demo --force"
            " --only eval-corpus --only eval-index --set workers=1",
        ),
        writes=("runs/demo/eval/index/ramp-manifest.json", "runs/demo/.stages/eval-index.json"),
        says=("521 passages", "eval-index    done"),
    ),
    Entry("make-test", "make test", skip="this test runs inside `make test`"),
    Entry("make-test-fast", "make test-fast", skip="`make test` runs every test of `make test-fast`"),
    Entry(
        "make-gpu-wheels",
        "make gpu-wheels",
        skip="downloads wheels from the package registries; its pins, pip commands and budget are tested in"
        " tests/test_gpu_check.py",
    ),
    Entry(
        "make-gpu-check",
        "make gpu-check",
        ("make gpu-check GPU_PY={venv}/bin/python",),
        says=("gpu-check: no CUDA GPU on this machine",),
    ),
    Entry(
        "data-build",
        "ramp data build --input 'data/enwiki-sample-106-articles.xml.bz2' --format xml"
        " --output runs/samples [--config configs/data.yaml]"
        " [--set masking.max_masks=3 --set masking.exclude=article] [--workers 4] [--chunk-mb 4]",
        (
            "ramp data build --input '{small_dump}' --format xml --output runs/samples"
            " --config configs/data.yaml --set masking.max_masks=3 --set masking.exclude=article --workers 2"
            " --chunk-mb 4",
        ),
        writes=tuple(
            SAMPLES + f
            for f in (
                "samples-*.parquet",
                "passages-*.parquet",
                "rejected-*.jsonl",
                "stats.json",
                "logs/*.log",
            )
        ),
        says=("input records", "(ok)"),
    ),
    Entry(
        "data-stats",
        "ramp data stats runs/samples [--json]",
        ("ramp data stats runs/samples", "ramp data stats runs/samples --json"),
        says=("samples by number of masks", '"input_records"'),
        needs=("data-build",),
    ),
    Entry(
        "index-wiki18",
        "ramp index build --corpus data/wiki18-sample-1000.jsonl --index runs/index/wiki18 [--threads 4]",
        ("ramp index build --corpus data/wiki18-sample-1000.jsonl --index runs/index/wiki18 --threads 2",),
        writes=("runs/index/wiki18/ramp-manifest.json",),
        says=("indexed 1000 documents",),
    ),
    Entry(
        "index-enwiki",
        "ramp index build --corpus runs/samples --index runs/index/enwiki --threads 8 --shards 16",
        ("ramp index build --corpus runs/samples --index runs/index/enwiki --threads 2 --shards 16",),
        writes=("runs/index/enwiki/ramp-manifest.json",),
        needs=("data-build",),
    ),
    # Dense and hybrid at a test's size: the first 24 wiki-18 passages (encoding costs ~0.3 s a passage).
    Entry(
        "index-dense",
        "ramp index build --kind dense --encoder minilm --corpus data/wiki18-sample-1000.jsonl"
        " --index runs/index/wiki18-dense [--faiss flat|hnsw|ivfpq] [--nlist N --m M --nbits 8 --nprobe 64]"
        " [--workers N] [--overwrite]",
        (
            "ramp index build --corpus runs/wiki18-tiny.jsonl --index runs/index/tiny --threads 1",
            "ramp index build --kind dense --encoder minilm --corpus runs/wiki18-tiny.jsonl"
            " --index runs/index/tiny-dense --workers 1",
            "ramp index build --kind dense --encoder minilm --corpus runs/wiki18-tiny.jsonl"
            " --index runs/index/tiny-dense --faiss ivfpq --nlist 2 --m 48 --nbits 4 --nprobe 2 --overwrite",
        ),
        writes=("runs/index/tiny-dense/index.faiss", "runs/index/tiny-dense/embeddings/embeddings-*.parquet"),
        says=("indexed 24 passages", "(embeddings reused)"),
        needs=("tiny-corpus",),
    ),
    Entry(
        "serve-hybrid",
        "ramp serve-retriever --index runs/index/wiki18 --set retriever.kind=hybrid"
        " --set retriever.dense_index=runs/index/wiki18-dense [--port 8000]",
        (
            "ramp serve-retriever --index runs/index/tiny --set retriever.kind=hybrid"
            " --set retriever.dense_index=runs/index/tiny-dense --port {hybrid_port}",
        ),
        says=('"kind": "hybrid"', '"documents": 24'),
        serve=True,
        needs=("index-dense",),
        port="hybrid_port",
    ),
    Entry(
        "index-info",
        "ramp index info runs/index/wiki18",
        ("ramp index info runs/index/wiki18",),
        says=('"documents": 1000',),
        needs=("index-wiki18",),
    ),
    # Serves the demo's index, whose samples exclude only their own passage, so the stages below search
    # it over HTTP. (Samples with article-wide exclusions make the HTTP client over-fetch up to 100 hits,
    # which a server capped at the README's example max_topk=50 refuses: reported, a client fix.)
    Entry(
        "serve",
        "ramp serve-retriever --index runs/index/wiki18 [--host 127.0.0.1] [--port 8000]"
        " [--set server.max_topk=50]",
        (
            "ramp serve-retriever --index runs/demo/index --host 127.0.0.1 --port {port}"
            " --set server.max_topk=50",
        ),
        says=('"status": "ok"',),
        serve=True,
        needs=("make-demo",),
    ),
    Entry(
        "curl",
        "curl -s localhost:8000/retrieve -H 'content-type: application/json' -d '{\"queries\": "
        '["Twycross Zoo founder"], "topk": 3, "return_scores": true, "exclude_doc_ids": [["747"]]}\'',
        (
            "curl -s localhost:{port}/retrieve -H 'content-type: application/json' -d '{{\"queries\": "
            '["Anarchism"], "topk": 3, "return_scores": true, "exclude_doc_ids": [["12#0"]]}}\'',
        ),
        says=('"result":', '"score":'),
        needs=("serve",),
    ),
    Entry(
        "answerability",
        "ramp data answerability --samples runs/samples --output runs/answerable"
        " (--index IDX | --retriever-url URL) [--set answerability.keep=any_answerable] [--workers N]",
        (
            "ramp data answerability --samples runs/demo/samples --output runs/answerable"
            " --index runs/demo/index --set answerability.keep=any_answerable --workers 2",
            "ramp data answerability --samples runs/demo/samples --output runs/answerable-http"
            " --retriever-url http://127.0.0.1:{port} --set answerability.keep=any_answerable",
        ),
        writes=("runs/answerable/samples-*.parquet", "runs/answerable-http/samples-*.parquet"),
        says=("answerable masks by type",),
        needs=("serve",),
    ),
    Entry(
        "cot-builtin",
        "ramp data cot --samples runs/answerable --output runs/trajectories --index runs/index/enwiki",
        ("ramp data cot --samples runs/answerable --output runs/trajectories --index runs/demo/index",),
        writes=("runs/trajectories/trajectories-*.parquet", "runs/trajectories/stats.json"),
        says=("verified yield",),
        needs=("answerability",),
    ),
    Entry(
        "curate",
        "ramp data curate --trajectories runs/trajectories --output runs/curated --set limit=871",
        ("ramp data curate --trajectories runs/trajectories --output runs/curated --set limit=871",),
        writes=("runs/curated/trajectories-*.parquet", "runs/curated/rejected-curation.jsonl"),
        says=("curated", "kept"),
        needs=("cot-builtin",),
    ),
    Entry(
        "cot-openai",
        "ramp data cot --samples DIR --output OUT --retriever-url http://127.0.0.1:8000 --teacher openai"
        " --set teacher.backend.openai.base_url=http://127.0.0.1:8001/v1"
        " --set teacher.backend.openai.model=Qwen2.5-72B-Instruct",
        (
            "ramp data cot --samples runs/few --output runs/trajectories-openai --retriever-url"
            " http://127.0.0.1:{port} --teacher openai --set teacher.backend.openai.base_url={openai_url}"
            " --set teacher.backend.openai.model=Qwen2.5-72B-Instruct",
        ),
        writes=("runs/trajectories-openai/trajectories-*.parquet",),
        says=("teacher openai", "verified yield"),
        needs=("serve", "few"),
    ),
    Entry(
        "cot-student",
        "ramp data cot ... --teacher student --set round=1 --set teacher.backend.kind=hf"
        " --set teacher.backend.hf.model=ckpt/",
        (
            "ramp data cot --samples runs/few --output runs/trajectories-student --index runs/demo/index"
            " --teacher student --set round=1 --set teacher.backend.kind=hf"
            " --set teacher.backend.hf.model=ckpt/ --set teacher.rollout.max_turns=2"
            " --set teacher.rollout.max_new_tokens_per_turn=16 --set teacher.rollout.max_total_new_tokens=32",
        ),
        writes=("runs/trajectories-student/stats.json",),
        says=("teacher student (round 1): 4 samples",),
        needs=("few", "ckpt"),
    ),
    Entry(
        "pretrain-prepare",
        "ramp pretrain prepare --trajectories runs/trajectories --output runs/pretrain/shards"
        " --tokenizer HF_DIR",
        (
            "ramp pretrain prepare --trajectories runs/demo/trajectories --output runs/pretrain/shards"
            " --tokenizer ckpt --set prepare.num_shards=1",
        ),
        writes=("runs/pretrain/shards/packed-*.idx", "runs/pretrain/shards/manifest.json"),
        says=("packing efficiency",),
        needs=("make-demo", "ckpt"),
    ),
    Entry(
        "pretrain-check",
        "ramp pretrain check-conversion --hf HF_DIR [--tp N]",
        ("ramp pretrain check-conversion --hf ckpt --tp 1",),
        says=('"ok": true', '"round_trip_exact": true'),
        needs=("ckpt",),
    ),
    Entry(
        "pretrain-to-mcore",
        "ramp pretrain convert hf-to-mcore --hf HF_DIR --out runs/pretrain/mcore [--tp N]",
        ("ramp pretrain convert hf-to-mcore --hf ckpt --out runs/pretrain/mcore --tp 2",),
        writes=("runs/pretrain/mcore/*",),
        needs=("ckpt",),
    ),
    Entry(
        "pretrain-train",
        "ramp pretrain train --config configs/pretrain.yaml --set model.hf=HF_DIR [--set train.steps=N]",
        (
            "ramp pretrain train --config configs/pretrain.yaml --set model.hf=ckpt --set train.steps=2"
            " --set train.global_batch_size=2 --set optim.warmup_steps=1 --set checkpoint.save_interval=2",
        ),
        writes=(
            "runs/pretrain/checkpoints/latest_checkpointed_iteration.txt",
            "runs/mlflow.db",
            "runs/pretrain/logs/pretrain-train.log",
        ),
        says=('"final_step": 2',),
        needs=("pretrain-prepare",),
    ),
    Entry(
        "pretrain-launch",
        "ramp pretrain launch --config configs/pretrain.yaml --dry-run",
        ("ramp pretrain launch --config configs/pretrain.yaml --dry-run",),
        writes=("runs/pretrain/launch.sbatch",),
        says=("torchrun",),
    ),
    Entry(
        "pretrain-to-hf",
        "ramp pretrain convert mcore-to-hf --ckpt runs/pretrain/checkpoints --hf-config HF_DIR"
        " --out runs/sft/policy",
        (
            "ramp pretrain convert mcore-to-hf --ckpt runs/pretrain/checkpoints --hf-config ckpt"
            " --out runs/sft/policy",
        ),
        writes=("runs/sft/policy/model.safetensors",),
        needs=("pretrain-train",),
    ),
    Entry(
        "rl-train",
        "ramp rl train --config configs/rl.yaml --set policy.model=runs/sft/policy"
        " --set retriever.index=runs/index/enwiki --set data.samples=runs/answerable"
        " [--set curriculum.mode=mixed] [--set data.task=qa --set data.qa=FILE.jsonl]",
        (
            "ramp rl train --config configs/rl.yaml --set policy.model=ckpt"
            " --set retriever.index=runs/demo/index"
            " --set data.samples=runs/answerable --set curriculum.mode=mixed" + ONE_TINY_RL_STEP,
        ),
        writes=("runs/rl/policy/model.safetensors", "runs/rl/history.jsonl", "runs/rl/reward_curve.png"),
        says=("trained 1 steps",),
        needs=("answerability", "ckpt"),
    ),
    Entry(
        "rl-nproc",
        "ramp rl train --config configs/rl.yaml --nproc 8",
        skip="8 training processes, one per GPU (tests/test_rl_* run the FSDP2 path with 2 CPU processes)",
    ),
    Entry(
        "export-verl",
        "ramp rl export-verl --config configs/rl.yaml --samples runs/answerable"
        " --qa hotpotqa=data/hotpotqa-dev-500.jsonl --output runs/verl [--set policy.model=runs/sft/policy]"
        " [--nnodes 2 --gpus-per-node 8] [--retriever-port 8000]",
        (  # one curriculum stage: the workspace's answerable samples need not hold every mask count
            "ramp rl export-verl --config configs/rl.yaml --samples runs/answerable"
            " --qa hotpotqa=data/hotpotqa-dev-500.jsonl --output runs/verl --set policy.model=runs/sft/policy"
            " --nnodes 2 --gpus-per-node 8 --retriever-port 8000 --set curriculum.stages=[1]",
        ),
        writes=(
            "runs/verl/ramp-k1.parquet",
            "runs/verl/hotpotqa.parquet",
            "runs/verl/ramp-k1.yaml",
            "runs/verl/ramp_dapo.yaml",
            "runs/verl/tool_config.yaml",
            "runs/verl/agent_loop.yaml",
            "runs/verl/launch.sh",
        ),
        needs=("answerability",),
    ),
    Entry(
        "finetune-sft",
        "ramp finetune sft --trajectories runs/trajectories-qa --output runs/finetune/sft"
        " --set model.hf=runs/rl/policy",
        (  # the demo's RAMP trajectories stand in for QA ones: same format, and QA ones need an LLM teacher
            "ramp finetune sft --trajectories runs/demo/trajectories --output runs/finetune/sft"
            " --set model.hf=runs/rl/policy --set prepare.num_shards=1 --set train.steps=2"
            " --set train.global_batch_size=2 --set optim.warmup_steps=1 --set checkpoint.save_interval=2",
        ),
        writes=(
            "runs/finetune/sft/policy/model.safetensors",
            "runs/finetune/sft/shards/manifest.json",
            "runs/finetune/sft/logs/sft.log",
        ),
        says=("trained to step 2",),
        needs=("make-demo", "rl-train"),
    ),
    Entry(
        "finetune-rl",
        "ramp finetune rl --dataset hotpotqa --input data/hotpotqa-dev-500.jsonl --reward token_recall"
        " --set policy.model=runs/rl/policy --set retriever.index=runs/index/enwiki",
        (
            "ramp finetune rl --dataset hotpotqa --input data/hotpotqa-dev-500.jsonl --reward token_recall"
            " --limit 4 --set policy.model=runs/rl/policy --set retriever.index=runs/demo/index"
            " --set trainer.output_dir=runs/finetune/rl" + ONE_TINY_RL_STEP,
        ),
        writes=("runs/finetune/rl/policy/model.safetensors", "runs/finetune/rl/qa-train.jsonl"),
        says=("4 hotpotqa questions", "trained 1 steps"),
        needs=("make-demo", "rl-train"),
    ),
    Entry(
        "eval-corpus",
        "ramp eval corpus --dataset hotpotqa --input data/hotpotqa-dev-distractor-53.json"
        " --output runs/corpus/hotpotqa-distractor",
        (
            "ramp eval corpus --dataset hotpotqa --input data/hotpotqa-dev-distractor-53.json"
            " --output runs/corpus/hotpotqa-distractor",
        ),
        writes=("runs/corpus/hotpotqa-distractor/*",),
    ),
    Entry(
        "index-qa",
        "ramp index build --corpus runs/corpus/hotpotqa-distractor --index runs/index/hotpotqa-distractor",
        ("ramp index build --corpus runs/corpus/hotpotqa-distractor --index runs/index/hotpotqa-distractor",),
        writes=("runs/index/hotpotqa-distractor/ramp-manifest.json",),
        needs=("eval-corpus",),
    ),
    Entry(
        "eval-builtin",
        "ramp eval run --config configs/eval.yaml --policy builtin --output runs/eval/builtin",
        ("ramp eval run --config configs/eval.yaml --policy builtin --output runs/eval/builtin",),
        writes=("runs/eval/builtin/predictions.parquet", "runs/mlflow.db"),
        says=("exact_match",),
        needs=("index-qa",),
    ),
    Entry(
        "eval-rl",
        "ramp eval run --config configs/eval.yaml --set agent.backend.hf.model=runs/rl/policy"
        " --set run_name=ramp-rl",
        (
            "ramp eval run --config configs/eval.yaml --set agent.backend.hf.model=runs/rl/policy"
            " --set run_name=ramp-rl --set 'datasets=[{{name: hotpotqa, limit: 4,"
            " path: data/hotpotqa-dev-distractor-53.json}}]' --set agent.rollout.max_turns=2"
            " --set agent.rollout.max_new_tokens_per_turn=16"
            " --set agent.rollout.max_total_new_tokens=32",
        ),
        writes=("runs/eval/hotpotqa-distractor/predictions.parquet",),
        says=("4 questions",),
        needs=("index-qa", "rl-train"),
    ),
    Entry(
        "eval-compare",
        "ramp eval compare builtin ramp-rl [--metric exact_match] [--output runs/eval/compare]",
        ("ramp eval compare builtin ramp-rl --metric exact_match --output runs/eval/compare",),
        writes=("runs/eval/compare/compare.md", "runs/eval/compare/compare.png"),
        says=("ramp-rl",),
        needs=("eval-builtin", "eval-rl"),
    ),
    Entry(
        "synthesize",
        "ramp data synthesize --seeds SEEDS.jsonl --output runs/synth (--index IDX | --retriever-url URL)"
        " [--set synth.hops=3] [--workers N]",
        (
            "ramp data synthesize --seeds runs/facts/seeds.jsonl --output runs/synth --index runs/index/facts"
            " --set synth.hops=3 --workers 2",
            "ramp data synthesize --seeds runs/facts/seeds.jsonl --output runs/synth-http"
            " --retriever-url http://127.0.0.1:{port}",
        ),
        writes=("runs/synth/questions-*.jsonl", "runs/synth/rejected-*.jsonl", "runs/synth-http/stats.json"),
        says=("8 seeds -> 1 questions (3 hops: 1)", "seeds in = kept + rejected (ok)"),
        needs=("facts", "serve"),
    ),
    Entry(
        "synthesize-openai",
        "ramp data synthesize ... --set synth.backend=openai --set synth.openai.base_url=http://127.0.0.1:8001/v1"
        " --set synth.openai.model=Qwen2.5-72B-Instruct",
        (
            "ramp data synthesize --seeds runs/facts/seeds.jsonl --output runs/synth-llm"
            " --index runs/index/facts --set synth.backend=openai --set synth.openai.base_url={openai_url}"
            " --set synth.openai.model=Qwen2.5-72B-Instruct",
        ),
        writes=("runs/synth-llm/questions-*.jsonl",),
        says=("8 seeds -> 2 questions", "backend openai"),
        needs=("facts",),
    ),
    Entry(
        "sim-prepare",
        "ramp sim prepare --questions QA.jsonl --output runs/sim/pairs (--index IDX | --retriever-url URL)"
        " [--trajectories DIR] [--set prepare.docs=5]",
        (
            "ramp sim prepare --questions runs/facts/queries.jsonl --output runs/sim/pairs"
            " --index runs/index/facts --set prepare.docs=1",
            "ramp sim prepare --trajectories runs/demo/trajectories --output runs/sim/pairs-demo"
            " --retriever-url http://127.0.0.1:{port} --set prepare.docs=2",
        ),
        writes=(
            "runs/sim/pairs/pairs.jsonl",
            "runs/sim/pairs/documents.jsonl",
            "runs/sim/pairs-demo/stats.json",
        ),
        says=("8 queries -> 8 useful + 8 noisy pairs", "queries in = kept + rejected (ok)"),
        needs=("facts", "serve", "make-demo"),
    ),
    Entry(
        "sim-train",
        "ramp sim train --pairs runs/sim/pairs --output runs/sim/model --set model.hf=HF_DIR"
        " [--set train.steps=N]",
        (
            "ramp sim train --pairs runs/sim/pairs --output runs/sim/model --set model.hf=ckpt"
            " --set train.steps=2 --set train.global_batch_size=2 --set prepare.num_shards=1"
            " --set optim.warmup_steps=1 --set checkpoint.save_interval=2",
        ),
        writes=("runs/sim/model/policy/model.safetensors", "runs/sim/model/policy/sim-documents.jsonl"),
        says=("16 pairs; trained to step 2",),
        needs=("sim-prepare", "ckpt"),
    ),
    Entry(
        "serve-simulated",
        "ramp serve-retriever --set retriever.kind=simulated --set retriever.simulator.base_url=http://127.0.0.1:8001/v1"
        " --set retriever.simulator.model=SearchSimulation_14B [--port 8002]",
        (
            "ramp serve-retriever --set retriever.kind=simulated"
            " --set retriever.simulator.base_url={openai_url}"
            " --set retriever.simulator.model=SearchSimulation_14B --port {sim_port}",
        ),
        says=('"simulator": "openai"', '"noise_probability": 0.0'),
        serve=True,
        port="sim_port",
    ),
    Entry(
        "rl-simulated",
        "ramp rl train --config configs/rl.yaml --set retriever.kind=simulated"
        " --set retriever.simulator.backend=hf --set retriever.simulator.model=runs/sim/model/policy"
        " --set data.task=qa --set data.qa=FILE.jsonl"
        " [--set retriever.simulator.noise.p_end=0.5]",
        (
            "ramp rl train --config configs/rl.yaml --set retriever.kind=simulated"
            " --set retriever.simulator.backend=hf --set retriever.simulator.model=runs/sim/model/policy"
            " --set data.task=qa --set data.qa=runs/facts/queries.jsonl"
            " --set retriever.simulator.noise.p_end=0.5 --set retriever.simulator.max_new_tokens=32"
            " --set policy.model=ckpt --set trainer.output_dir=runs/rl-sim" + ONE_TINY_RL_STEP,
        ),
        writes=("runs/rl-sim/history.jsonl",),
        says=("trained 1 steps",),
        needs=("sim-train", "ckpt", "facts"),
    ),
    Entry(
        "pretrain-init",
        "ramp pretrain init --corpus runs/samples --output runs/init [--tokenizer word] [--vocab-size N]"
        " [--set model.hidden_size=64]",
        (
            "ramp pretrain init --corpus data/wiki18-sample-1000.jsonl --output runs/init --tokenizer word"
            " --vocab-size 3000 --set model.hidden_size=32 --set model.intermediate_size=64",
        ),
        writes=("runs/init/config.json", "runs/init/tokenizer.json", "runs/init/ramp-init.json"),
        says=('"tokenizer": "word"',),
    ),
    Entry(
        "experiment-ramp-effect",
        "ramp experiment ramp-effect --config configs/experiment/ramp_effect.yaml [--output DIR] [--seeds N]",
        skip="the full run takes about 19 minutes on 2 cores; tests/test_experiment.py runs its engine "
        "end to end at tiny size (configs/experiment/ramp_effect_tiny.yaml) and reruns it",
    ),
    Entry(
        "experiment-recipes",
        "ramp experiment recipes --config configs/experiment/recipes.yaml [--only search-r1] [--seeds 3]"
        " [--set KEY=VALUE]",
        (
            "ramp experiment recipes --config configs/experiment/recipes_tiny.yaml --only research --seeds 1"
            " --output runs/recipes --set tracking.tracking_uri=sqlite:///runs/recipes.db",
        ),
        writes=(
            "runs/recipes/results.json",
            "runs/recipes/recipes.png",
            "runs/recipes/seed-0/recipes/research/eval/summary.json",
        ),
        says=("| research |", "| cold-start |", "plot: runs/recipes/recipes.png"),
    ),
    Entry("dataflow", DATAFLOW, skip=REMOTE),
    Entry(
        "flink",
        "ramp data build ... -- --runner=FlinkRunner --flink_master=HOST:8081 --environment_type=DOCKER"
        " --environment_config=IMAGE",
        skip=REMOTE,
    ),
    Entry(
        "spark",
        "ramp data build ... -- --runner=SparkRunner --spark_master_url=spark://HOST:7077"
        " --environment_type=DOCKER --environment_config=IMAGE",
        skip=REMOTE,
    ),
]
BY_ID = {entry.id: entry for entry in ENTRIES}


def readme_command_lines(text: str) -> list[str]:
    """The ``ramp``/``make``/``curl`` lines of the README's bash blocks, joined and without comments."""
    commands: list[str] = []
    in_bash, pending = False, ""
    for raw in text.splitlines():
        if raw.startswith("```"):
            in_bash, pending = raw.strip() == "```bash", ""
            continue
        if not in_bash:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        command = " ".join(_without_comment(line).split())
        if command.split(" ", 1)[0] in ("ramp", "make", "curl"):
            commands.append(command)
    return commands


def _without_comment(line: str) -> str:
    quote = ""
    for i, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _command_words(line: str) -> list[str]:
    words = []
    for word in line.split():
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        words.append(word)
    return words


def _options(line: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", line.split(" -- ")[0]))


def test_every_readme_command_has_an_entry() -> None:
    readme = readme_command_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(readme) >= 15
    entries = {entry.line for entry in ENTRIES}
    missing = [line for line in readme if line not in entries]
    stale = [entry.id for entry in ENTRIES if entry.line not in readme]
    assert not missing, f"README command lines with no entry in tests/test_readme_commands.py: {missing}"
    assert not stale, f"entries whose README line is gone or changed: {stale}"
    assert len(BY_ID) == len(ENTRIES)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if not e.skip], ids=lambda e: e.id)
def test_entry_runs_the_readme_line(entry: Entry) -> None:
    """What runs is the README's command with its options: the same command words, every option it shows."""
    shown = _options(entry.line)
    used = set().union(*(_options(run) for run in entry.runs))
    assert shown <= used, f"{entry.id}: README options not exercised: {sorted(shown - used)}"
    for run in entry.runs:
        assert _command_words(run)[:3] == _command_words(entry.line)[:3], run
    assert all(need in BY_ID or need in PREPARATIONS for need in entry.needs)


class Workspace:
    """A temporary directory where README commands run, each entry at most once, needs first."""

    def __init__(self, root: Path, small_dump: Path, openai_url: str) -> None:
        self.root = root
        (root / "data").symlink_to(ROOT / "data")
        (root / "configs").symlink_to(ROOT / "configs")
        self.values = {
            "venv": str(BIN.parent),
            "small_dump": str(small_dump),
            "port": str(_free_port()),
            "hybrid_port": str(_free_port()),
            "sim_port": str(_free_port()),
            "openai_url": openai_url,
        }
        self.outputs: dict[str, list[subprocess.CompletedProcess[str]]] = {}
        self.servers: list[subprocess.Popen[str]] = []

    def ensure(self, name: str) -> list[subprocess.CompletedProcess[str]]:
        if name in PREPARATIONS:
            if name not in self.outputs:
                PREPARATIONS[name](self)
                self.outputs[name] = []
            return self.outputs[name]
        if name not in self.outputs:
            entry = BY_ID[name]
            for need in entry.needs:
                self.ensure(need)
            self.outputs[name] = self._start(entry) if entry.serve else [self._run(r) for r in entry.runs]
        return self.outputs[name]

    def argv(self, run: str) -> list[str]:
        argv = shlex.split(run.format_map(self.values))
        return [str(BIN / "ramp"), *argv[1:]] if argv[0] == "ramp" else argv

    def _run(self, run: str) -> subprocess.CompletedProcess[str]:
        argv = self.argv(run)
        cwd = ROOT if argv[0] == "make" else self.root
        if argv[0] == "make":  # the Makefile's paths are relative to the repository
            argv = [a.replace("DEMO_OUT=runs/", f"DEMO_OUT={self.root}/runs/") for a in argv]
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert done.returncode == 0, (
            f"{run}\nexit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
        return done

    def _start(self, entry: Entry) -> list[subprocess.CompletedProcess[str]]:
        log = open(self.root / f"{entry.id}.log", "w")  # noqa: SIM115 - the server writes to it until teardown
        server = subprocess.Popen(self.argv(entry.runs[0]), cwd=self.root, stdout=log, stderr=log, text=True)
        self.servers.append(server)
        url = f"http://127.0.0.1:{self.values[entry.port]}/health"
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            assert server.poll() is None, (self.root / f"{entry.id}.log").read_text()[-3000:]
            try:
                health = httpx.get(url, timeout=2).json()
                return [subprocess.CompletedProcess(entry.runs, 0, json.dumps(health), "")]
            except httpx.HTTPError:
                time.sleep(0.5)
        raise AssertionError(f"{entry.id}: no answer on {url}")

    def close(self) -> None:
        for server in self.servers:
            server.terminate()
            server.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _few_samples(ws: Workspace) -> None:
    """The first 4 answerable samples, the input of the LLM-teacher lines (each sample costs model calls)."""
    ws.ensure("answerability")
    files = sorted((ws.root / "runs/answerable").glob("samples-*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files]).slice(0, 4)
    assert table.num_rows == 4
    out = ws.root / "runs/few"
    out.mkdir(parents=True)
    pq.write_table(table, out / "samples-00000-of-00001.parquet")


def _checkpoint(ws: Workspace) -> None:
    """``ckpt/``: a tiny random Qwen2 and its tokenizer, saved like any HF checkpoint."""
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(ws.root / "ckpt")
    tokenizer.save_pretrained(ws.root / "ckpt")


def _tiny_corpus(ws: Workspace) -> None:
    """``runs/wiki18-tiny.jsonl``: the first 24 passages of the wiki-18 sample."""
    lines = (ROOT / "data/wiki18-sample-1000.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    (ws.root / "runs").mkdir(exist_ok=True)
    (ws.root / "runs/wiki18-tiny.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _rows(directory: Path) -> list[dict[str, Any]]:
    return [row for f in sorted(directory.glob("samples-*.parquet")) for row in pq.read_table(f).to_pylist()]


def _facts(ws: Workspace) -> None:
    """The hand-made corpus of ``tests/facts_corpus.py``, its index, its seed questions and its queries."""
    out = ws.root / "runs/facts"
    out.mkdir(parents=True)
    build_index([write_corpus(out / "corpus.jsonl")], ws.root / "runs/index/facts", threads=1, progress=False)
    write_jsonl(out / "seeds.jsonl", SEEDS, extra_lines=("not json",))
    write_jsonl(
        out / "queries.jsonl", [{"id": i, "question": q, "golden_answers": [a]} for i, q, a in QUERIES]
    )


PREPARATIONS: dict[str, Callable[[Workspace], None]] = {
    "few": _few_samples,
    "ckpt": _checkpoint,
    "tiny-corpus": _tiny_corpus,
    "facts": _facts,
}


class OracleTeacher:
    """Planner and rewriter search the sample's first words; the observer answers the right fills."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, path: str, body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        if described := re.search(
            r"Passage: (.*)\n(.*)\n\nWrite a short description of (.*?) (?:\(|that )", prompt
        ):
            title, text, entity = described.groups()  # an E2HQA rewrite: the rules stand in for an LLM
            return (rule_descriptions(entity, Hit("", title, text, 0.0), None) or ["the subject"])[0]
        if simulated := re.search(r"Query: (.*)\n(Useful|Noisy) Output:", prompt):  # a simulated search
            return f"Doc 1 (Title: {simulated.group(1)}): A {simulated.group(2).lower()} page about it."
        rows = _rows(self.root / "runs/few")
        row = next(r for r in rows if r["masked_passage"] in prompt)
        query = " ".join(row["masked_passage"].replace("[mask]", " ").split()[:12])
        if "observer" not in prompt.lower():
            return f"<think>Find the masked spans.</think>\n<search>{query}</search>"
        fills = "\n".join(f"[{i}] {fill}" for i, fill in enumerate(row["answers"], start=1))
        return f"<think>The results name them.</think>\n<answer>\n{fills}\n</answer>"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, small_enwiki_dump: Path) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("readme")
    with ScriptedOpenAIServer(OracleTeacher(root)) as teacher:
        ws = Workspace(root, small_enwiki_dump, teacher.base_url)
        try:
            yield ws
        finally:
            ws.close()


@pytest.mark.slow  # the README's whole pipeline on a 200-passage dump: about two minutes on 2 cores
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.id)
def test_readme_command(entry: Entry, workspace: Workspace) -> None:
    if entry.skip:
        pytest.skip(entry.skip)
    results = workspace.ensure(entry.id)
    output = "".join(r.stdout + r.stderr for r in results)
    for text in entry.says:
        assert text in output, f"{entry.id}: {text!r} not in output:\n{output[-3000:]}"
    for pattern in entry.writes:
        assert list(workspace.root.glob(pattern)), f"{entry.id}: nothing matches {pattern}"
    for result in results:
        assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_beam_logs_go_to_a_file(workspace: Workspace) -> None:
    """Two workers: the SDK harness's INFO lines land in OUTPUT/logs/, the console keeps the table."""
    (build,) = workspace.ensure("data-build")
    assert "INFO" not in build.stderr and "sdk_worker" not in build.stderr, build.stderr[-2000:]
    log = (workspace.root / SAMPLES / "logs/data-build.log").read_text()
    assert "sdk_worker" in log


def test_megatron_warnings_go_to_a_file(workspace: Workspace) -> None:
    """`ramp pretrain train`: megatron's and torch's start-up warnings land in logs/pretrain-train.log beside
    the checkpoints; the console keeps the progress bar and the summary."""
    (train,) = workspace.ensure("pretrain-train")
    assert "Apex" not in train.stderr and "Warning" not in train.stderr, train.stderr[-2000:]
    assert "pretrain-train.log" in train.stderr
    log = (workspace.root / "runs/pretrain/logs/pretrain-train.log").read_text()
    assert "Apex is not installed" in log


def test_answerability_over_http_keeps_exactly_what_the_index_keeps(workspace: Workspace) -> None:
    """Issue 14: ``--retriever-url`` against ``ramp serve-retriever`` = ``--index`` on the same index."""
    workspace.ensure("answerability")

    def kept(directory: str) -> dict[str, list[tuple[bool, int]]]:
        rows = _rows(workspace.root / directory)
        return {r["sample_id"]: [(m["answerable"], m["answer_rank"]) for m in r["masks"]] for r in rows}

    by_index, by_url = kept("runs/answerable"), kept("runs/answerable-http")
    assert len(by_index) >= 10
    assert by_url == by_index
    stats = [
        json.loads((workspace.root / d / "stats.json").read_text())
        for d in ("runs/answerable", "runs/answerable-http")
    ]
    assert stats[0]["kept"] == stats[1]["kept"] == len(by_index)
