"""SimpleDeepSearcher's curation (arXiv 2505.16834): a small SFT set chosen from verified teacher
trajectories (``ramp data curate``), as its response curation chose its 871 from many sampled responses.

Its criteria, in the project's protocol (``process_data/repsonse_curation`` of its release):

1. **Format** (per trajectory): verified, and its assistant turn well formed (``format_reward``: the
   release checks its special tokens and turn structure); no think block over ``max_think_words`` words
   (the release: first and longest reasoning segment < 300 words), no hesitation word ("alternatively",
   "hmm", "wait") more than ``max_hesitations`` times in one think block (≤ 3), the model's text at most
   ``max_words`` words (3000), no 3-gram over ``max_ngram_share`` of the text's 3-grams (0.3: a
   repetition loop).
2. **Searches**: between ``min_searches`` and ``max_searches``; at least ``min_distinct_results`` of the
   documents shown over its searches distinct (the release: > 9.5 distinct URLs per search of 10, i.e.
   searches that do not repeat each other's results).
3. **One per question**: the valid trajectory with the fewest searches (then the fewest words).
4. **Difficulty**: a question every draft of which was verified (solve rate 1, from the builder's
   ``rejected-*.jsonl``: drafts rejected ``not_verified``) is dropped with probability ``easy_drop`` (0.8,
   seeded); questions are ranked hardest first (solve rate ascending, then more searches first).
5. **Diversity** (the release does this when sampling questions, by domain and keywords; here on the
   ranked questions): a question whose words overlap a kept one's by ``max_question_overlap`` or more
   (Jaccard), or whose queries overlap a kept one's by ``max_query_overlap`` or more, is left out.
6. **Size**: the first ``limit`` (871 in the paper).

Every input trajectory is kept or rejected with its reason (``rejected-curation.jsonl``):
count in = kept + rejected.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from ramp.agent.parser import parse_response
from ramp.config import StrictModel
from ramp.cot.trajectories import TRAJECTORY_SCHEMA, Trajectory, read_trajectories
from ramp.data.rejections import Rejection
from ramp.errors import UserError
from ramp.metrics import normalize_answer
from ramp.rewards import format_reward
from ramp.seeding import stable_seed

STAGE = "curate"
OUTPUT = "trajectories-00000-of-00001.parquet"
REJECTED = "rejected-curation.jsonl"
STATS = "curate_stats.json"
HESITATIONS = ("alternatively", "hmm", "wait")


class CurateConfig(StrictModel):
    max_think_words: int | None = Field(default=300, ge=1)
    max_hesitations: int | None = Field(default=3, ge=0)
    max_words: int | None = Field(default=3000, ge=1)
    max_ngram_share: float | None = Field(default=0.3, gt=0, le=1)
    min_searches: int = Field(default=1, ge=0)
    max_searches: int | None = Field(default=None, ge=0)
    min_distinct_results: float | None = Field(default=0.95, ge=0, le=1)
    easy_drop: float = Field(default=0.8, ge=0, le=1)
    max_question_overlap: float | None = Field(default=0.8, gt=0, le=1)
    max_query_overlap: float | None = Field(default=0.8, gt=0, le=1)
    limit: int | None = Field(default=871, ge=1)
    seed: int = 0


@dataclass(frozen=True)
class CurateResult:
    kept: list[Trajectory]
    rejected: list[Rejection]

    @property
    def reasons(self) -> dict[str, int]:
        return dict(sorted(Counter(r.reason for r in self.rejected).items()))

    def stats(self) -> dict[str, object]:
        return {
            "in": len(self.kept) + len(self.rejected),
            "kept": len(self.kept),
            "rejected": len(self.rejected),
            "rejected_by_reason": self.reasons,
        }


def model_text(trajectory: Trajectory) -> str:
    return "".join(m["content"] for m in trajectory.messages if m["role"] == "assistant")


def question(trajectory: Trajectory) -> str:
    return next((m["content"] for m in trajectory.messages if m["role"] == "user"), "")


def _words(text: str) -> set[str]:
    return set(normalize_answer(text).split())


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """The largest share of ``text``'s word n-grams taken by one repeated n-gram (0 when none repeats)."""
    words = text.split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    top = max(grams.values(), default=0)
    return top / sum(grams.values()) if top > 1 else 0.0


def think_problem(think: str, config: CurateConfig) -> tuple[str, str] | None:
    """A think block too long, or hesitating too often."""
    words = re.findall(r"[a-z]+", think.lower())
    if config.max_think_words is not None and len(think.split()) > config.max_think_words:
        return "long_think", f"a think block of {len(think.split())} words > {config.max_think_words}"
    counts = Counter(words)
    worst = max(HESITATIONS, key=lambda w: counts[w])
    if config.max_hesitations is not None and counts[worst] > config.max_hesitations:
        return "hesitant", f"{worst!r} {counts[worst]} times in one think block > {config.max_hesitations}"
    return None


def format_problem(trajectory: Trajectory, config: CurateConfig) -> tuple[str, str] | None:
    """(reason, detail) of the first criterion of 1-2 the trajectory fails, or None."""
    if not trajectory.verified:
        return "not_verified", "the builder did not verify it"
    turn = "".join(m["content"] for m in trajectory.messages if m["role"] in ("assistant", "tool"))
    num_masks = trajectory.num_masks if trajectory.kind == "ramp" else None
    if format_reward(turn, num_masks) != 1.0:
        return "bad_format", "the assistant turn is not well formed"
    text = model_text(trajectory)
    for think in parse_response(text).thinks:
        problem = think_problem(think, config)
        if problem is not None:
            return problem
    words = len(text.split())
    if config.max_words is not None and words > config.max_words:
        return "too_long", f"{words} words > {config.max_words}"
    share = repeated_ngram_share(text)
    if config.max_ngram_share is not None and share > config.max_ngram_share:
        return "repetitive", f"one 3-gram is {share:.2f} of the text's > {config.max_ngram_share}"
    searches = trajectory.num_searches
    if searches < config.min_searches or (config.max_searches is not None and searches > config.max_searches):
        return "search_count", f"{searches} searches outside [{config.min_searches}, {config.max_searches}]"
    shown = [doc for docs in trajectory.retrieved_doc_ids for doc in docs]
    distinct = len(set(shown)) / len(shown) if shown else 1.0
    if config.min_distinct_results is not None and distinct < config.min_distinct_results:
        return (
            "redundant_searches",
            f"{distinct:.2f} of the shown documents distinct < {config.min_distinct_results}",
        )
    return None


def curate(
    trajectories: Sequence[Trajectory], solve_rates: dict[str, float], config: CurateConfig
) -> CurateResult:
    """Select the curated subset; ``solve_rates``: per sample id, verified drafts / all drafts (missing: 1
    draft per question was drawn, so its solve rate is unknown and it is never dropped as easy)."""
    rejected: list[Rejection] = []

    def reject(t: Trajectory, reason: str, detail: str) -> None:
        rejected.append(Rejection(f"{t.sample_id}:{t.teacher}:{t.round}", STAGE, reason, detail, question(t)))

    by_question: dict[str, list[Trajectory]] = {}
    for trajectory in trajectories:
        problem = format_problem(trajectory, config)
        if problem is not None:
            reject(trajectory, *problem)
        else:
            by_question.setdefault(trajectory.sample_id, []).append(trajectory)
    best: list[Trajectory] = []
    for candidates in by_question.values():
        ranked = sorted(
            candidates, key=lambda t: (t.num_searches, len(model_text(t).split()), t.teacher, t.round)
        )
        best.append(ranked[0])
        for other in ranked[1:]:
            reject(other, "not_best_of_question", f"{ranked[0].num_searches} searches in a better one")
    rng = random.Random(stable_seed(config.seed, "curate-easy"))
    ranked_questions = []
    for t in sorted(best, key=lambda t: t.sample_id):
        rate = solve_rates.get(t.sample_id)
        if rate is not None and rate >= 1.0 and rng.random() < config.easy_drop:
            reject(t, "too_easy", "every draft of the question was verified")
        else:
            ranked_questions.append(t)
    ranked_questions.sort(key=lambda t: (solve_rates.get(t.sample_id, 1.0), -t.num_searches, t.sample_id))
    kept: list[Trajectory] = []
    kept_words: list[tuple[set[str], set[str]]] = []
    for t in ranked_questions:
        words, queries = _words(question(t)), _words(" ".join(t.queries))
        similar = _most_similar(words, queries, kept_words, config)
        if similar is not None:
            reject(t, *similar)
        elif config.limit is not None and len(kept) >= config.limit:
            reject(t, "over_limit", f"{config.limit} trajectories already kept")
        else:
            kept.append(t)
            kept_words.append((words, queries))
    rejected.sort(key=lambda r: (r.record_id, r.reason))
    return CurateResult(kept, rejected)


def _most_similar(
    words: set[str], queries: set[str], kept: list[tuple[set[str], set[str]]], config: CurateConfig
) -> tuple[str, str] | None:
    for kept_question, kept_queries in kept:
        overlap = jaccard(words, kept_question)
        if config.max_question_overlap is not None and overlap >= config.max_question_overlap:
            return "similar_question", f"question words overlap a kept one's by {overlap:.2f}"
        overlap = jaccard(queries, kept_queries)
        if queries and config.max_query_overlap is not None and overlap >= config.max_query_overlap:
            return "similar_queries", f"queries overlap a kept one's by {overlap:.2f}"
    return None


def read_solve_rates(directory: Path, trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Per sample id: verified / (verified + rejected ``not_verified``) drafts, from the builder's
    ``rejected-*.jsonl`` beside the trajectories (empty when there is none)."""
    failed: Counter[str] = Counter()
    files = sorted(directory.glob("rejected-*.jsonl")) if directory.is_dir() else []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    if row.get("reason") == "not_verified":
                        failed[row["record_id"]] += 1
    if not files:
        return {}
    verified = Counter(t.sample_id for t in trajectories if t.verified)
    return {sid: verified[sid] / (verified[sid] + failed[sid]) for sid in verified.keys() | failed.keys()}


def run_curate(trajectories_dir: str | Path, output: str | Path, config: CurateConfig) -> CurateResult:
    """Curate ``trajectories_dir`` into ``output``: the kept trajectories, the dead letters and
    ``curate_stats.json``."""
    source, out = Path(trajectories_dir), Path(output)
    if not source.exists():
        raise FileNotFoundError(f"no trajectories at {source}")
    if out.resolve() == source.resolve():
        raise UserError(f"--output must differ from --trajectories ({source}): both hold rejected-*.jsonl")
    trajectories = read_trajectories(source)
    if not trajectories:
        raise UserError(f"no trajectories-*.parquet under {source}")
    result = curate(trajectories, read_solve_rates(source, trajectories), config)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([t.to_row() for t in result.kept], schema=TRAJECTORY_SCHEMA)
    pq.write_table(table, out / OUTPUT, compression="zstd")
    (out / REJECTED).write_text("".join(r.to_json() + "\n" for r in result.rejected), encoding="utf-8")
    stats = {**result.stats(), "config": config.model_dump(mode="json")}
    (out / STATS).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result
