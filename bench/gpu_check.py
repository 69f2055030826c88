"""One check of every GPU path (`make gpu-check`), one JSON report; under 8 minutes on one H200.

Parts (each in its own process, with its own time limit; a failure is reported with its error, never
hidden, and the other parts still run):

- ``megatron_bf16``: ``ramp pretrain train`` on the Qwen2.5-0.5B shape (random init), bf16, megatron's
  distributed optimizer and full recompute: losses, tokens/s, MFU;
- ``parity``: HF ↔ Megatron logits of the 0.5B shape on the GPU (fp32, TF32 off; ``ramp pretrain
  convert hf-to-mcore``'s checkpoint), max |Δlogit|;
- ``throughput``: tokens/s and MFU of megatron vs the plain transformers loop, same rows (was
  ``bench/bench_pretrain_gpu.py``; targets ratio ≥ 1.3, MFU ≥ 40%);
- ``loss_position_logits``: the DAPO actor's update (``ramp.rl.actor.response_log_probs``) with the output
  layer at every position vs only at loss-carrying positions, 0.5B shape (tokens/s ratio);
- ``dapo_fsdp2``: one ``ramp rl train`` step with the HF engine on CUDA (QA task, tiny sizes), and the
  policy sharded with FSDP2 (the trainer's ``shard``) on a one-GPU process group: loss and gradient norm
  equal to the unsharded policy's;
- ``eval``: ``ramp eval run`` on the GPU (hf backend) on 8 bundled HotpotQA questions;
- ``vllm``, ``transformer_engine``: reported ``skipped`` with the reason (their wheels cannot travel).

The GPU machine has no network and lacks some packages: ``--download-wheels DIR`` (``make gpu-wheels``, on a
machine with the registries) puts their Python 3.12 manylinux wheels (``requirements/gpu-check.txt``), a
wheel of this project and the check's data (a tokenizer and ``ramp pretrain prepare`` shards of the
bundled sample, made by the project's own Beam job) in DIR, under 64 MiB; ``--wheels DIR`` installs them
with no index into DIR/site, which the parts put first on their path. Without a GPU the check says so in
one line and exits 0.

    python bench/gpu_check.py --wheels .gpu-wheels --report runs/gpu-check/report.json
    python bench/gpu_check.py --download-wheels .gpu-wheels
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements" / "gpu-check.txt"
WHEEL_BUDGET_BYTES = 64 * 2**20
PYTHON_VERSION = "3.12"
PROJECT_COPY_IGNORES = (
    ".git",
    ".venv*",
    ".gpu-wheels",
    "runs",
    "build",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
SEQ_LENGTH = 4096
SHAPE_05B = dict(  # Qwen2.5-0.5B
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    vocab_size=151_936,
    max_position_embeddings=32_768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
)
SKIPPED = {
    "vllm": "vLLM's wheels (vllm and its CUDA kernels, several hundred MB) cannot travel under the 64 MiB "
    "wheel budget and the GPU image has no vLLM; its CPU-side tests: tests/test_backends.py",
    "transformer_engine": "Transformer Engine's wheels (over 1 GB with their CUDA libraries) cannot travel "
    "under the 64 MiB wheel budget and the GPU image has no TE; megatron runs the local spec "
    "(ramp.train.model picks TE's spec only when it imports)",
}
TIME_LIMITS_S = {  # per part: 435 s in all, under 8 minutes with the install (about 15 s)
    "megatron_bf16": 75,
    "parity": 65,
    "throughput": 110,
    "loss_position_logits": 60,
    "dapo_fsdp2": 75,
    "eval": 50,
}
PARTS = (*TIME_LIMITS_S, *SKIPPED)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report", type=Path, default=Path("runs/gpu-check/report.json"))
    parser.add_argument("--wheels", type=Path, help="Folder made by --download-wheels: install from it.")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="Run only these parts.")
    parser.add_argument("--steps", type=int, default=12, help="Training steps per timed run.")
    parser.add_argument("--download-wheels", type=Path, metavar="DIR", help="Fill DIR for the GPU machine.")
    parser.add_argument("--part", choices=tuple(TIME_LIMITS_S), help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 3:
        parser.error("--steps must be >= 3 (the first step is excluded from timings)")
    return args


# ----------------------------------------------------------------------------------------------------
# Wheels and data for the GPU machine (run where the registries are).


def requirements(path: Path = REQUIREMENTS) -> list[str]:
    """The pinned packages of ``requirements/gpu-check.txt``."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    pins = [line for line in lines if line]
    unpinned = [p for p in pins if "==" not in p]
    if unpinned:
        raise ValueError(f"{path}: pin every package with == ({', '.join(unpinned)})")
    return pins


def download_command(dest: Path, pins: Sequence[str]) -> list[str]:
    """``pip download`` of exactly ``pins`` as Python 3.12 manylinux x86_64 binary wheels, no dependencies."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(dest),
    ]
    command += ["--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp312"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return [*command, *pins]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def download_wheels(dest: Path) -> int:
    """Wheels, this project's wheel and the data into ``dest`` (replaced); its size, within the budget."""
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "data").mkdir(parents=True)
    subprocess.run(download_command(dest, requirements()), check=True)
    with tempfile.TemporaryDirectory() as tmp:  # a clean copy: no stale build/ of an earlier build
        source = Path(tmp) / "ramp"
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*PROJECT_COPY_IGNORES))
        wheel = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dest),
        ]
        subprocess.run([*wheel, str(source)], check=True)
    prepare_data(dest / "data")
    size = folder_bytes(dest)
    if size > WHEEL_BUDGET_BYTES:
        raise SystemExit(f"{dest} holds {size / 2**20:.1f} MiB, over the 64 MiB budget")
    print(f"{dest}: {size / 2**20:.1f} MiB")
    return size


def prepare_data(out: Path, trajectories: int = 600) -> None:
    """A Qwen-style tokenizer with the 0.5B config (``hf/``, no weights) and its shards (``shards/``)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pretrain_helpers import make_trajectories, qwen_style_tokenizer, write_trajectories
    from ramp.pretrain.prepare import run_prepare
    from transformers import Qwen2Config

    from ramp.config import load_config
    from ramp.train.config import PretrainConfig

    Qwen2Config(**SHAPE_05B).save_pretrained(out / "hf")
    qwen_style_tokenizer().save_pretrained(out / "hf")
    config = load_config(
        PretrainConfig,
        "pretrain",
        values={"prepare.seq_length": SEQ_LENGTH, "prepare.num_shards": 1, "model.hf": str(out / "hf")},
    )
    with tempfile.TemporaryDirectory() as tmp:
        source = write_trajectories(make_trajectories(trajectories), Path(tmp) / "trajectories")
        run_prepare(source, out / "shards", config)


def install_command(wheels: Path) -> list[str]:
    """Install the folder's wheels (pins and this project) into ``wheels/site``: no index, no dependencies."""
    project = sorted(wheels.glob("ramp-*.whl"))
    if not project:
        raise FileNotFoundError(f"{wheels} has no ramp-*.whl: run `make gpu-wheels` where the registries are")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--upgrade"]
    command += ["--find-links", str(wheels), "--target", str(wheels / "site")]
    return [*command, *requirements(), str(project[-1])]


# ----------------------------------------------------------------------------------------------------
# The report.


def run_parts(
    parts: Sequence[str],
    work: Path,
    env: dict[str, str],
    steps: int,
    runner: Callable[..., Any] = subprocess.run,
) -> dict[str, dict[str, Any]]:
    """Each part in a child process with its time limit; skipped parts with their reason."""
    results: dict[str, dict[str, Any]] = {}
    for part in parts:
        if part in SKIPPED:
            results[part] = {"status": "skipped", "reason": SKIPPED[part]}
            continue
        result = work / f"{part}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--work", str(work)]
        command += ["--result", str(result), "--steps", str(steps)]
        began = time.perf_counter()
        try:
            done = runner(command, env=env, capture_output=True, text=True, timeout=TIME_LIMITS_S[part])
            failed = done.returncode != 0 or not result.exists()
            tail = (done.stderr or done.stdout or "")[-2000:]
        except subprocess.TimeoutExpired:
            failed, tail = True, f"over its {TIME_LIMITS_S[part]} s limit"
        seconds = round(time.perf_counter() - began, 1)
        if failed:
            results[part] = {"status": "failed", "seconds": seconds, "error": tail}
        else:
            figures = json.loads(result.read_text())
            results[part] = {
                "status": "ok" if figures.pop("ok", True) else "failed",
                "seconds": seconds,
                **figures,
            }
    return results


def write_report(path: Path, gpu: str, parts: dict[str, dict[str, Any]], started: float) -> dict[str, Any]:
    report = {
        "gpu": gpu,
        "seconds": round(time.perf_counter() - started, 1),
        "ok": all(p["status"] != "failed" for p in parts.values()),
        "parts": parts,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.download_wheels:
        download_wheels(args.download_wheels)
        return 0
    if args.part:
        figures = PART_FUNCTIONS[args.part](args.work, args.steps)
        args.result.write_text(json.dumps(figures), encoding="utf-8")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check")
        return 0
    started = time.perf_counter()
    env = dict(os.environ)
    if args.wheels:
        subprocess.run(install_command(args.wheels), check=True)
        env["PYTHONPATH"] = os.pathsep.join([str(args.wheels / "site"), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        env["RAMP_GPU_CHECK_DATA"] = str(args.wheels / "data")
    with tempfile.TemporaryDirectory(prefix="ramp-gpu-check-") as tmp:
        env["MLFLOW_TRACKING_URI"] = (Path(tmp) / "mlruns").as_uri()  # no sqlite store needed on the image
        parts = run_parts(args.only or PARTS, Path(tmp), env, args.steps)
    report = write_report(args.report, torch.cuda.get_device_name(), parts, started)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if report["ok"] else 1


# ----------------------------------------------------------------------------------------------------
# The parts (run in child processes on the GPU machine).


def _data() -> Path:
    data = Path(os.environ.get("RAMP_GPU_CHECK_DATA", ROOT / ".gpu-wheels" / "data"))
    if not (data / "shards").is_dir():
        raise FileNotFoundError(f"no check data in {data}: run `make gpu-wheels` and pass --wheels")
    return data


def _hf_05b(work: Path) -> Path:
    """The 0.5B shape, random init, with the check's tokenizer (saved once per check)."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf = work / "hf"
    if not (hf / "model.safetensors").exists():
        shutil.copytree(_data() / "hf", hf, dirs_exist_ok=True)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(hf)).save_pretrained(hf)
    return hf


def pretrain_values(data: Path, hf: Path, work: Path, name: str, steps: int) -> dict[str, Any]:
    """``ramp pretrain train``'s settings for a timed 0.5B run (bf16, seq 4096, micro 2, global 16)."""
    return {
        "prepare.seq_length": SEQ_LENGTH,
        "data.blend": ["1.0", str(data / "shards")],
        "model.hf": str(hf),
        "model.init": "random",
        "optim.warmup_steps": 2,
        "optim.lr": 3e-4,
        "train.steps": steps,
        "train.micro_batch_size": 2,
        "train.global_batch_size": 16,
        "train.precision": "bf16",
        "train.seed": 0,
        "checkpoint.dir": str(work / f"ckpt-{name}"),
        "checkpoint.save_interval": 10**6,
        "checkpoint.resume": False,
        "tracking.log_interval": 1,
        "tracking.run_name": name,
    }


def _pretrain_config(work: Path, name: str, steps: int, **values: Any) -> Any:
    from ramp.config import load_config
    from ramp.train.config import PretrainConfig

    settings = {**pretrain_values(_data(), _hf_05b(work), work, name, steps), **values}
    return load_config(PretrainConfig, "pretrain", values=settings)


def _mfu(tokens_per_s: float, config: Any) -> float:
    import torch
    from transformers import AutoConfig

    from ramp.train.flops import peak_flops, train_flops_per_token
    from ramp.train.model import Qwen2Shape

    shape = Qwen2Shape.from_hf(AutoConfig.from_pretrained(config.model.hf))
    peak = peak_flops(torch.cuda.get_device_name()) or math.nan
    return round(tokens_per_s * train_flops_per_token(shape, SEQ_LENGTH) / peak, 4)


def part_megatron_bf16(work: Path, steps: int) -> dict[str, Any]:
    from ramp.pretrain.train import run_training

    config = _pretrain_config(
        work,
        "megatron-bf16",
        steps,
        **{"parallel.use_distributed_optimizer": True, "parallel.recompute": True},
    )
    summary = run_training(config)
    losses = [summary["losses"][step] for step in sorted(summary["losses"])]
    return {
        "ok": all(math.isfinite(x) for x in losses) and losses[-1] < losses[0],
        "losses": [round(x, 4) for x in losses],
        "tokens_per_s": round(summary["tokens_per_s"], 1),
        "mfu": _mfu(summary["tokens_per_s"], config),
        "settings": "bf16, distributed optimizer, full recompute, seq 4096, micro 2, global 16",
    }


def part_parity(work: Path, steps: int) -> dict[str, Any]:
    import torch
    from ramp.pretrain.convert import _parallel, fixed_input, hf_to_mcore, load_hf, mcore_logits

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    hf_dir = _hf_05b(work)
    ckpt = hf_to_mcore(hf_dir, work / "mcore")
    hf = load_hf(hf_dir).cuda()
    ids = fixed_input(hf.config.vocab_size, batch=2, length=256).cuda()
    with torch.no_grad():
        reference = hf(ids).logits.float()
    del hf
    with _parallel():
        logits = mcore_logits(ckpt, ids)
    diff = float((logits - reference).abs().max())
    return {"ok": diff <= 1e-3, "max_abs_logit_diff": diff, "tolerance": 1e-3, "precision": "fp32, TF32 off"}


def _transformers_loop(config: Any) -> float:
    """Plain transformers training (bf16 autocast over fp32 weights, fused AdamW) on the shards' rows;
    non-pad tokens/s, first step excluded."""
    import torch
    from transformers import AutoModelForCausalLM

    from ramp.train.shards import build_train_dataset

    cfg = config.train
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(
        config.model.hf, attn_implementation="sdpa", dtype=torch.float32
    )
    model.cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, fused=True)
    dataset = build_train_dataset(config.data.blend, SEQ_LENGTH, cfg.steps * cfg.global_batch_size, cfg.seed)
    tokens = seconds = 0.0
    for step in range(cfg.steps):
        began = time.perf_counter()
        rows = [dataset[step * cfg.global_batch_size + i] for i in range(cfg.global_batch_size)]
        count = sum(float(r["loss_mask"].sum()) for r in rows)
        for start in range(0, len(rows), cfg.micro_batch_size):
            batch = rows[start : start + cfg.micro_batch_size]
            ids = torch.stack([r["tokens"] for r in batch]).cuda()
            labels = torch.stack([r["labels"] for r in batch]).cuda()
            mask = torch.stack([r["loss_mask"] for r in batch]).cuda()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                logits = model(input_ids=ids).logits
            per_token = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), labels.flatten(), reduction="none"
            )
            ((per_token * mask.flatten()).sum() / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step:
            tokens += sum(float((r["segment_ids"] >= 0).sum()) for r in rows)
            seconds += time.perf_counter() - began
    del model, optimizer
    torch.cuda.empty_cache()
    return tokens / seconds


def _actor_update(config: Any, loss_positions_only: bool) -> float:
    """The DAPO actor's log-probs (``ramp.rl.actor.response_log_probs``), forward and backward with an
    AdamW step, bf16 policy, on the shards' rows (their loss mask as the sampled tokens); tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM

    from ramp.rl.actor import Batch, response_log_probs
    from ramp.train.shards import build_train_dataset

    cfg = config.train
    model = AutoModelForCausalLM.from_pretrained(config.model.hf, dtype=torch.bfloat16).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    dataset = build_train_dataset(config.data.blend, SEQ_LENGTH, cfg.steps * cfg.global_batch_size, cfg.seed)
    tokens = seconds = 0.0
    for step in range(cfg.steps):
        began = time.perf_counter()
        rows = [dataset[step * cfg.global_batch_size + i] for i in range(cfg.global_batch_size)]
        for start in range(0, len(rows), cfg.micro_batch_size):
            part = rows[start : start + cfg.micro_batch_size]
            ids = torch.stack([r["tokens"] for r in part]).cuda()
            mask = torch.stack([r["loss_mask"] for r in part]).cuda().float()[:, :-1]
            batch = Batch(ids, torch.ones_like(ids), mask, torch.ones(len(part), device="cuda"))
            log_probs, _ = response_log_probs(model, batch, 1.0, loss_positions_only=loss_positions_only)
            (-(log_probs * mask).sum() / mask.sum().clamp(min=1.0)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step:
            tokens += sum(float((r["segment_ids"] >= 0).sum()) for r in rows)
            seconds += time.perf_counter() - began
    del model, optimizer
    torch.cuda.empty_cache()
    return tokens / seconds


def part_throughput(work: Path, steps: int) -> dict[str, Any]:
    from ramp.pretrain.train import run_training

    config = _pretrain_config(  # logits everywhere, as the transformers loop computes them
        work, "throughput", steps, **{"parallel.use_distributed_optimizer": True, "train.logits": "all"}
    )
    baseline = _transformers_loop(config)
    ours = float(run_training(config)["tokens_per_s"])
    return {
        "ok": True,
        "transformers_tokens_per_s": round(baseline, 1),
        "megatron_tokens_per_s": round(ours, 1),
        "ratio": round(ours / baseline, 3),
        "megatron_mfu": _mfu(ours, config),
        "transformers_mfu": _mfu(baseline, config),
        "targets": "ratio >= 1.3, megatron MFU >= 0.40",
    }


def part_loss_position_logits(work: Path, steps: int) -> dict[str, Any]:
    config = _pretrain_config(work, "positions", steps)
    full = _actor_update(config, loss_positions_only=False)
    positions = _actor_update(config, loss_positions_only=True)
    return {
        "ok": True,
        "full_logits_tokens_per_s": round(full, 1),
        "loss_position_logits_tokens_per_s": round(positions, 1),
        "speedup": round(positions / full, 3),
        "settings": "the DAPO actor's log-probs, bf16 policy, the shards' loss mask as sampled tokens",
    }


class PassageBM25:
    """BM25 (k1 0.9, b 0.4) over the bundled wiki-18 sample, in memory: the check's retriever, served by
    ``ramp.retrieval.server`` (the GPU image has no Java for Lucene)."""

    def __init__(self, corpus: Path, k1: float = 0.9, b: float = 0.4) -> None:
        import re
        from collections import Counter

        from ramp.retrieval.lucene import split_contents

        self._words = re.compile(r"\w+")
        self.docs = []
        for line in corpus.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            title, text = split_contents(row["contents"])
            self.docs.append((str(row["id"]), title, text, Counter(self._terms(row["contents"]))))
        self.avg = sum(sum(d[3].values()) for d in self.docs) / len(self.docs)
        frequency = Counter(t for d in self.docs for t in d[3])
        self.idf = {t: math.log(1 + (len(self.docs) - n + 0.5) / (n + 0.5)) for t, n in frequency.items()}
        self.k1, self.b = k1, b

    def _terms(self, text: str) -> list[str]:
        return self._words.findall(text.lower())

    def search(self, queries: Sequence[str], k: int = 5, exclude_doc_ids: Any = None) -> list[list[Any]]:
        from ramp.retrieval.base import Hit

        out = []
        for i, query in enumerate(queries):
            excluded = set(exclude_doc_ids[i]) if exclude_doc_ids else set()
            scored = []
            for doc_id, title, text, counts in self.docs:
                if doc_id in excluded:
                    continue
                length = sum(counts.values())
                score = sum(
                    self.idf.get(t, 0.0) * counts[t] * (self.k1 + 1)
                    / (counts[t] + self.k1 * (1 - self.b + self.b * length / self.avg))
                    for t in set(self._terms(query)) if t in counts
                )  # fmt: skip
                if score > 0:
                    scored.append(Hit(doc_id, title, text, score))
            out.append(sorted(scored, key=lambda h: (-h.score, h.doc_id))[:k])
        return out

    def close(self) -> None:
        pass


def _serve_retriever() -> str:
    import socket

    import uvicorn

    from ramp.retrieval.config import ServerConfig
    from ramp.retrieval.server import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    app = create_app(PassageBM25(ROOT / "data" / "wiki18-sample-1000.jsonl"), ServerConfig())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return url
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError("the check's retriever did not start")


def _questions(work: Path, n: int = 8) -> Path:
    lines = (ROOT / "data" / "hotpotqa-dev-500.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    path = work / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rl_values(hf: Path, url: str, questions: Path, out: Path) -> dict[str, Any]:
    """One ``ramp rl train`` step on the GPU: QA task, 4 prompts x 4 rollouts of a few tokens."""
    return {
        "policy.model": str(hf),
        "policy.dtype": "bfloat16",
        "retriever": {"kind": "http", "url": url},
        "data.task": "qa",
        "data.qa": str(questions),
        "trainer.output_dir": str(out),
        "trainer.progress": False,
        "trainer.total_steps": 1,
        "trainer.train_batch_size": 4,
        "trainer.gen_batch_size": 4,
        "trainer.mini_batches": 1,
        "trainer.micro_batch_size": 4,
        "rollout.n": 4,
        "rollout.max_turns": 2,
        "rollout.max_new_tokens_per_turn": 32,
        "rollout.max_total_new_tokens": 64,
        "algorithm.filter_groups": False,
    }


def part_dapo_fsdp2(work: Path, steps: int) -> dict[str, Any]:
    import torch
    import torch.distributed as dist
    from ramp.finetune.dapo import train as dapo_train

    from ramp.config import load_config
    from ramp.rl.config import RLConfig
    from ramp.rl.distributed import shard

    url = _serve_retriever()
    hf = _hf_05b(work)
    values = rl_values(hf, url, _questions(work), work / "rl")
    began = time.perf_counter()
    dapo_train(load_config(RLConfig, "rl", values=values))
    step_s = time.perf_counter() - began
    history = [json.loads(line) for line in (work / "rl" / "history.jsonl").read_text().splitlines()]

    # FSDP2 on CUDA (a one-GPU process group): sharded and plain policy give the same loss and gradient norm
    dist.init_process_group("nccl", init_method=f"file://{work / 'store'}", rank=0, world_size=1)
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 1000, (2, 512), generator=torch.Generator().manual_seed(0)).cuda()

    def loss_and_norm(sharded: bool) -> tuple[float, float]:
        model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).cuda()
        if sharded:
            model = shard(model)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
        return float(loss), float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    plain, sharded = loss_and_norm(False), loss_and_norm(True)
    dist.destroy_process_group()
    return {
        "ok": abs(plain[0] - sharded[0]) < 1e-4 and abs(plain[1] - sharded[1]) < 1e-3 * max(1.0, plain[1]),
        "dapo_step_s": round(step_s, 1),
        "dapo_metrics": {
            k: v for k, v in history[-1].items() if k.startswith(("reward/", "actor/", "time/"))
        },
        "fsdp2_loss": [plain[0], sharded[0]],
        "fsdp2_grad_norm": [plain[1], sharded[1]],
    }


def eval_overrides(hf: Path, url: str, questions: Path) -> list[str]:
    """``ramp eval run`` on the GPU: the hf backend in bf16, two short turns per question."""
    return [
        f"agent.backend.hf.model={hf}",
        "agent.backend.hf.device=cuda",
        "agent.backend.hf.dtype=bfloat16",
        "agent.rollout.max_new_tokens_per_turn=64",
        "agent.rollout.max_total_new_tokens=128",
        "agent.rollout.max_turns=2",
        "retriever.kind=http",
        f"retriever.url={url}",
        f"datasets=[{{name: hotpotqa, path: {questions}}}]",
        "run_name=gpu-check",
    ]


def part_eval(work: Path, steps: int) -> dict[str, Any]:
    url = _serve_retriever()
    out = work / "eval"
    command = [sys.executable, "-m", "ramp", "eval", "run", "--config", "eval", "--output", str(out)]
    for item in eval_overrides(_hf_05b(work), url, _questions(work)):
        command += ["--set", item]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "predictions.parquet").num_rows
    return {"ok": rows == 8, "questions": rows, "seconds": round(time.perf_counter() - began, 1)}


PART_FUNCTIONS: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "megatron_bf16": part_megatron_bf16,
    "parity": part_parity,
    "throughput": part_throughput,
    "loss_position_logits": part_loss_position_logits,
    "dapo_fsdp2": part_dapo_fsdp2,
    "eval": part_eval,
}


if __name__ == "__main__":
    sys.exit(main())
