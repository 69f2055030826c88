"""Benchmark: the masking pipeline end to end vs bare spaCy ``nlp.pipe`` on the same passages, per core.

Input: the bundled XML sample's articles as plain-text article JSONL (``--format jsonl``), repeated with
distinct ids and titles until at least ``--passages`` passages. The pipeline (``run_build``: read, split,
NER, masks, Parquet, stats and manifest; its own spaCy load included) runs with 1 worker; the baseline runs
``nlp.pipe`` over the same passage texts with the same model and components in this process (a freshly
loaded model each trial, loaded before the clock starts). ``--trials`` interleaved trials (baseline,
pipeline, baseline, pipeline, ...); the report is the median of the trials' ratios, by wall time (true on a
quiet machine) and by CPU time (passages per CPU-second of this process and its finished children, which
other load on the machine moves less), with the load average before and after. Target: pipeline >= 0.95x
bare spaCy per core. ``--workers 1 2`` adds a 2-worker pipeline run per trial and the 1 -> 2 process
speed-up (target >= 1.8x).

    python bench/bench_data.py --passages 3000 --trials 3      # the figure the README quotes
    python bench/bench_data.py --passages 1000 --trials 1      # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ramp.pipelines.ramp_data import load_data_config, run_build
from ramp.pipelines.runner import BeamRun
from tqdm import tqdm

from ramp.data.sources import Article, read_xml
from ramp.data.spans import load_nlp
from ramp.data.splitting import split_passages
from ramp.data.wikitext import wikitext_to_text

XML = Path(__file__).resolve().parent.parent / "data" / "enwiki-sample-106-articles.xml.bz2"


def make_input(path: Path, passages_wanted: int, target_words: int, hard_cap: int) -> list[str]:
    """Write article JSONL with >= ``passages_wanted`` passages; return the passage texts it splits into."""
    with open(XML, "rb") as raw:
        articles = [r for r in read_xml(raw, str(XML)) if isinstance(r, Article)]
    plain = [(a, wikitext_to_text(a.text)) for a in tqdm(articles, desc="wikitext")]
    split = [(a, text, split_passages(text, target_words, hard_cap)) for a, text in plain]
    texts: list[str] = []
    with open(path, "w", encoding="utf-8") as out:
        copy = 0
        while len(texts) < passages_wanted:
            for article, text, pieces in split:
                if len(texts) >= passages_wanted:
                    break
                row = {
                    "id": f"{article.article_id}-{copy}",
                    "title": f"{article.title} ({copy})",
                    "text": text,
                }
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                texts += pieces
            copy += 1
    return texts


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work: Callable[..., object], *args: object) -> tuple[float, float]:
    """Wall and CPU seconds of ``work(*args)``."""
    start, cpu = time.perf_counter(), cpu_seconds()
    work(*args)
    return time.perf_counter() - start, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--passages", type=int, default=3000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    config = load_data_config(None, "jsonl", [])
    load_before = os.getloadavg()
    ratios: dict[int, list[tuple[float, float]]] = {w: [] for w in args.workers}
    rates: dict[str, list[float]] = {"bare": [], **{f"{w}w": [] for w in args.workers}}
    with tempfile.TemporaryDirectory(prefix="ramp-bench-") as tmp:
        source = Path(tmp) / "articles.jsonl"
        texts = make_input(source, args.passages, config.split.target_words, config.split.hard_cap_words)
        n = len(texts)
        print(f"{n} passages, {sum(len(t.split()) for t in texts)} words; load average {load_before}")

        def bare(nlp: Any) -> None:
            for _ in tqdm(nlp.pipe(texts, batch_size=config.spans.batch_size), total=n, desc="bare spaCy"):
                pass

        for trial in range(args.trials):
            # a fresh model each trial, as the pipeline loads its own: a model that has seen the texts
            # (its vocabulary filled) runs about 5% faster
            bare_wall, bare_cpu = timed(bare, load_nlp(config.spans.spacy_model, drop_idle_tok2vec=True))
            rates["bare"].append(n / bare_wall)
            line = (
                f"trial {trial + 1}: bare spaCy {n / bare_wall:.1f} passages/s ({n / bare_cpu:.1f} per CPU-s)"
            )
            for workers in args.workers:
                out = f"{tmp}/out-{trial}-{workers}"
                wall, cpu = timed(run_build, [str(source)], out, config, BeamRun(workers))
                stats = json.loads(Path(out, "stats.json").read_text(encoding="utf-8"))
                assert stats["input_records"] == stats["samples"] + stats["rejected"] == n
                per_core = n / wall / workers
                rates[f"{workers}w"].append(per_core)
                ratios[workers].append((per_core / (n / bare_wall), (n / cpu) / (n / bare_cpu)))
                line += f"; pipeline {workers}w {per_core:.1f}/s/core = {ratios[workers][-1][0]:.2f}x"
                line += f" (CPU time {ratios[workers][-1][1]:.2f}x)"
            print(line, flush=True)
    load_after = os.getloadavg()
    figures = []
    for workers, pairs in ratios.items():
        wall_ratio = statistics.median(r for r, _ in pairs)
        cpu_ratio = statistics.median(r for _, r in pairs)
        figures.append(f"{workers}w {wall_ratio:.2f}x (CPU time {cpu_ratio:.2f}x)")
    scaling = ""
    if 1 in ratios and 2 in ratios:
        speedup = 2 * statistics.median(rates["2w"]) / statistics.median(rates["1w"])
        scaling = f", 1->2 processes speed-up {speedup:.2f}x (target >= 1.8)"
    print(
        f"SUMMARY passages={n} trials={args.trials} bare={statistics.median(rates['bare']):.1f}/s "
        f"pipeline/bare per core (median of trials): {', '.join(figures)}{scaling}; "
        f"load average before {load_before[0]:.1f} after {load_after[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
