"""The RAMP-effect experiment's results from its stages' outputs: ``results.json`` (the output contract),
the Markdown tables and the plot.

``results.json``:

- ``verdict`` (``shown`` | ``refuted`` | ``inconclusive``, over A - B and A - C), ``verdicts`` per comparison;
- ``gate``: ``ramp_copy_rate`` (mean over seeds), ``per_seed``, ``passed``, ``threshold``;
- ``arms``: {arm: {metric: {``mean``, ``std``, ``per_seed``}}};
- ``differences``: {``A-B``, ``A-C``, ``A-A_mixed``: {metric: {``mean``, ``ci95`` (paired t over seeds),
  ``bootstrap95`` (seeds x questions), ``per_seed``}}};
- ``baselines``: {name: {metric: value}} (answers given without searching);
- ``a_stages``: A's policy after each stage (held-out RAMP copy rate and answer reward, zero-shot
  first-query accuracy); ``dapo``: held-out RAMP answer reward before/after DAPO, curriculum and mixed;
  ``grid``: the QA grid (every point's dev score, the choice per arm, its cost); ``seeds``: world seeds
  and data summaries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ramp.experiment import statistics as stats
from ramp.experiment.measures import QUESTION_METRICS, SPLIT_METRICS, metric_values, no_search_baselines
from ramp.experiment.world import read_jsonl

ARM_METRICS = (*QUESTION_METRICS, *(f"{m}_held_out" for m in SPLIT_METRICS), "searches_per_question")
COMPARISONS = {"A-B": ("A", "B"), "A-C": ("A", "C"), "A-A_mixed": ("A", "A-mixed")}
VERDICT_COMPARISONS = ("A-B", "A-C")
A_STAGES = ("init", "ramp-sft", "dapo", "qa")


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def collect(output: Path, seeds: int, arms: Sequence[str], threshold: float) -> dict[str, Any]:
    """Everything ``results.json`` holds, read from the seeds' stage outputs under ``output``."""
    roots = [output / f"seed-{s}" for s in range(seeds)]
    outcomes = {arm: [_json(r / arm / "eval" / "eval" / "outcomes.json") for r in roots] for arm in arms}
    summaries = {arm: [_json(r / arm / "eval" / "summary.json") for r in roots] for arm in arms}
    measures = {
        stage: [_json(r / "A" / "measures" / stage / "measures.json") for r in roots] for stage in A_STAGES
    }
    copy = [m["heldout"]["copy_rate"] for m in measures["ramp-sft"]]
    passed = all(c >= threshold for c in copy)
    gate = {
        "ramp_copy_rate": stats.mean_std(copy)["mean"],
        "per_seed": copy,
        "passed": passed,
        "threshold": threshold,
    }
    differences: dict[str, dict[str, Any]] = {}
    for name, (first, second) in COMPARISONS.items():
        if first in arms and second in arms:
            differences[name] = {
                metric: _difference(outcomes[first], outcomes[second], metric, held_out_only=held)
                for metric, held in _difference_metrics()
            }
    verdicts = {
        name: stats.verdict(differences[name]["first_query_accuracy"], differences[name]["bridge_em"], passed)
        for name in VERDICT_COMPARISONS
        if name in differences
    }
    data = [_json(r / "data" / "data.json") for r in roots]
    return {
        "verdict": stats.overall(verdicts),
        "verdicts": verdicts,
        "gate": gate,
        "arms": {
            arm: {
                m: {
                    **stats.mean_std([s[m] for s in summaries[arm]]),
                    "per_seed": [s[m] for s in summaries[arm]],
                }
                for m in ARM_METRICS
            }
            for arm in arms
        },
        "differences": {n: {m: d.to_dict() for m, d in diffs.items()} for n, diffs in differences.items()},
        "baselines": no_search_table(roots),
        "a_stages": _a_stages(measures),
        "dapo": _dapo(roots, arms, measures),
        "seeds": [{"seed": s, "world_seed": d["world_seed"], "data": d} for s, d in enumerate(data)],
    }


def _difference_metrics() -> list[tuple[str, bool]]:
    """Every question metric on all questions, and the split ones on held-out first hops (suffixed)."""
    return [(m, False) for m in QUESTION_METRICS] + [(f"{m}_held_out", True) for m in SPLIT_METRICS]


def _difference(
    first: Sequence[Sequence[Mapping[str, Any]]],
    second: Sequence[Sequence[Mapping[str, Any]]],
    metric: str,
    held_out_only: bool,
) -> stats.Difference:
    base = metric.removesuffix("_held_out") if held_out_only else metric

    def values(outcomes: Sequence[Mapping[str, Any]]) -> list[float]:
        kept = [o for o in outcomes if o["held_out"]] if held_out_only else list(outcomes)
        return metric_values(kept, base)

    return stats.paired_difference(
        {s: values(o) for s, o in enumerate(first)}, {s: values(o) for s, o in enumerate(second)}
    )


def no_search_table(roots: Sequence[Path]) -> dict[str, dict[str, float]]:
    """No-search guesses fitted on each seed's training questions, averaged over seeds."""
    per_seed = [
        no_search_baselines(
            read_jsonl(r / "data" / "qa-train.jsonl"), read_jsonl(r / "data" / "qa-test.jsonl")
        )
        for r in roots
    ]
    return {
        name: {m: stats.mean_std([b[name][m] for b in per_seed])["mean"] for m in per_seed[0][name]}
        for name in per_seed[0]
    }


def _a_stages(measures: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    rows = {
        "heldout_copy_rate": ("heldout", "copy_rate"),
        "heldout_answer_reward": ("heldout", "answer_reward"),
        "heldout_entity_copy_rate": ("heldout-entities", "copy_rate"),
        "zero_shot_first_query_accuracy": ("zero_shot", "first_query_accuracy"),
        "zero_shot_exact_match": ("zero_shot", "exact_match"),
    }
    return {
        stage: {name: _spread([m[part][key] for m in per_seed]) for name, (part, key) in rows.items()}
        for stage, per_seed in measures.items()
    }


def _dapo(
    roots: Sequence[Path], arms: Sequence[str], measures: Mapping[str, Sequence[Any]]
) -> dict[str, Any]:
    """Held-out RAMP answer reward before DAPO (after RAMP SFT) and after it, curriculum vs mixed."""
    out: dict[str, Any] = {"before": _spread([m["heldout"]["answer_reward"] for m in measures["ramp-sft"]])}
    for arm in (a for a in ("A", "A-mixed") if a in arms):
        after = [
            _json(r / arm / "measures" / "dapo" / "measures.json")["heldout"]["answer_reward"] for r in roots
        ]
        out[f"after_{arm}"] = _spread(after)
        histories = [read_jsonl(r / arm / "dapo" / "history.jsonl") for r in roots]
        out[f"train_reward_{arm}"] = [[h["reward/answer"] for h in history] for history in histories]
        markers = [_json(r / ".stages" / arm / "dapo.json") for r in roots]  # the settings it ran with
        out[f"lr_{arm}"] = [marker["settings"]["trainer"]["lr"] for marker in markers]
    return out


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {**stats.mean_std(values), "per_seed": list(values)}


def format_tables(results: Mapping[str, Any]) -> str:
    """The README's tables: arms (mean ± std), differences (mean, both intervals, per seed), A's stages,
    the gate and the verdict."""
    arms = results["arms"]
    metrics = [m for m in ARM_METRICS if m != "searches_per_question"]
    lines = ["| arm | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    lines += [
        f"| {arm} | " + " | ".join(f"{v[m]['mean']:.3f} ± {v[m]['std']:.3f}" for m in metrics) + " |"
        for arm, v in arms.items()
    ]
    for name, base in results["baselines"].items():
        lines.append(
            f"| no search: {name} | "
            + " | ".join(f"{base[m]:.3f}" if m in base else "" for m in metrics)
            + " |"
        )
    lines += ["", "| difference | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, diffs in results["differences"].items():
        cells = [
            f"{d['mean']:+.3f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] "
            f"({', '.join(f'{x:+.2f}' for x in d['per_seed'])})"
            for d in (diffs[m] for m in metrics)
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    stage_rows = list(next(iter(results["a_stages"].values())))
    lines += ["", "| A after | " + " | ".join(stage_rows) + " |", "|---|" + "---|" * len(stage_rows)]
    for stage, row in results["a_stages"].items():
        lines.append(f"| {stage} | " + " | ".join(f"{row[k]['mean']:.3f}" for k in stage_rows) + " |")
    gate = results["gate"]
    lines += [
        "",
        f"gate (held-out RAMP copy rate after RAMP SFT >= {gate['threshold']}): "
        f"{'passed' if gate['passed'] else 'FAILED'} ({', '.join(f'{c:.2f}' for c in gate['per_seed'])})",
        "verdict: "
        + results["verdict"]
        + " ("
        + ", ".join(f"{k}: {v}" for k, v in results["verdicts"].items())
        + ")",
    ]
    return "\n".join(lines) + "\n"


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Left: the headline metrics per arm (mean over seeds, std bars, one dot per seed). Right: A's policy
    after each stage (held-out RAMP copy rate, zero-shot first-query accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (
        "first_query_accuracy",
        "first_query_accuracy_held_out",
        "both_hops_retrieved",
        "bridge_em",
        "exact_match",
    )
    arms = list(results["arms"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    width = 0.8 / len(arms)
    for a, arm in enumerate(arms):
        xs = [m + (a - (len(arms) - 1) / 2) * width for m in range(len(metrics))]
        values = results["arms"][arm]
        left.bar(
            xs,
            [values[m]["mean"] for m in metrics],
            width,
            yerr=[values[m]["std"] for m in metrics],
            label=arm,
            capsize=3,
        )
        for n in range(len(values[metrics[0]]["per_seed"])):
            left.scatter(xs, [values[m]["per_seed"][n] for m in metrics], color="black", s=6, zorder=3)
    left.set_xticks(
        range(len(metrics)), [m.replace("_", " ").replace("accuracy", "acc.") for m in metrics], fontsize=8
    )
    left.set_ylim(0, 1)
    left.set_ylabel("held-out two-hop questions")
    left.set_title(f"RAMP effect ({results['verdict']}): A = RAMP SFT + DAPO + QA, B = QA, C = LM + QA")
    left.legend(fontsize=8)
    stages = list(results["a_stages"])
    for key, label in (
        ("heldout_copy_rate", "held-out RAMP copy rate"),
        ("heldout_entity_copy_rate", "held-out-entity copy rate"),
        ("zero_shot_first_query_accuracy", "question first-query acc."),
    ):
        right.errorbar(
            stages,
            [results["a_stages"][s][key]["mean"] for s in stages],
            yerr=[results["a_stages"][s][key]["std"] for s in stages],
            marker="o",
            capsize=3,
            label=label,
        )
    right.axhline(results["gate"]["threshold"], color="grey", linestyle=":", linewidth=1)
    right.set_ylim(0, 1)
    right.set_title("arm A after each stage")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
