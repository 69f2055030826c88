"""``ramp experiment demo``: every stage of RAMP, end to end, on the bundled data and one CPU machine.

Beam masking of the bundled Wikipedia dump → Lucene index → answerable samples → verified trajectories
(built-in teacher) → a tiny policy from scratch (``ramp pretrain init``) → Megatron pretraining on the
trajectories (CPU path) → conversion to HF → DAPO with the mask-count curriculum → HotpotQA fine-tuning
(DAPO on HotpotQA questions that are not evaluated) → evaluation on the HotpotQA distractor sample against
its own corpus (and the built-in floor) → one MLflow run with the headline numbers, a printed table and
plots. Each stage is the ``ramp`` command a user would type (run in this process, so imports are paid
once), with the bundled recipes and the overrides of ``configs/demo/*.yaml``; the stage runner
(:mod:`ramp.experiment.stages`) skips what is done.
"""

from __future__ import annotations

import bz2
import json
import os
import shlex
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import Field

from ramp.config import StrictModel, load_config
from ramp.errors import UserError
from ramp.experiment.stages import Stage, StageOutcome, StageRunner

STATE_DIR = ".stages"
# Where each stage writes, under the demo's output directory.
OUTPUT_PATHS = {
    "samples": "samples",
    "index": "index",
    "answerable": "answerable",
    "trajectories": "trajectories",
    "init": "init",
    "shards": "pretrain/shards",
    "checkpoints": "pretrain/checkpoints",
    "sft": "sft/policy",
    "rl": "rl",
    "qa": "qa/hotpotqa-train.jsonl",
    "finetune": "finetune",
    "corpus": "eval/corpus",
    "eval_index": "eval/index",
    "floor": "eval/builtin",
    "evaluated": "eval/policy",
}
BEAM_STAGES = ("samples", "answerable", "trajectories")  # take --workers
EXPERIMENT = "ramp-demo"
EVAL_DATASET = "hotpotqa"
METRICS = ("exact_match", "f1", "token_recall")
NEAR_ZERO_NOTE = (
    "The policy is tiny and trained from scratch in minutes, so its scores on real questions are near zero:"
    " the demo shows the machinery end to end; `ramp experiment ramp-effect` measures the RAMP effect."
)


class StageOverrides(StrictModel):
    """Each stage's ``--set`` overrides of its bundled recipe (the demo wires the paths itself)."""

    samples: list[str] = Field(default_factory=list)  # ramp data build (configs/data.yaml)
    answerable: list[str] = Field(default_factory=list)  # ramp data answerability (configs/retrieval.yaml)
    trajectories: list[str] = Field(default_factory=list)  # ramp data cot (configs/cot.yaml)
    policy: list[str] = Field(default_factory=list)  # ramp pretrain init (InitConfig)
    shards: list[str] = Field(default_factory=list)  # ramp pretrain prepare (configs/pretrain.yaml)
    pretrain: list[str] = Field(default_factory=list)  # ramp pretrain train (configs/pretrain.yaml)
    rl: list[str] = Field(default_factory=list)  # ramp rl train (configs/rl.yaml)
    finetune: list[str] = Field(default_factory=list)  # ramp finetune rl (configs/rl.yaml)
    eval: list[str] = Field(default_factory=list)  # ramp eval run, both policies (configs/eval.yaml)


class DemoConfig(StrictModel):
    output: str = "runs/demo"
    tracking_uri: str | None = None  # default: sqlite OUTPUT/mlflow.db
    input: str = "data/enwiki-sample-106-articles.xml.bz2"  # a MediaWiki XML dump
    max_pages: int | None = Field(default=None, ge=1)  # use the dump's first N pages (a quick run)
    workers: int = Field(default=2, ge=1)  # Beam worker processes
    qa_train: str = "data/hotpotqa-dev-500.jsonl"  # fine-tuning questions (the evaluated ones are removed)
    finetune_questions: int | None = Field(default=None, ge=1)  # the first N of them
    qa_eval: str = "data/hotpotqa-dev-distractor-53.json"  # official distractor layout: questions + corpus
    eval_questions: int | None = Field(default=None, ge=1)  # the first N of them
    overrides: StageOverrides = Field(default_factory=StageOverrides)


# Which recipe and config model each stage's overrides belong to (checked before any stage runs).
STAGE_RECIPES = {
    "samples": ("data", "ramp.data.config:DataConfig"),
    "answerable": ("retrieval", "ramp.retrieval.config:RetrievalSettings"),
    "trajectories": ("cot", "ramp.cot.config:CotConfig"),
    "policy": (None, "ramp.train.init:InitConfig"),
    "shards": ("pretrain", "ramp.train.config:PretrainConfig"),
    "pretrain": ("pretrain", "ramp.train.config:PretrainConfig"),
    "rl": ("rl", "ramp.rl.config:RLConfig"),
    "finetune": ("rl", "ramp.rl.config:RLConfig"),
    "eval": ("eval", "ramp.qa.config:EvalConfig"),
}


def check_overrides(config: DemoConfig) -> None:
    """Validate every stage's overrides against its recipe now, not when the stage is reached."""
    import importlib

    for stage, (recipe, model_path) in STAGE_RECIPES.items():
        module, name = model_path.split(":")
        model = getattr(importlib.import_module(module), name)
        overrides = getattr(config.overrides, stage)
        load_config(model, recipe, overrides)


class Demo:
    """The demo's stages for one config; ``run`` executes them through :class:`StageRunner`."""

    def __init__(self, config: DemoConfig, echo: Callable[[str], None] = print) -> None:
        self.config = config
        self.out = Path(config.output)
        self.echo = echo
        self.tracking_uri = config.tracking_uri or f"sqlite:///{(self.out / 'mlflow.db').resolve()}"
        self.runner = StageRunner(self.out / STATE_DIR, echo)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def stages(self) -> list[Stage]:
        c, o = self.config, self.config.overrides
        paths = {name: self.out / rel for name, rel in OUTPUT_PATHS.items()}
        paths |= {"dump": Path(c.input), "qa_train": Path(c.qa_train), "qa_eval": Path(c.qa_eval)}
        stages: list[Stage] = []
        if c.max_pages is not None:
            source = paths["dump"]
            cut = self.path("input", f"{source.name.split('.')[0]}-{c.max_pages}-pages.xml.bz2")
            command = f"(first {c.max_pages} pages of {source} -> {cut})"
            stages.append(
                Stage("input", command, partial(cut_dump, source, cut, c.max_pages), (source,), (cut,))
            )
            paths["dump"] = cut
        p = paths
        limit = f" --limit {c.finetune_questions}" if c.finetune_questions else ""
        # name, `ramp` command ({path} placeholders), recipe, overrides, inputs, outputs
        table: list[tuple[str, str, str | None, list[str], str, str]] = [
            ("samples", "data build --input {dump} --format xml --output {samples}", "data", o.samples,
             "dump", "samples"),
            ("index", "index build --corpus {samples} --index {index}", None, [], "samples", "index"),
            ("answerable", "data answerability --samples {samples} --index {index} --output {answerable}",
             "retrieval", o.answerable, "samples index", "answerable"),
            ("trajectories", "data cot --samples {answerable} --index {index} --output {trajectories}", "cot",
             o.trajectories, "answerable index", "trajectories"),
            ("policy", "pretrain init --corpus {samples} --output {init}", None, o.policy, "samples", "init"),
            ("shards", "pretrain prepare --trajectories {trajectories} --output {shards} --tokenizer {init}",
             "pretrain", o.shards, "trajectories init", "shards"),
            ("pretrain", "pretrain train", "pretrain",
             [f"model.hf={p['init']}", f"data.blend={json.dumps(['1.0', str(p['shards'])])}",
              f"checkpoint.dir={p['checkpoints']}", "tracking.run_name=demo-pretrain", *o.pretrain],
             "shards init", "checkpoints"),
            ("convert", "pretrain convert mcore-to-hf --ckpt {checkpoints} --hf-config {init} --out {sft}",
             None, [], "checkpoints init", "sft"),
            ("rl", "rl train", "rl",
             [f"policy.model={p['sft']}", f"retriever.index={p['index']}", f"data.samples={p['answerable']}",
              f"trainer.output_dir={p['rl']}", "trainer.run_name=demo-rl", *o.rl],
             "sft index answerable", "rl"),
            ("finetune", f"finetune rl --dataset {EVAL_DATASET} --input {{qa}} --reward token_recall{limit}",
             "rl", [f"policy.model={p['rl'] / 'policy'}", f"retriever.index={p['index']}",
              f"trainer.output_dir={p['finetune']}", "trainer.run_name=demo-finetune", *o.finetune],
             "rl qa index", "finetune"),
            ("eval-corpus", f"eval corpus --dataset {EVAL_DATASET} --input {{qa_eval}} --output {{corpus}}",
             None, [], "qa_eval", "corpus"),
            ("eval-index", "index build --corpus {corpus} --index {eval_index}", None, [], "corpus",
             "eval_index"),
            ("eval-builtin", "eval run --policy builtin --output {floor}", "eval",
             [*self._eval_sets(p["eval_index"]), "run_name=demo-builtin", *o.eval],
             "eval_index qa_eval", "floor"),
            ("eval", "eval run --policy agent --output {evaluated}", "eval",
             [*self._eval_sets(p["eval_index"]), f"agent.backend.hf.model={p['finetune'] / 'policy'}",
              "run_name=demo-policy", *o.eval],
             "finetune eval_index qa_eval", "evaluated"),
        ]  # fmt: skip
        quoted = {name: shlex.quote(str(path)) for name, path in paths.items()}
        for name, words, recipe, overrides, inputs, outputs in table:
            argv = shlex.split(words.format_map(quoted))
            if name in BEAM_STAGES:
                argv += ["--workers", str(c.workers)]
            ins, outs = tuple(p[k] for k in inputs.split()), tuple(p[k] for k in outputs.split())
            stages.append(self._command(name, argv, recipe, overrides, ins, outs))
            if name == "rl":  # the fine-tuning questions: written between RL and fine-tuning
                qa_inputs = (p["qa_train"], p["qa_eval"])
                command = f"(questions of {p['qa_train']} not in {p['qa_eval']} -> {p['qa']})"
                action = partial(write_training_questions, *qa_inputs, p["qa"])
                stages.append(Stage("qa-train", command, action, qa_inputs, (p["qa"],)))
        stage_dirs = [s.outputs[0] for s in stages]
        stages.append(
            Stage(
                "report",
                f"(MLflow run in {EXPERIMENT}, {self.path('summary.json')}, {self.path('plots')})",
                self.report,
                tuple(stage_dirs),
                (self.path("summary.json"), self.path("plots")),
            )
        )
        return stages

    def _eval_sets(self, eval_index: Path) -> list[str]:
        dataset: dict[str, object] = {"name": EVAL_DATASET, "path": self.config.qa_eval}
        if self.config.eval_questions:
            dataset["limit"] = self.config.eval_questions
        return [f"retriever.index={eval_index}", f"datasets={json.dumps([dataset])}"]

    def _command(
        self,
        name: str,
        words: Sequence[str],
        recipe: str | None,
        overrides: Sequence[str],
        inputs: tuple[Path, ...],
        outputs: tuple[Path, ...],
    ) -> Stage:
        """A stage that runs ``ramp WORDS [--config RECIPE] [--set OVERRIDE ...]`` in this process."""
        from ramp.config import resolve_config_path

        argv = list(words)
        if recipe is not None:
            argv += ["--config", recipe]
            inputs = (*inputs, resolve_config_path(recipe))
        argv += [arg for item in overrides for arg in ("--set", item)]
        return Stage(name, shlex.join(["ramp", *argv]), lambda: self._ramp(argv), inputs, outputs)

    def _ramp(self, argv: list[str]) -> None:
        from ramp.cli import run

        code = run(argv)
        if code != 0:
            raise UserError(f"`{shlex.join(['ramp', *argv])}` exited with code {code}")

    def run(self, force: bool = False, only: Sequence[str] = ()) -> list[StageOutcome]:
        """Run (or skip) every stage with the demo's MLflow store; returns what each stage did."""
        check_overrides(self.config)
        self.out.mkdir(parents=True, exist_ok=True)
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        try:
            return self.runner.run(self.stages(), force=force, only=only)
        finally:
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous

    # --- the report ------------------------------------------------------------------------------------

    def report(self) -> None:
        """Every stage's headline numbers and times: one MLflow run with a plot, and summary.json."""
        from ramp.tracking import mlflow_run

        stages = [s.name for s in self.stages() if s.name != "report"]
        records = {name: self.runner.recorded(name) or {} for name in stages}
        times = {name: float(record.get("wall_s", 0.0)) for name, record in records.items()}
        cpu = {name: float(record.get("cpu_s", 0.0)) for name, record in records.items()}
        results = self._results()
        plots = self.path("plots")
        plots.mkdir(parents=True, exist_ok=True)
        _plot_stage_times(times, cpu, plots / "stage_times.png")
        metrics = {f"time/{name}_s": wall for name, wall in times.items()}
        metrics |= {f"cpu/{name}_s": seconds for name, seconds in cpu.items()}
        metrics.update({k: v for k, v in results["metrics"].items() if v is not None})
        params = {"demo": self.config.model_dump(mode="json")}
        with mlflow_run(EXPERIMENT, "demo", params, uri=self.tracking_uri) as mlflow:
            mlflow.log_metrics(metrics)
            mlflow.log_artifact(str(plots / "stage_times.png"), "plots")
            run_id = mlflow.active_run().info.run_id
        summary = {
            "run_id": run_id,
            "tracking_uri": self.tracking_uri,
            "times": times,
            "cpu": cpu,
            "metrics": metrics,
            "notes": results["notes"],
            "plots": [str(p) for p in self.plot_paths()],
        }
        self.path("summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    def plot_paths(self) -> list[Path]:
        patterns = ("plots/*.png", "rl/*.png", "finetune/*.png", "eval/policy/plots/*.png")
        return sorted(p for pattern in patterns for p in self.out.glob(pattern))

    def _results(self) -> dict[str, Any]:
        """Headline numbers from the stages' own outputs and MLflow runs (read back through the client)."""
        samples = _json(self.path("samples/stats.json"))
        answerable = _json(self.path("answerable/stats.json"))
        cot = _json(self.path("trajectories/stats.json"))
        init = _json(self.path("init/ramp-init.json"))
        shards = _json(self.path("pretrain/shards/manifest.json"))
        runs = {name: self._run_metrics(name) for name in ("pretrain", "rl", "finetune", "builtin", "policy")}
        m: dict[str, float | None] = {
            "data/passages": samples["passages"],
            "data/samples": samples["samples"],
            "data/answerable": answerable["kept"],
            "cot/trajectories": cot["kept"],
            "cot/verified_yield": cot["verified_yield"],
            "policy/parameters": init["parameters"],
            "pretrain/packed_rows": shards["rows"],
            "pretrain/final_loss": runs["pretrain"].get("loss"),
            "rl/reward_answer": runs["rl"].get("reward/answer"),
            "rl/curriculum_stage": runs["rl"].get("curriculum/stage"),
            "finetune/reward_answer": runs["finetune"].get("reward/answer"),
        }
        for policy in ("builtin", "policy"):
            for metric in METRICS:
                m[f"eval/{policy}/{metric}"] = runs[policy].get(f"{metric}/{EVAL_DATASET}")
        qa = len(self.path("qa/hotpotqa-train.jsonl").read_text(encoding="utf-8").splitlines())
        notes = {
            "input": f"the dump's first {self.config.max_pages} pages",
            "samples": f"{samples['passages']:,} passages -> {samples['samples']:,} masked samples",
            "index": f"BM25 index of {samples['passages']:,} passages",
            "answerable": f"{answerable['kept']:,} of {answerable['input_samples']:,} samples answerable",
            "trajectories": f"{cot['kept']:,} verified trajectories (yield {cot['verified_yield']:.1%})",
            "policy": f"random Qwen2, {init['parameters']:,} parameters, vocabulary {init['vocab']:,}",
            "shards": f"{shards['packed']} conversations in {shards['rows']} rows "
            f"({shards['packing_efficiency']:.0%} packed)",
            "pretrain": _fmt("final loss", m["pretrain/final_loss"]),
            "convert": "megatron checkpoint -> HF policy",
            "rl": _fmt("answer reward (last step)", m["rl/reward_answer"])
            + _fmt(", curriculum at k =", m["rl/curriculum_stage"], ".0f"),
            "qa-train": f"{qa} HotpotQA questions (the evaluated ones removed)",
            "finetune": _fmt("answer reward (last step)", m["finetune/reward_answer"]),
            "eval-corpus": "distractor paragraphs -> passages",
            "eval-index": "BM25 index of the distractor corpus",
            "eval-builtin": _fmt("EM", _pct(m["eval/builtin/exact_match"]), ".1f"),
            "eval": _fmt("EM", _pct(m["eval/policy/exact_match"]), ".1f"),
        }
        return {"metrics": m, "notes": notes}

    def _run_metrics(self, name: str) -> dict[str, float]:
        """The latest metrics of the newest MLflow run named ``demo-NAME`` in the demo's store."""
        from mlflow import MlflowClient

        client = MlflowClient(self.tracking_uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(
            experiments,
            filter_string=f"attributes.run_name = 'demo-{name}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return dict(runs[0].data.metrics) if runs else {}

    def table(self, outcomes: Sequence[StageOutcome]) -> str:
        """The closing table: every stage with its status, time and result; the scores; where to look."""
        summary = _json(self.path("summary.json"))
        status = {o.name: o.status for o in outcomes}
        width = max(len(name) for name in summary["times"])
        times, cpu = summary["times"], summary["cpu"]
        lines = [f"{'stage':<{width}}  {'status':<7}  {'wall s':>7}  {'CPU s':>7}  result"]
        for name, wall in times.items():
            note = summary["notes"].get(name, "")
            lines.append(
                f"{name:<{width}}  {status.get(name, '-'):<7}  {wall:>7.1f}  {cpu[name]:>7.1f}  {note}"
            )
        total = f"{sum(times.values()):>7.1f}  {sum(cpu.values()):>7.1f}"
        lines.append(f"{'total':<{width}}  {'':<7}  {total}")
        metrics = summary["metrics"]
        lines += ["", f"HotpotQA distractor sample, own corpus  {'EM':>6} {'F1':>6} {'recall':>7}"]
        for policy, label in (("builtin", "built-in search-and-read floor"), ("policy", "demo policy")):
            row = [_pct(metrics.get(f"eval/{policy}/{metric}")) for metric in METRICS]
            lines.append(f"{label:<39} " + " ".join(f"{v:>6.1f}" if v is not None else "     -" for v in row))
        lines += [
            "",
            NEAR_ZERO_NOTE,
            "plots: " + ", ".join(summary["plots"]),
            f"MLflow run {summary['run_id']} (experiment {EXPERIMENT}): "
            f"mlflow ui --backend-store-uri {summary['tracking_uri']}",
        ]
        return "\n".join(lines)


def cut_dump(source: Path, target: Path, pages: int) -> None:
    """The first ``pages`` pages of a MediaWiki XML dump (``.xml`` or ``.xml.bz2``) as a valid bz2 dump."""
    target.parent.mkdir(parents=True, exist_ok=True)
    opener: Any = bz2.open if source.suffix == ".bz2" else open
    seen = 0
    with opener(source, "rt", encoding="utf-8") as src, bz2.open(target, "wt", encoding="utf-8") as dst:
        for line in src:
            dst.write(line)
            seen += "</page>" in line
            if seen == pages:
                dst.write("</mediawiki>\n")
                break


def write_training_questions(train: Path, evaluated: Path, output: Path) -> int:
    """The questions of ``train`` (any HotpotQA layout) minus those of ``evaluated`` (same id or the same
    question text, normalised): fine-tuning never sees an evaluated question. Returns the count."""
    from ramp.qa.loaders import load_qa, write_qa_jsonl
    from ramp.text import normalize

    held_out = load_qa(EVAL_DATASET, evaluated)
    ids = {r.id for r in held_out}
    questions = {normalize(r.question, "squad") for r in held_out}
    kept = [
        r
        for r in load_qa(EVAL_DATASET, train)
        if r.id not in ids and normalize(r.question, "squad") not in questions
    ]
    if not kept:
        raise UserError(f"{train}: every question is among the evaluated ones in {evaluated}")
    return write_qa_jsonl(kept, output)


def load_demo_config(path: str, overrides: Sequence[str] = (), output: str | None = None) -> DemoConfig:
    return load_config(DemoConfig, path, overrides, values={"output": output} if output else None)


def _plot_stage_times(times: dict[str, float], cpu: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.3 * len(times) + 1))
    names = list(times)[::-1]
    rows = range(len(names))
    ax.barh([r + 0.2 for r in rows], [times[n] for n in names], height=0.4, label="wall")
    ax.barh([r - 0.2 for r in rows], [cpu[n] for n in names], height=0.4, label="CPU")
    ax.set_yticks(list(rows), names)
    ax.set_xlabel("seconds")
    ax.legend()
    ax.set_title("RAMP demo: time per stage")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _fmt(label: str, value: float | None, spec: str = ".3f") -> str:
    return f"{label} {value:{spec}}" if value is not None else f"{label} -"
