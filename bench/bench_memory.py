"""Peak memory of ``ramp data build`` on the local runner as the corpus grows, chunked vs one pass.

Inputs of 5k, 20k and 80k passages are the bundled wiki-18 sample repeated with distinct ids (DPR JSONL).
Each build runs as its own process (``python -m ramp data build``, 1 worker, default chunk size)
and is measured by the kernel (``wait4``): peak RSS, and CPU seconds, so throughput is passages per CPU
second (per core), which a busy machine disturbs far less than wall time. The baseline, in the same run, is
today's single pass (``--chunk-mb 0``) on the same input. The default config (``k_mix: balanced``) runs each
chunk in two phases (spans, then masks with the corpus-wide counts; ``pipelines.chunks``).

    python bench/bench_memory.py [--sizes 5000 20000 80000] [--baseline-size 20000] [--chunk-mb 4] [--jobs 1]

Targets: the largest size's peak RSS within 15% of the smallest's; chunked throughput per core within 10%
of the single pass on the baseline input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "wiki18-sample-1000.jsonl"


def make_input(path: Path, passages: int) -> None:
    """``passages`` lines: the sample repeated, copy r with ids ``<id>-r<r>``."""
    lines = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as out:
        for n in range(passages):
            row = lines[n % len(lines)]
            copy = {"id": f"{row['id']}-r{n // len(lines)}", "contents": row["contents"]}
            out.write(json.dumps(copy) + "\n")


def measure(source: Path, output: Path, chunk_mb: float | None) -> dict[str, float]:
    """Build ``source`` in a fresh process; its peak RSS (GB), CPU and wall seconds, and stats."""
    command = [sys.executable, "-m", "ramp", "data", "build", "--input", str(source), "--format", "dpr"]
    command += ["--output", str(output), "--workers", "1"]
    if chunk_mb is not None:
        command += ["--chunk-mb", str(chunk_mb)]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    stats = json.loads((output / "stats.json").read_text(encoding="utf-8"))
    assert stats["input_records"] == stats["samples"] + stats["rejected"]
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "passages": stats["passages"],
        "samples": stats["samples"],
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 3),  # Linux reports KB
        "cpu_s": round(cpu, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "passages_per_cpu_s": round(stats["passages"] / cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 80000])
    parser.add_argument("--baseline-size", type=int, default=20000)
    parser.add_argument("--chunk-mb", type=float, default=None, help="default: the jobs' default")
    parser.add_argument("--jobs", type=int, default=1, help="builds measured at the same time (CPU-bound)")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        runs: list[tuple[str, int, Path, float | None]] = []
        for size in sorted({*args.sizes, args.baseline_size}):
            source = Path(tmp) / f"wiki18-{size}.jsonl"
            make_input(source, size)
            runs += [("chunked", size, source, args.chunk_mb)] if size in args.sizes else []
            runs += [("single", size, source, 0.0)] if size == args.baseline_size else []

        def run(name: str, size: int, source: Path, chunk_mb: float | None) -> None:
            result = measure(source, Path(tmp) / f"out-{name}-{size}", chunk_mb)
            results[f"{name}-{size}"] = result
            print(f"{name:8s} {size:>7,d} passages: {json.dumps(result)}", flush=True)

        with ThreadPoolExecutor(args.jobs) as pool:
            for future in [pool.submit(run, *r) for r in runs]:
                future.result()
    smallest, largest = min(args.sizes), max(args.sizes)
    growth = results[f"chunked-{largest}"]["peak_rss_gb"] / results[f"chunked-{smallest}"]["peak_rss_gb"]
    print(f"peak RSS {largest:,d} / {smallest:,d} passages (chunked): {growth:.3f} (target <= 1.15)")
    if f"chunked-{args.baseline_size}" in results:
        chunked = results[f"chunked-{args.baseline_size}"]["passages_per_cpu_s"]
        single = results[f"single-{args.baseline_size}"]["passages_per_cpu_s"]
        print(
            f"throughput per core at {args.baseline_size:,d} passages: chunked {chunked} vs single pass "
            f"{single} passages/CPU-s = {chunked / single:.3f} (target >= 0.90)"
        )
        single_rss = results[f"single-{args.baseline_size}"]["peak_rss_gb"]
        print(f"single-pass peak RSS at {args.baseline_size:,d} passages: {single_rss} GB")


if __name__ == "__main__":
    main()
