"""``ramp experiment demo``: every stage of RAMP, end to end, on the bundled data and one CPU machine.

Beam masking of the bundled Wikipedia dump → Lucene index → answerable samples → verified trajectories
(built-in teacher) → a tiny policy from scratch (``ramp pretrain init``) → Megatron pretraining on the
trajectories (CPU path) → conversion to HF → DAPO with the mask-count curriculum → HotpotQA fine-tuning
(DAPO on HotpotQA questions that are not evaluated) → evaluation on the HotpotQA distractor sample against
its own corpus (and the built-in floor) → one MLflow run with the headline numbers, a printed table and
plots. Each stage does what the ``ramp`` command it shows does (calling the same library function in this
process, so imports are paid once), with the bundled recipes and the overrides of ``configs/demo/*.yaml``.
Every stage's config is resolved and validated before any stage runs; a stage's settings are its resolved
config and its command, and :mod:`ramp.stages` skips what is done.

It lives in ``ramp.cli`` (an entry layer) because its stages call the entry folders' jobs (Beam,
Megatron, the RL trainer, evaluation); it imports them at the top, as every command module does.
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

import yaml
from matplotlib.figure import Figure
from mlflow import MlflowClient
from pydantic import BaseModel, Field

from ramp.cli.cot import format_summary
from ramp.cli.eval import format_corpus_stats
from ramp.cli.finetune import qa_rl_config, write_qa_questions
from ramp.cli.ramp_effect import run_world_demo
from ramp.config import StrictModel, load_config, resolve_config_path
from ramp.cot.config import CotConfig
from ramp.data.config import DataConfig
from ramp.errors import UserError
from ramp.eval.run import run_eval
from ramp.experiment.config import RampEffectConfig
from ramp.finetune.dapo import train
from ramp.logs import quiet_logs
from ramp.pipelines.answerability import run_answerability
from ramp.pipelines.cot_builder import run_cot
from ramp.pipelines.ramp_data import run_build
from ramp.pipelines.runner import BeamRun
from ramp.pretrain.convert import mcore_to_hf
from ramp.pretrain.prepare import run_prepare
from ramp.pretrain.train import run_training
from ramp.qa.config import EvalConfig
from ramp.qa.corpus import build_corpus
from ramp.qa.loaders import load_qa, write_qa_jsonl
from ramp.retrieval.config import RetrievalSettings, retriever_location
from ramp.retrieval.indexing import build_index
from ramp.rl.config import RLConfig
from ramp.stages import Stage, StageOutcome, StageRunner
from ramp.text import normalize
from ramp.tracking import mlflow_run
from ramp.train.config import PretrainConfig
from ramp.train.init import InitConfig, init_policy

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
EXPERIMENT = "ramp-demo"
EVAL_DATASET = "hotpotqa"
INDEX_THREADS = 4  # `ramp index build`'s default
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
    world: list[str] = Field(default_factory=list)  # the world stage (its RampEffectConfig file)


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
    # the world stage: arm A of `ramp experiment ramp-effect` before QA on one small world (None: skipped)
    world: str | None = "demo/world"
    overrides: StageOverrides = Field(default_factory=StageOverrides)


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
        """Every stage, its config resolved and validated (a bad override fails here, before any stage)."""
        c, o = self.config, self.config.overrides
        p = {name: self.out / rel for name, rel in OUTPUT_PATHS.items()}
        p |= {"dump": Path(c.input), "qa_train": Path(c.qa_train), "qa_eval": Path(c.qa_eval)}
        stages: list[Stage] = []
        if c.max_pages is not None:
            cut = self.path("input", f"{p['dump'].name.split('.')[0]}-{c.max_pages}-pages.xml.bz2")
            action = partial(cut_dump, p["dump"], cut, c.max_pages)
            command = f"(first {c.max_pages} pages of {p['dump']} -> {cut})"
            stages.append(Stage("input", action, {"pages": c.max_pages}, (p["dump"],), (cut,), command))
            p["dump"] = cut
        workers = ["--workers", str(c.workers)]
        index = {f"retriever.{k}": v for k, v in retriever_location(p["index"], None).items()}

        data = load_config(DataConfig, "data", [*o.samples, "source.format=xml"])
        stages.append(
            self._stage(
                "samples",
                [
                    "data",
                    "build",
                    "--input",
                    p["dump"],
                    "--format",
                    "xml",
                    "--output",
                    p["samples"],
                    *workers,
                ],
                "data",
                o.samples,
                data,
                partial(_build_samples, p["dump"], p["samples"], data, c.workers),
                (p["dump"],),
                (p["samples"],),
            )
        )
        stages.append(
            self._stage(
                "index",
                ["index", "build", "--corpus", p["samples"], "--index", p["index"]],
                None,
                [],
                {"threads": INDEX_THREADS},
                partial(_build_index, p["samples"], p["index"]),
                (p["samples"],),
                (p["index"],),
            )
        )
        retrieval = load_config(RetrievalSettings, "retrieval", o.answerable, values=index)
        stages.append(
            self._stage(
                "answerable",
                [
                    "data",
                    "answerability",
                    "--samples",
                    p["samples"],
                    "--index",
                    p["index"],
                    "--output",
                    p["answerable"],
                    *workers,
                ],
                "retrieval",
                o.answerable,
                retrieval,
                partial(_answerability, p["samples"], p["answerable"], retrieval, c.workers),
                (p["samples"], p["index"]),
                (p["answerable"],),
            )
        )
        cot = load_config(CotConfig, "cot", o.trajectories, values=index)
        stages.append(
            self._stage(
                "trajectories",
                [
                    "data",
                    "cot",
                    "--samples",
                    p["answerable"],
                    "--index",
                    p["index"],
                    "--output",
                    p["trajectories"],
                    *workers,
                ],
                "cot",
                o.trajectories,
                cot,
                partial(_trajectories, p["answerable"], p["trajectories"], cot, c.workers),
                (p["answerable"], p["index"]),
                (p["trajectories"],),
            )
        )
        init = load_config(InitConfig, None, o.policy, {"tokenizer": "bpe", "vocab_size": 4000})
        stages.append(
            self._stage(
                "policy",
                ["pretrain", "init", "--corpus", p["samples"], "--output", p["init"]],
                None,
                o.policy,
                init,
                partial(_init_policy, p["samples"], p["init"], init),
                (p["samples"],),
                (p["init"],),
            )
        )
        prepare = load_config(
            PretrainConfig, "pretrain", o.shards, values={"model.tokenizer": str(p["init"])}
        )
        stages.append(
            self._stage(
                "shards",
                [
                    "pretrain",
                    "prepare",
                    "--trajectories",
                    p["trajectories"],
                    "--output",
                    p["shards"],
                    "--tokenizer",
                    p["init"],
                ],
                "pretrain",
                o.shards,
                prepare,
                partial(_prepare, p["trajectories"], p["shards"], prepare),
                (p["trajectories"], p["init"]),
                (p["shards"],),
            )
        )
        sets = [
            f"model.hf={p['init']}",
            f"data.blend={json.dumps(['1.0', str(p['shards'])])}",
            f"checkpoint.dir={p['checkpoints']}",
            "tracking.run_name=demo-pretrain",
            *o.pretrain,
        ]
        pretrain = load_config(PretrainConfig, "pretrain", sets)
        stages.append(
            self._stage(
                "pretrain",
                ["pretrain", "train"],
                "pretrain",
                sets,
                pretrain,
                partial(_pretrain, pretrain),
                (p["shards"], p["init"]),
                (p["checkpoints"],),
            )
        )
        stages.append(
            self._stage(
                "convert",
                [
                    "pretrain",
                    "convert",
                    "mcore-to-hf",
                    "--ckpt",
                    p["checkpoints"],
                    "--hf-config",
                    p["init"],
                    "--out",
                    p["sft"],
                ],
                None,
                [],
                None,
                partial(_convert, p["checkpoints"], p["init"], p["sft"]),
                (p["checkpoints"], p["init"]),
                (p["sft"],),
            )
        )
        sets = [
            f"policy.model={p['sft']}",
            f"retriever.index={p['index']}",
            f"data.samples={p['answerable']}",
            f"trainer.output_dir={p['rl']}",
            "trainer.run_name=demo-rl",
            *o.rl,
        ]
        rl = load_config(RLConfig, "rl", sets)
        stages.append(
            self._stage(
                "rl",
                ["rl", "train"],
                "rl",
                sets,
                rl,
                partial(_train_rl, rl),
                (p["sft"], p["index"], p["answerable"]),
                (p["rl"],),
            )
        )
        qa_inputs = (p["qa_train"], p["qa_eval"])
        stages.append(
            Stage(
                "qa-train",
                partial(write_training_questions, *qa_inputs, p["qa"]),
                {"dataset": EVAL_DATASET},
                qa_inputs,
                (p["qa"],),
                f"(questions of {p['qa_train']} not in {p['qa_eval']} -> {p['qa']})",
            )
        )
        limit = ["--limit", str(c.finetune_questions)] if c.finetune_questions else []
        sets = [
            f"policy.model={p['rl'] / 'policy'}",
            f"retriever.index={p['index']}",
            f"trainer.output_dir={p['finetune']}",
            "trainer.run_name=demo-finetune",
            *o.finetune,
        ]
        finetune = qa_rl_config("rl", sets, "token_recall")
        stages.append(
            self._stage(
                "finetune",
                [
                    "finetune",
                    "rl",
                    "--dataset",
                    EVAL_DATASET,
                    "--input",
                    p["qa"],
                    "--reward",
                    "token_recall",
                    *limit,
                ],
                "rl",
                sets,
                finetune,
                partial(_finetune, finetune, p["qa"], c.finetune_questions),
                (p["rl"], p["qa"], p["index"]),
                (p["finetune"],),
            )
        )
        stages.append(
            self._stage(
                "eval-corpus",
                [
                    "eval",
                    "corpus",
                    "--dataset",
                    EVAL_DATASET,
                    "--input",
                    p["qa_eval"],
                    "--output",
                    p["corpus"],
                ],
                None,
                [],
                {"dataset": EVAL_DATASET},
                partial(_eval_corpus, p["qa_eval"], p["corpus"]),
                (p["qa_eval"],),
                (p["corpus"],),
            )
        )
        stages.append(
            self._stage(
                "eval-index",
                ["index", "build", "--corpus", p["corpus"], "--index", p["eval_index"]],
                None,
                [],
                {"threads": INDEX_THREADS},
                partial(_build_index, p["corpus"], p["eval_index"]),
                (p["corpus"],),
                (p["eval_index"],),
            )
        )
        for name, policy, output, model, inputs in (
            ("eval-builtin", "builtin", p["floor"], [], ()),
            (
                "eval",
                "agent",
                p["evaluated"],
                [f"agent.backend.hf.model={p['finetune'] / 'policy'}"],
                (p["finetune"],),
            ),
        ):
            sets = [
                *self._eval_sets(p["eval_index"]),
                *model,
                f"run_name=demo-{policy.replace('agent', 'policy')}",
                *o.eval,
            ]
            evaluation = load_config(
                EvalConfig, "eval", sets, values={"policy": policy, "output_dir": str(output)}
            )
            stages.append(
                self._stage(
                    name,
                    ["eval", "run", "--policy", policy, "--output", output],
                    "eval",
                    sets,
                    evaluation,
                    partial(_evaluate, evaluation),
                    (*inputs, p["eval_index"], p["qa_eval"]),
                    (output,),
                )
            )
        if c.world is not None:
            stages.append(self._world_stage(c.world, o.world))
        stage_dirs = [s.outputs[0] for s in stages]
        command = f"(MLflow run in {EXPERIMENT}, {self.path('summary.json')}, {self.path('plots')})"
        outputs = (self.path("summary.json"), self.path("plots"))
        settings = {"experiment": EXPERIMENT, "tracking_uri": self.tracking_uri}
        stages.append(Stage("report", self.report, settings, tuple(stage_dirs), outputs, command))
        return stages  # fmt: skip

    def _stage(
        self,
        name: str,
        words: Sequence[str | Path],
        recipe: str | None,
        overrides: Sequence[str],
        config: Any,
        action: Callable[[], object],
        inputs: tuple[Path, ...],
        outputs: tuple[Path, ...],
    ) -> Stage:
        """A stage that does what ``ramp WORDS [--config RECIPE] [--set OVERRIDE ...]`` does; its settings
        are its resolved config and that command; the prompt templates the config names are inputs."""
        argv = [str(w) for w in words]
        if recipe is not None:
            argv += ["--config", recipe]
        argv += [arg for item in overrides for arg in ("--set", item)]
        command = shlex.join(["ramp", *argv])
        settings = {"command": command, "config": config}
        return Stage(name, action, settings, (*inputs, *prompt_files(config)), outputs, command)

    def _world_stage(self, recipe: str, overrides: Sequence[str]) -> Stage:
        """Arm A of the RAMP-effect experiment before QA, on one small world: data, RAMP SFT, DAPO with the
        curriculum, the held-out RAMP copy rate and answer reward after each (``ramp.cli.ramp_effect``)."""
        out = self.path("world")
        fixed = [f"output={out}", "seeds=1", "ablation=false", f"tracking.tracking_uri={self.tracking_uri}"]
        config = load_config(RampEffectConfig, recipe, [*overrides, *fixed])
        command = shlex.join(["ramp", "experiment", "ramp-effect", "--config", recipe])
        command += "  (arm A before QA, one seed)"
        settings = {"command": command, "config": config}
        return Stage("world", partial(run_world_demo, config, self.echo), settings, (), (out,), command)

    def _eval_sets(self, eval_index: Path) -> list[str]:
        dataset: dict[str, object] = {"name": EVAL_DATASET, "path": self.config.qa_eval}
        if self.config.eval_questions:
            dataset["limit"] = self.config.eval_questions
        return [f"retriever.index={eval_index}", f"datasets={json.dumps([dataset])}"]

    def run(self, force: bool = False, only: Sequence[str] = ()) -> list[StageOutcome]:
        """Run (or skip) every stage with the demo's MLflow store; returns what each stage did."""
        stages = self.stages()
        self.out.mkdir(parents=True, exist_ok=True)
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        try:
            return self.runner.run(stages, force=force, only=only)
        finally:
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous

    # --- the report ------------------------------------------------------------------------------------

    def report(self) -> None:
        """Every stage's headline numbers and times: one MLflow run with a plot, and summary.json."""
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
        patterns = ("plots/*.png", "rl/*.png", "finetune/*.png", "eval/policy/plots/*.png", "world/world.png")
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
        world = _json(self.path("world/world.json")) if self.config.world is not None else None
        if world is not None:
            m |= {f"world/copy_rate_{stage}": rate for stage, rate in world["copy_rate"].items()}
            m |= {f"world/answer_reward_{stage}": r for stage, r in world["answer_reward"].items()}
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
        if world is not None:
            copy, reward, curve = world["copy_rate"], world["answer_reward"], world["dapo_reward"]
            quarter = max(1, len(curve) // 4)
            notes["world"] = (
                f"held-out RAMP copy rate {copy['init']:.2f} -> {copy['ramp-sft']:.2f} (RAMP SFT) -> "
                f"{copy['dapo']:.2f} (DAPO); answer reward {reward['ramp-sft']:.2f} -> {reward['dapo']:.2f}; "
                f"DAPO batch reward {_mean(curve[:quarter]):.2f} -> {_mean(curve[-quarter:]):.2f} "
                f"(first -> last {quarter} steps)"
            )
        return {"metrics": m, "notes": notes}

    def _run_metrics(self, name: str) -> dict[str, float]:
        """The latest metrics of the newest MLflow run named ``demo-NAME`` in the demo's store."""
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


def prompt_files(config: Any) -> tuple[Path, ...]:
    """The prompt templates a stage with a config model reads: the default ones and any its config names
    (``*prompts`` fields)."""
    if not isinstance(config, BaseModel):
        return ()
    names = {"prompts"}
    pending: list[Any] = [config.model_dump(mode="json")]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            names |= {v for k, v in value.items() if k.endswith("prompts") and isinstance(v, str)}
            pending += list(value.values())
        elif isinstance(value, list):
            pending += value
    return tuple(sorted({resolve_config_path(name) for name in names}))


# --- what each stage runs: the library function of its `ramp` command ---


def _build_samples(dump: Path, out: Path, config: DataConfig, workers: int) -> None:
    with quiet_logs(str(out), "data-build", verbose=False):
        run_build([str(dump)], str(out), config, BeamRun(workers))


def _build_index(corpus: Path, index: Path) -> None:
    build_index([corpus], index, threads=INDEX_THREADS)


def _answerability(samples: Path, out: Path, settings: RetrievalSettings, workers: int) -> None:
    with quiet_logs(str(out), "answerability", verbose=False):
        run_answerability(
            str(samples), str(out), settings.retriever, settings.answerability, BeamRun(workers)
        )


def _trajectories(samples: Path, out: Path, config: CotConfig, workers: int) -> None:
    with quiet_logs(str(out), "cot", verbose=False):
        stats = run_cot(samples, out, config, BeamRun(workers))
    print(format_summary(stats))  # what `ramp data cot` prints


def _init_policy(corpus: Path, out: Path, config: InitConfig) -> None:
    init_policy([corpus], out, config)


def _prepare(trajectories: Path, out: Path, config: PretrainConfig) -> None:
    run_prepare(str(trajectories), str(out), config)


def _pretrain(config: PretrainConfig) -> None:
    run_training(config, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def _convert(checkpoints: Path, hf_config: Path, out: Path) -> None:
    mcore_to_hf(checkpoints, hf_config, out)


def _train_rl(config: RLConfig) -> None:
    train(config)


def _finetune(config: RLConfig, questions: Path, limit: int | None) -> None:
    write_qa_questions(config, EVAL_DATASET, str(questions), limit)
    train(config)


def _eval_corpus(questions: Path, out: Path) -> None:
    print(format_corpus_stats(build_corpus(EVAL_DATASET, questions, out), out))  # as `ramp eval corpus`


def _evaluate(config: EvalConfig) -> None:
    run_eval(config)


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
    fig = Figure(figsize=(7, 0.3 * len(times) + 1))
    ax = fig.subplots()
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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _fmt(label: str, value: float | None, spec: str = ".3f") -> str:
    return f"{label} {value:{spec}}" if value is not None else f"{label} -"
