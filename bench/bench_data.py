"""Benchmark: the masking pipeline end to end vs bare spaCy ``nlp.pipe`` on the same passages.

Input: the bundled XML sample's articles as plain-text article JSONL (``--format jsonl``), repeated with
distinct ids and titles until at least ``--passages`` passages. The pipeline reads, splits, runs NER, masks
and writes Parquet; the baseline runs ``nlp.pipe`` over the same passage texts with the same model and
components, in this process. Reports passages/s per core for both, their ratio, and the 1 -> 2 process
speed-up. Targets: pipeline >= 0.85x bare spaCy per core, >= 1.8x from 1 to 2 processes.

Per core is measured two ways: wall time (true on a quiet machine) and CPU time (passages per CPU-second of
this process and its finished children, the Beam workers), which other load on the machine barely moves.

    python bench/bench_data.py                    # 20,000 passages, 1 and 2 workers
    python bench/bench_data.py --passages 1000    # quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from ramp.pipelines.ramp_data import load_data_config, run_build
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


def bare_spacy(texts: list[str], model: str, batch_size: int, drop_idle_tok2vec: bool) -> tuple[float, float]:
    """Passages per wall second and per CPU second of plain ``nlp.pipe`` (one process)."""
    nlp = load_nlp(model, drop_idle_tok2vec=drop_idle_tok2vec)
    start, cpu = time.perf_counter(), cpu_seconds()
    for _ in tqdm(nlp.pipe(texts, batch_size=batch_size), total=len(texts), desc=f"spaCy {nlp.pipe_names}"):
        pass
    return len(texts) / (time.perf_counter() - start), len(texts) / (cpu_seconds() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--passages", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    config = load_data_config(None, "jsonl", [])
    with tempfile.TemporaryDirectory(prefix="ramp-bench-") as tmp:
        source = Path(tmp) / "articles.jsonl"
        texts = make_input(source, args.passages, config.split.target_words, config.split.hard_cap_words)
        print(f"{len(texts)} passages, {sum(len(t.split()) for t in texts)} words")
        bare, bare_cpu = bare_spacy(texts, config.spans.spacy_model, config.spans.batch_size, True)
        bare_full, _ = bare_spacy(texts, config.spans.spacy_model, config.spans.batch_size, False)
        print(
            f"bare spaCy (ner): {bare:.1f} passages/s/core ({bare_cpu:.1f} per CPU-second); "
            f"with the idle tok2vec: {bare_full:.1f}"
        )
        per_core: dict[int, float] = {}
        per_cpu: dict[int, float] = {}
        for workers in args.workers:
            start, cpu = time.perf_counter(), cpu_seconds()
            stats = run_build([str(source)], f"{tmp}/out-{workers}", config, workers)
            elapsed = time.perf_counter() - start
            assert stats["input_records"] == stats["samples"] + stats["rejected"] == len(texts)
            per_core[workers] = len(texts) / elapsed / workers
            per_cpu[workers] = len(texts) / (cpu_seconds() - cpu)
            print(
                f"pipeline, {workers} worker(s): {len(texts) / elapsed:.1f} passages/s, "
                f"{per_core[workers]:.1f} /s/core = {per_core[workers] / bare:.2f}x bare spaCy per core "
                f"({per_core[workers] / bare_full:.2f}x tok2vec+ner); per CPU-second "
                f"{per_cpu[workers]:.1f} = {per_cpu[workers] / bare_cpu:.2f}x bare spaCy"
            )
    scaling = ""
    if 1 in per_core and 2 in per_core:
        scaling = f", 1->2 processes speed-up {2 * per_core[2] / per_core[1]:.2f}x (target >= 1.8)"
    figures = ", ".join(
        f"{w}w {per_core[w] / bare:.2f}x (CPU time {per_cpu[w] / bare_cpu:.2f}x)" for w in sorted(per_core)
    )
    print(f"SUMMARY passages={len(texts)} bare={bare:.1f}/s/core pipeline/bare per core: {figures}{scaling}")


if __name__ == "__main__":
    main()
