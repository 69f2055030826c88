"""The recipe comparison's results from its stages' outputs: ``results.json``, the table and the plot.

``results.json``:

- ``recipes``: {recipe: {metric: {``mean``, ``std``, ``per_seed``}}} for :data:`RECIPE_METRICS` (the
  held-out questions' metrics, searches and generated tokens per question, training and evaluation wall
  and CPU seconds), with ``extra_data`` (what the recipe read beyond the shared QA questions) and
  ``stages`` (its stage kinds in order);
- ``differences``: {recipe: {metric: {``mean``, ``ci95`` (paired t over seeds), ``bootstrap95`` (seeds x
  questions), ``per_seed``}}}: the recipe minus ``reference``, on the same questions of the same worlds;
- ``failed``: {recipe: {seed: {``step``, ``error``}}} (a recipe that failed on a seed has no row);
- ``reference``, ``cold_start``, ``baselines`` (answers given without searching), ``seeds`` (world seeds).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ramp.experiment import statistics as stats
from ramp.experiment.measures import metric_values
from ramp.experiment.report import no_search_table
from ramp.recipes import Recipe

QUALITY = ("first_query_accuracy", "both_hops_retrieved", "exact_match", "f1")  # compared with the reference
COST = ("searches_per_question", "tokens_per_question", "train_wall_s", "train_cpu_s", "eval_wall_s")
RECIPE_METRICS = (*QUALITY, "well_formed", *COST)
EVAL_STAGE = "eval"  # the recipe's evaluation stage (its marker sits with the recipe's stages')


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def recipe_dir(output: Path, seed: int, recipe: str) -> Path:
    """Where one recipe of one seed runs: its stages, their markers and its evaluation."""
    return output / f"seed-{seed}" / "recipes" / recipe


def stage_costs(workdir: Path) -> dict[str, float]:
    """Wall and CPU seconds of a recipe's training stages and of its evaluation, from their markers (what
    each took when it ran, also when a rerun skipped it)."""
    markers = {p.stem: _json(p) for p in sorted((workdir / ".stages").glob("*.json"))}
    train = [m for name, m in markers.items() if name != EVAL_STAGE]
    evaluation = markers.get(EVAL_STAGE, {})
    return {
        "train_wall_s": sum(m.get("wall_s", 0.0) for m in train),
        "train_cpu_s": sum(m.get("cpu_s", 0.0) for m in train),
        "eval_wall_s": evaluation.get("wall_s", 0.0),
    }


def extra_data(recipe: Recipe | None, counts: Mapping[str, int]) -> str:
    """What a recipe's stages read beyond the shared training questions, with sizes (``counts``: the
    seed's ``ramp_trajectories``, ``ramp_tasks``, ``qa_trajectories`` and ``synthesized``)."""
    parts: list[str] = []
    for stage in recipe.stages if recipe else ():
        synthesized = stage.questions == "synthesized"
        if stage.kind == "ramp_sft":
            part = f"{counts['ramp_trajectories']} RAMP trajectories"
        elif stage.kind == "dapo":
            part = f"{counts['ramp_tasks']} RAMP tasks"
        elif stage.kind == "simulator":
            part = "simulator pairs (real searches)"
        elif stage.kind in ("qa_sft", "curated_sft", "decompose_sft"):
            part = (
                f"{counts['synthesized']} synthesized questions + trajectories"
                if synthesized
                else f"{counts['qa_trajectories']} QA trajectories"
                + (" (curated)" * (stage.kind == "curated_sft"))
            )
        else:  # qa_rl, dpo: questions only
            part = f"{counts['synthesized']} synthesized questions" if synthesized else ""
        if part and not any(p.startswith(part) for p in parts):
            parts.append(part)
    return ", ".join(parts) or "none"


def collect_recipes(
    output: Path,
    seeds: int,
    recipes: Mapping[str, Recipe | None],
    reference: str,
    counts: Sequence[Mapping[str, int]],
) -> dict[str, Any]:
    """Everything ``results.json`` holds, from the seeds' recipe outputs under ``output`` (``recipes``:
    name -> recipe, or None for the cold start itself; ``counts``: per seed, the data sizes
    :func:`extra_data` names, reported as their mean over seeds)."""
    outcomes: dict[str, list[list[dict[str, Any]]]] = {}
    rows: dict[str, list[dict[str, float]]] = {}
    sizes = {k: round(statistics.fmean(c[k] for c in counts)) for k in counts[0]}  # mean over seeds
    for name in recipes:
        dirs = [recipe_dir(output, s, name) for s in range(seeds)]
        outcomes[name] = [_json(d / "eval" / "eval" / "outcomes.json") for d in dirs]
        rows[name] = [{**_json(d / "eval" / "summary.json"), **stage_costs(d)} for d in dirs]
    table = {
        name: {
            **{m: {**stats.mean_std([r[m] for r in per_seed]), "per_seed": [r[m] for r in per_seed]}
              for m in RECIPE_METRICS},
            "extra_data": extra_data(recipes[name], sizes),
            "stages": [s.kind for s in recipe.stages] if (recipe := recipes[name]) else [],
        }
        for name, per_seed in rows.items()
    }  # fmt: skip
    differences = {}
    if reference in outcomes:
        for name in (n for n in recipes if n != reference):
            differences[name] = {
                m: stats.paired_difference(
                    {s: metric_values(o, m) for s, o in enumerate(outcomes[name])},
                    {s: metric_values(o, m) for s, o in enumerate(outcomes[reference])},
                ).to_dict()
                for m in QUALITY
            }
    roots = [output / f"seed-{s}" for s in range(seeds)]
    return {
        "reference": reference,
        "recipes": table,
        "differences": differences,
        "baselines": no_search_table(roots),
        "seeds": [
            {"seed": s, "world_seed": _json(r / "data" / "data.json")["world_seed"]}
            for s, r in enumerate(roots)
        ],
    }


def format_recipe_table(results: Mapping[str, Any]) -> str:
    """The README's table: one row per recipe (mean ± std over seeds; costs as means), then the differences
    against the reference (mean [95% t interval] per metric)."""
    quality = (*QUALITY, "well_formed")
    head = [*quality, "searches/q", "tokens/q", "train CPU min", "extra data"]
    lines = ["| recipe | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for name, row in results["recipes"].items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in quality]
        cells += [
            f"{row['searches_per_question']['mean']:.2f}",
            f"{row['tokens_per_question']['mean']:.0f}",
            f"{row['train_cpu_s']['mean'] / 60:.1f}",
            row["extra_data"],
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, seeds in results.get("failed", {}).items():
        errors = sorted({f["error"].split(":")[0] for f in seeds.values()})
        why = f"failed on seed {', '.join(str(s) for s in seeds)}: {', '.join(errors)} (results.json)"
        lines.append(f"| {name} | {why} |" + " |" * (len(head) - 1))
    for name, base in results["baselines"].items():
        cells = [f"{base[m]:.3f}" if m in base else "" for m in quality]
        lines.append(f"| no search: {name} | " + " | ".join(cells) + " |" + " |" * 4)
    if results["differences"]:
        reference = results["reference"]
        lines += [
            "",
            f"| recipe − {reference} | " + " | ".join(QUALITY) + " |",
            "|---|" + "---|" * len(QUALITY),
        ]
        for name, diffs in results["differences"].items():
            cells = [
                f"{d['mean']:+.3f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
                for d in (diffs[m] for m in QUALITY)
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_recipes(results: Mapping[str, Any], path: Path) -> None:
    """Left: each recipe's quality metrics (mean over seeds, std bars, one dot per seed). Right: its cost
    (training CPU minutes) against its first-query accuracy."""
    names = list(results["recipes"])
    figure = Figure(figsize=(14, 4.6))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(QUALITY)
    for m, metric in enumerate(QUALITY):
        xs = [n + (m - (len(QUALITY) - 1) / 2) * width for n in range(len(names))]
        rows = [results["recipes"][n][metric] for n in names]
        left.bar(
            xs,
            [r["mean"] for r in rows],
            width,
            yerr=[r["std"] for r in rows],
            capsize=2,
            label=metric.replace("_", " "),
        )
        for x, r in zip(xs, rows, strict=True):
            left.scatter([x] * len(r["per_seed"]), r["per_seed"], color="black", s=5, zorder=3)
    left.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    top = max(v for n in names for m in QUALITY for v in results["recipes"][n][m]["per_seed"])
    left.set_ylim(0, min(1.0, 1.2 * top + 0.05))
    left.set_ylabel("held-out two-hop questions")
    left.set_title("recipes from one cold start, one world per seed")
    left.legend(fontsize=8)
    for name in names:
        row = results["recipes"][name]
        right.scatter(row["train_cpu_s"]["mean"] / 60, row["first_query_accuracy"]["mean"])
        right.annotate(
            name, (row["train_cpu_s"]["mean"] / 60, row["first_query_accuracy"]["mean"]), fontsize=7
        )
    right.set_xlabel("training CPU minutes (mean per seed)")
    right.set_ylabel("first-query accuracy")
    right.set_title("cost")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
