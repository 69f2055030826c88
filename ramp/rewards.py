"""Rewards for RAMP and QA rollouts: answer scores, the format validator, a reward-hacking guard, an
LLM judge (MaskSearch's model-based reward), and the rewards of the neighbouring systems' recipes.

``RewardConfig.kind`` picks the reward of a response:

- ``weighted`` (default, MaskSearch's line): ``answer_weight`` × guarded answer score (``metric``) +
  ``format_weight`` × format (``format_reward``), the answer gated by the format (``require_format``);
- ``exact_match`` (Search-R1): 1 when the last answer matches a gold exactly (normalised), else 0; no
  format term;
- ``research`` (ReSearch): 0 for a response that breaks ReSearch's format rule (``research_format``);
  else the answer's F1, or 0.1 when that F1 is 0;
- ``r1_searcher_stage1`` (R1-Searcher, stage 1): 0.5 when the response searched at least once + 0.5
  when it is well formed (``format_reward``); the answer earns nothing;
- ``r1_searcher_stage2`` (R1-Searcher, stage 2): the answer's F1, minus 2 when it is not well formed.

R1-Searcher++'s group reward for using fewer searches (``fewest_searches``, :func:`fewest_searches_bonus`)
adds to any kind; it needs the whole group of a prompt's responses, so the RL episode scoring applies it.
The guard and ``require_format`` belong to ``weighted``; the recipes' kinds are the papers' rules.

Hacking guard: token recall alone pays an answer that lists many candidates ("Paris London Rome …").
``RewardConfig.guard`` picks the counter-measure, applied per fill:

- ``precision`` (default): the score is multiplied by the fill's token precision against the gold (the
  share of its normalised tokens that the gold has), so any wrong token added to a correct fill lowers
  the score and a list of n candidates of the gold's length earns about 1/n; articles, punctuation and
  case are normalised away and keep full credit;
- ``length_penalty``: the score is multiplied by ``min(1, allowed / len(fill tokens))`` with
  ``allowed = length_ratio * len(gold tokens) + length_slack``;
- ``precision_floor``: the score is 0 when the fill's token precision against the gold is below
  ``precision_floor``;
- ``none``: raw metric.

Normalisation profiles (:mod:`ramp.text`): the RAMP reward (``ramp_answer_score``) uses ``ramp``
(``RAMP_PROFILE``: Unicode dashes, quotes and accents folded, so "1990–1995" pays like "1990-1995"), the
QA reward (``qa_reward``) uses ``squad`` (``QA_PROFILE``, the official evaluation rule); the guard
normalises with the same profile as the metric.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from ramp.agent.backends.base import GenerationBackend, GenerationRequest
from ramp.agent.parser import parse_mask_fills, parse_response
from ramp.config import StrictModel
from ramp.metrics import METRICS
from ramp.text import Profile, normalize

MetricName = Literal["exact_match", "f1", "token_recall"]
Golds = Sequence[str] | str  # the accepted answers for one mask or question
RAMP_PROFILE: Profile = "ramp"  # mask fills: agrees with answerability, the built-in teacher and verification
QA_PROFILE: Profile = "squad"  # QA answers: the official HotpotQA/SQuAD rule, as in evaluation


RewardKind = Literal["weighted", "exact_match", "research", "r1_searcher_stage1", "r1_searcher_stage2"]
RESEARCH_FORMAT_ONLY = 0.1  # ReSearch: a well-formed response whose answer has F1 0
R1_SEARCHER_STAGE1 = 0.5  # R1-Searcher stage 1: for searching at least once, and for the format
R1_SEARCHER_FORMAT_PENALTY = 2.0  # R1-Searcher stage 2: subtracted from an ill-formed response's F1


class FewestSearchesConfig(StrictModel):
    """R1-Searcher++'s group reward: among a group's correct responses (answer score >= ``correct_at``),
    those with the fewest searches get min(``scale`` × σ², ``cap``), σ the std of the correct ones' search
    counts."""

    enable: bool = False
    scale: float = Field(default=2.0, ge=0)
    cap: float | None = Field(default=None, ge=0)  # None: no cap
    correct_at: float = Field(default=1.0, gt=0, le=1)


class RewardConfig(StrictModel):
    kind: RewardKind = "weighted"
    answer_weight: float = 1.0
    format_weight: float = 0.2
    require_format: bool = True  # an ill-formed response earns no answer reward
    metric: MetricName = "token_recall"
    guard: Literal["none", "precision", "length_penalty", "precision_floor"] = "precision"
    length_ratio: float = Field(default=2.0, gt=0)
    length_slack: int = Field(default=2, ge=0)
    precision_floor: float = Field(default=0.3, ge=0, le=1)
    fewest_searches: FewestSearchesConfig = FewestSearchesConfig()


def _best_gold_tokens(prediction: str, golds: Golds, profile: Profile) -> tuple[list[str], list[str]]:
    """Normalised tokens of the prediction and of the gold it overlaps most (ties: the shortest)."""
    pred = normalize(prediction, profile).split()
    options = [normalize(g, profile).split() for g in ([golds] if isinstance(golds, str) else golds)]
    if not options:
        return pred, []
    best = max(options, key=lambda g: (sum((Counter(pred) & Counter(g)).values()), -len(g)))
    return pred, best


def guard_factor(prediction: str, golds: Golds, config: RewardConfig, profile: Profile = QA_PROFILE) -> float:
    """Multiplier in [0, 1] that removes the payoff of padding an answer with extra candidates."""
    if config.guard == "none":
        return 1.0
    pred, gold = _best_gold_tokens(prediction, golds, profile)
    if not pred:
        return 1.0
    if config.guard == "length_penalty":
        allowed = config.length_ratio * len(gold) + config.length_slack
        return min(1.0, allowed / len(pred))
    precision = sum((Counter(pred) & Counter(gold)).values()) / len(pred)
    if config.guard == "precision":
        return precision
    return 1.0 if precision >= config.precision_floor else 0.0


def answer_score(
    prediction: str,
    golds: Golds,
    metric: MetricName = "token_recall",
    config: RewardConfig | None = None,
    *,
    profile: Profile,
) -> float:
    """One prediction against its golds with ``metric`` under ``profile``, times the guard factor when
    ``config`` is given."""
    score = METRICS[metric](prediction, golds, profile=profile)
    return score * guard_factor(prediction, golds, config, profile) if config is not None else score


def ramp_answer_score(
    fills: Sequence[str],
    golds: Sequence[Golds],
    metric: MetricName = "token_recall",
    config: RewardConfig | None = None,
    *,
    profile: Profile = RAMP_PROFILE,
) -> float:
    """Mean per-mask score; ``golds[i]`` is mask i's gold (or its accepted golds). Missing fills score 0."""
    if not golds:
        return 0.0
    padded = [*fills[: len(golds)], *[""] * (len(golds) - len(fills))]
    scores = (answer_score(f, g, metric, config, profile=profile) for f, g in zip(padded, golds, strict=True))
    return sum(scores) / len(golds)


def qa_reward(
    answer: str | None,
    golds: Golds,
    metric: MetricName = "exact_match",
    config: RewardConfig | None = None,
    *,
    profile: Profile = QA_PROFILE,
) -> float:
    """Score of a QA answer (None: no answer, 0)."""
    return 0.0 if answer is None else answer_score(answer, golds, metric, config, profile=profile)


_ANSWER_LINE = re.compile(r"^\s*\[(\d+)\]\s*\S")


def format_reward(text: str, num_masks: int | None = None, *, with_results: bool = True) -> float:
    """1.0 if ``text`` (the assistant turn) is well formed, else 0.0.

    Well formed: only think/search/result/answer blocks, all closed, none nested, no text outside them,
    no empty query, each search followed by its result block and every result preceded by a search
    (``with_results``; model-only text must contain no result at all), exactly one answer, last, not empty.
    For RAMP (``num_masks`` given) the answer has exactly ``num_masks`` lines ``[1] …`` … ``[k] …`` in order.
    """
    parsed = parse_response(text)
    blocks = parsed.blocks
    if not parsed.all_closed or parsed.nested or parsed.untagged_text:
        return 0.0
    if not blocks or blocks[-1].tag != "answer" or len(parsed.answers) != 1 or not parsed.answers[0]:
        return 0.0
    for prev, block in zip((None, *blocks), blocks, strict=False):
        if block.tag == "search" and not block.content.strip():
            return 0.0
        if block.tag == "result" and (not with_results or prev is None or prev.tag != "search"):
            return 0.0
        if with_results and prev is not None and prev.tag == "search" and block.tag != "result":
            return 0.0
    if num_masks is not None:
        lines = [line for line in parsed.answers[0].splitlines() if line.strip()]
        numbers = [m.group(1) for m in map(_ANSWER_LINE.match, lines) if m]
        if len(lines) != num_masks or numbers != [str(i) for i in range(1, num_masks + 1)]:
            return 0.0
    return 1.0


def research_format(text: str) -> float:
    """1.0 if ``text`` passes ReSearch's format rule, else 0.0: every block closed and none nested, at least
    one think block, exactly one answer block, and every search block followed by its result block before
    the next search. Text outside the blocks is allowed. (ReSearch also wants the answer in ``\\boxed{}``;
    the project's protocol has no box, so the answer block's text is the answer.)"""
    parsed = parse_response(text)
    if not parsed.all_closed or parsed.nested or not parsed.thinks or len(parsed.answers) != 1:
        return 0.0
    pending_search = False
    for block in parsed.blocks:
        if block.tag == "search":
            if pending_search:
                return 0.0
            pending_search = True
        elif block.tag == "result":
            pending_search = False
    return 0.0 if pending_search else 1.0


@dataclass(frozen=True)
class RewardBreakdown:
    answer: float  # answer score in [0, 1] (weighted: guarded and format-gated)
    format: float  # 0 or 1: the format rule of the reward's kind
    total: float


def combined_reward(
    text: str,
    golds: Sequence[Golds],
    *,
    num_masks: int | None = None,
    config: RewardConfig | None = None,
    with_results: bool = True,
) -> RewardBreakdown:
    """Weighted answer + format reward of one assistant turn.

    RAMP (``num_masks`` given): ``golds[i]`` is mask i's gold and the answer is scored per mask
    (profile ``ramp``). QA (``num_masks`` None): ``golds`` are the accepted answers of the question
    (profile ``squad``).
    """
    cfg = config or RewardConfig()
    fmt = format_reward(text, num_masks, with_results=with_results)
    parsed = parse_response(text)
    if cfg.kind == "weighted":
        score = _answer(parsed.answer, golds, num_masks, cfg.metric, cfg)
        if cfg.require_format and fmt == 0.0:
            score = 0.0
        return RewardBreakdown(
            answer=score, format=fmt, total=cfg.answer_weight * score + cfg.format_weight * fmt
        )
    if cfg.kind == "exact_match":
        score = _answer(parsed.answer, golds, num_masks, "exact_match")
        return RewardBreakdown(answer=score, format=fmt, total=score)
    f1_score = _answer(parsed.answer, golds, num_masks, "f1")
    if cfg.kind == "research":
        fmt = research_format(text)
        total = (f1_score if f1_score > 0 else RESEARCH_FORMAT_ONLY) if fmt else 0.0
        return RewardBreakdown(answer=f1_score, format=fmt, total=total)
    if cfg.kind == "r1_searcher_stage1":
        searched = float(bool(parsed.searches))
        total = R1_SEARCHER_STAGE1 * searched + R1_SEARCHER_STAGE1 * fmt
        return RewardBreakdown(answer=f1_score, format=fmt, total=total)
    return RewardBreakdown(
        answer=f1_score, format=fmt, total=f1_score - R1_SEARCHER_FORMAT_PENALTY * (1.0 - fmt)
    )


def _answer(
    answer: str | None,
    golds: Sequence[Golds],
    num_masks: int | None,
    metric: MetricName,
    config: RewardConfig | None = None,
) -> float:
    """The answer's score: per mask (RAMP, profile ``ramp``) or against the question's golds (QA)."""
    if num_masks is not None:
        fills = parse_mask_fills(answer, num_masks)
        return ramp_answer_score(fills, golds, metric, config, profile=RAMP_PROFILE)
    flat = [g for gold in golds for g in ([gold] if isinstance(gold, str) else gold)]
    return qa_reward(answer, flat, metric, config, profile=QA_PROFILE)


def fewest_searches_bonus(
    answers: Sequence[float], searches: Sequence[int], group_ids: Sequence[str], config: FewestSearchesConfig
) -> list[float]:
    """R1-Searcher++'s group reward, per response: within each group (one prompt's responses), over the
    correct ones (answer >= ``correct_at``), σ is the (population) std of their search counts, and each
    correct response with the group's fewest searches gets min(scale × σ², cap); every other response 0.
    A group whose correct responses all searched equally (σ = 0) gets nothing."""
    if not len(answers) == len(searches) == len(group_ids):
        raise ValueError("answers, searches and group_ids must have one entry per response")
    correct: dict[str, list[int]] = {}
    for gid, answer, count in zip(group_ids, answers, searches, strict=True):
        if answer >= config.correct_at:
            correct.setdefault(gid, []).append(count)
    bonus = []
    for gid, answer, count in zip(group_ids, answers, searches, strict=True):
        counts = correct.get(gid, [])
        if answer < config.correct_at or count != min(counts):
            bonus.append(0.0)
            continue
        mean = sum(counts) / len(counts)
        value = config.scale * sum((c - mean) ** 2 for c in counts) / len(counts)
        bonus.append(value if config.cap is None else min(value, config.cap))
    return bonus


_VERDICT = re.compile(r"verdict\s*[:：]\s*\**\s*(correct|incorrect)\b", re.IGNORECASE)
_BARE_VERDICT = re.compile(r"^\W*(correct|incorrect)\W*$", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """The judge's verdict: the last ``Verdict: correct|incorrect`` line, or a reply that is just the word.

    None when the reply has neither (the caller counts it and scores 0).
    """
    matches = _VERDICT.findall(text or "")
    if matches:
        return matches[-1].lower() == "correct"
    bare = _BARE_VERDICT.match((text or "").strip())
    return bare.group(1).lower() == "correct" if bare else None


@dataclass(frozen=True)
class JudgeItem:
    context: str  # the question, or the masked passage with the mask's number
    golds: Sequence[str]
    prediction: str


@dataclass(frozen=True)
class JudgeVerdict:
    score: float  # 1.0 correct, 0.0 incorrect or unparseable
    parsed: bool
    raw: str


class LLMJudge:
    """Model-based answer reward: a judge model compares a prediction with the golds.

    ``template`` is a str.format template with ``{context}``, ``{golds}`` and ``{prediction}``: the
    project's one judge prompt is ``judge`` in ``configs/prompts.yaml`` (``load_templates().judge``),
    used by the reward and the CoT verifier. Requests go through any backend (normally ``openai``).
    """

    def __init__(self, backend: GenerationBackend, template: str, max_new_tokens: int = 256) -> None:
        self.backend = backend
        self.template = template
        self.max_new_tokens = max_new_tokens

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeVerdict]:
        requests = [
            GenerationRequest(
                messages=[
                    {
                        "role": "user",
                        "content": self.template.format(
                            context=item.context,
                            golds=" | ".join(item.golds),
                            prediction=item.prediction,
                        ),
                    }
                ],
                max_new_tokens=self.max_new_tokens,
            )
            for item in items
        ]
        verdicts = []
        for result in self.backend.generate(requests):
            verdict = parse_verdict(result.text)
            verdicts.append(
                JudgeVerdict(score=float(bool(verdict)), parsed=verdict is not None, raw=result.text)
            )
        return verdicts

    def ramp_score(self, context: str, fills: Sequence[str], golds: Sequence[Golds]) -> float:
        """Mean of the per-mask verdicts (one judge call per mask; missing fills are judged as empty)."""
        fills = [*fills[: len(golds)], *[""] * (len(golds) - len(fills))]
        items = [
            JudgeItem(
                context=f"{context}\n(mask [{i}])",
                golds=[g] if isinstance(g, str) else list(g),
                prediction=fill,
            )
            for i, (fill, g) in enumerate(zip(fills, golds, strict=True), start=1)
        ]
        verdicts = self.judge(items)
        return sum(v.score for v in verdicts) / len(verdicts) if verdicts else 0.0
