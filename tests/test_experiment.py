"""The RAMP-effect experiment: policy initialisation, tagged spans through the masking job, world-oracle
trajectories, and a tiny end-to-end run whose rerun gives identical metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ramp.agent.task import task_from_qa
from ramp.cli.ramp_effect import run_experiment
from ramp.config import load_config
from ramp.cot.trajectories import read_trajectories
from ramp.data.sources import TaggedSpan, article_from_fields, passage_spans
from ramp.data.splitting import split_passages
from ramp.experiment.config import RampEffectConfig
from ramp.prompts import load_templates
from ramp.train.init import InitConfig, InitModelConfig, init_policy

CORPUS = [
    {"id": "a", "title": "Kraeth", "text": "Kraeth Boun was a painter, born in 1834 in the city of Zalex."},
    {
        "id": "b",
        "title": "Zalex",
        "text": "Zalex is a municipality of the country Mirvand. It has 12,400 people.",
    },
]


def _init(tmp_path: Path, name: str, seed: int, kind: str = "word") -> Path:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    model = InitModelConfig(
        hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1, seed=seed
    )
    init_policy([corpus], tmp_path / name, InitConfig(tokenizer=kind, vocab_size=2000, model=model))  # type: ignore[arg-type]
    return tmp_path / name


def test_init_word_tokenizer_and_seeded_model(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ramp.agent.protocol import TAG_STRINGS

    first, again, other = _init(tmp_path, "a", 3), _init(tmp_path, "b", 3), _init(tmp_path, "c", 4)
    tokenizer = AutoTokenizer.from_pretrained(first)  # what every stage loads (Qwen2Tokenizer for qwen2)
    for word in ("Kraeth", " Boun", " Zalex", " municipality", " painter"):  # as the corpus writes them
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
    assert len(tokenizer.encode("1834", add_special_tokens=False)) == 4  # digits stay single tokens
    for tag in TAG_STRINGS:
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1, tag
    messages = [{"role": "user", "content": "Where was Kraeth Boun born?"}]
    text = str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    text += "<think>Search.</think><search>Kraeth Boun born</search>"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    models = [AutoModelForCausalLM.from_pretrained(d) for d in (first, again, other)]
    assert models[0].config.vocab_size == len(tokenizer)
    weights = [m.model.layers[0].mlp.up_proj.weight for m in models]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert json.loads((first / "ramp-init.json").read_text())["parameters"] == sum(
        p.numel() for p in models[0].parameters()
    )


def test_init_command_writes_a_bpe_policy(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ramp.cli import app

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    args = [
        "pretrain",
        "init",
        "--corpus",
        str(corpus),
        "--output",
        str(tmp_path / "p"),
        "--tokenizer",
        "bpe",
    ]
    result = CliRunner().invoke(app, [*args, "--vocab-size", "400", "--set", "model.hidden_size=32"])
    assert result.exit_code == 0, result.output
    summary = result.output[result.output.index('{"output"') :]  # after the progress bar
    assert json.loads(summary)["tokenizer"] == "bpe"
    bad = CliRunner().invoke(app, [*args, "--set", "model.hidden_size=30"])  # 30 heads-indivisible
    assert bad.exit_code == 2


def test_tagged_spans_follow_their_passages() -> None:
    text = "Kraeth Boun was  born in 1834.\nHe lived in Zalex. Zalex is far."
    bodies = split_passages(text, target_words=6)
    assert len(bodies) >= 2
    spans = [
        TaggedSpan(0, 11, "PERSON", "entity"),
        TaggedSpan(text.index("1834"), text.index("1834") + 4, "DATE", "date"),
        TaggedSpan(text.index("Zalex"), text.index("Zalex") + 5, "GPE", "entity"),
        TaggedSpan(text.index("1834"), text.index("He") + 2, "X", "entity"),  # crosses two passages
    ]
    mapped = passage_spans(text, bodies, spans)
    found = [
        (body[s.start : s.end], s.label) for body, tags in zip(bodies, mapped, strict=True) for s in tags
    ]
    assert found == [("Kraeth Boun", "PERSON"), ("1834", "DATE"), ("Zalex", "GPE")]
    bad = article_from_fields(
        {"id": "a", "title": "t", "text": "abc", "spans": [{"start": 1, "end": 9}]}, "r"
    )
    assert getattr(bad, "reason", None) == "bad_spans"


def test_tagged_extractor_masks_the_world(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from ramp.pipelines.ramp_data import run_build

    from ramp.data.config import DataConfig
    from ramp.experiment.world import generate_world

    world = generate_world(seed=2, countries=2, cities_per_country=2, people=6, companies=4)
    paths = world.write(tmp_path / "world")
    with paths["articles"].open("a") as f:  # one row without tags: rejected with the reason, not dropped
        f.write(
            json.dumps(
                {
                    "id": "untagged",
                    "title": "U",
                    "text": "An untagged row with quite enough words to pass the filter.",
                }
            )
            + "\n"
        )
    cfg = load_config(DataConfig, "data", ["source.format=jsonl", "spans.extractor=tagged"])
    stats = run_build([str(paths["articles"])], str(tmp_path / "samples"), cfg, chunk_mb=0)
    assert stats["input_records"] == len(world.articles) + 1 == stats["samples"] + stats["rejected"]
    rejected = [
        json.loads(line)
        for f in (tmp_path / "samples").glob("rejected-*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert any(r["record_id"] == "untagged#0" and r["reason"] == "extractor_failed" for r in rejected)
    tagged = {(a.id, a.text[s.start : s.end]) for a in world.articles for s in a.spans}
    rows = [
        r
        for f in sorted((tmp_path / "samples").glob("samples-*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    assert rows
    for row in rows:
        for mask in row["masks"]:
            assert (row["article_id"], mask["text"]) in tagged
            assert row["passage"][mask["char_start"] : mask["char_end"]] == mask["text"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RampEffectConfig, dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("ramp-effect")
    cfg = load_config(
        RampEffectConfig,
        "experiment/ramp_effect_tiny",
        [f"output={root / 'run'}", f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}"],
    )
    return cfg, run_experiment(cfg, echo=lambda line: None), root


def test_tiny_experiment_end_to_end(tiny_run: tuple[RampEffectConfig, dict[str, Any], Path]) -> None:
    from mlflow.tracking import MlflowClient

    cfg, results, root = tiny_run
    out = Path(cfg.output)
    assert results["verdict"] in ("shown", "refuted", "inconclusive")
    assert set(results["verdicts"]) == {"A-B", "A-C"}
    assert set(results["gate"]) >= {"ramp_copy_rate", "per_seed", "passed"}
    assert len(results["gate"]["per_seed"]) == cfg.seeds
    assert set(results["arms"]) == {"A", "B", "C"}
    for arm in results["arms"].values():
        assert set(arm["first_query_accuracy"]) == {"mean", "std", "per_seed"}
    for name in ("A-B", "A-C"):
        diff = results["differences"][name]["first_query_accuracy"]
        assert len(diff["per_seed"]) == cfg.seeds and diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    assert set(results["baselines"]) == {"majority", "first_option"}
    assert [s["world_seed"] for s in results["seeds"]] == [cfg.world.seed + s for s in range(cfg.seeds)]
    assert json.loads((out / "results.json").read_text())["verdict"] == results["verdict"]
    for seed in range(cfg.seeds):
        data = json.loads((out / f"seed-{seed}" / "data" / "data.json").read_text())
        assert data["ramp_trajectories"] > 0 and data["questions"]["test"] == cfg.questions.test
        assert data["ramp_renamed_copies"] == cfg.renamed_copies * data["ramp_trajectories"] > 0
        held_out = [
            json.loads(x) for x in (out / f"seed-{seed}" / "data" / "qa-test.jsonl").read_text().splitlines()
        ]
        trained = {
            json.loads(x)["id"]
            for x in (out / f"seed-{seed}" / "data" / "qa-train.jsonl").read_text().splitlines()
        }
        assert len(held_out) == cfg.questions.test and not trained & {q["id"] for q in held_out}
    # the oracle's trajectories and every stage's tasks read the experiment's prompts, not the defaults
    templates = load_templates(cfg.prompts)
    assert templates.system != load_templates().system
    data = out / "seed-0" / "data"
    trained_messages = {t.sample_id: t.messages[:2] for t in read_trajectories(data / "qa-trajectories")}
    for row in (json.loads(x) for x in (data / "qa-train.jsonl").read_text().splitlines()):
        assert list(trained_messages[row["id"]]) == list(task_from_qa(row, templates).messages)
    assert (out / "ramp_effect.png").stat().st_size > 0
    assert "| A-B |" in (out / "results.md").read_text()
    assert set(results["grid"]["chosen"]) == {"A", "B", "C"}
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    parent = client.get_run(results["mlflow_run_id"])
    assert parent.data.metrics["A/exact_match"] == results["arms"]["A"]["exact_match"]["mean"]
    assert "diff/A-B/first_query_accuracy" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == sorted(
        f"{arm}-seed{s}" for arm in ("A", "B", "C") for s in range(cfg.seeds)
    )


def _stage_times(out: Path) -> dict[str, int]:
    """Every stage marker's modification time (a rerun that skips touches none)."""
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("seed-*/.stages/**/*.json"))
    }


def _job_logs(out: Path) -> dict[Path, int]:
    """Every job log's modification time (a job that runs on a worker appends to its log)."""
    return {p: p.stat().st_mtime_ns for p in sorted(out.glob("logs/seed-*.log"))}


def test_tiny_experiment_reruns_exactly_what_a_setting_changes(
    tiny_run: tuple[RampEffectConfig, dict[str, Any], Path],
) -> None:
    """Unchanged: nothing reruns (no worker starts) and the results are the same. One DAPO setting
    changed: DAPO and everything after it rerun (and report the new setting), nothing before it or in
    other arms."""
    cfg, first, _ = tiny_run
    out = Path(cfg.output)
    before, logs = _stage_times(out), _job_logs(out)
    again = run_experiment(cfg, echo=lambda line: None)
    assert _stage_times(out) == before and _job_logs(out) == logs  # no job even started a worker
    assert {k: v for k, v in again.items() if k != "mlflow_run_id"} == {
        k: v for k, v in first.items() if k != "mlflow_run_id"
    }
    changed = cfg.model_copy(update={"dapo": {**cfg.dapo, "trainer": {**cfg.dapo["trainer"], "lr": 3.0e-4}}})
    third = run_experiment(changed, echo=lambda line: None)
    after = _stage_times(out)
    rerun = {name.split("/.stages/")[1] for name in after if after[name] != before.get(name)}
    for seed in range(cfg.seeds):
        assert f"seed-{seed}/.stages/A/dapo.json" in {k for k in after if after[k] != before.get(k)}
    assert {"A/dapo.json", "A/measure-dapo.json", "A/qa.json", "A/eval.json"} <= rerun
    assert not {"data.json", "init.json", "A/ramp-sft.json", "B/qa.json", "B/eval.json", "C/lm.json"} & rerun
    assert third["dapo"]["lr_A"] == [3.0e-4] * cfg.seeds != first["dapo"]["lr_A"]


def test_oracle_queries_copy_names_as_the_prompt_tokenizes_them(
    tiny_run: tuple[RampEffectConfig, dict[str, Any], Path],
) -> None:
    """A name in the first query is the very token ids the prompt holds (`` Name``, not ``Name``), so a
    policy can learn to copy it; a short answer is written the same way (`` Name``)."""
    from transformers import AutoTokenizer

    from ramp.agent.protocol import render_trajectory

    cfg, _, _ = tiny_run
    data = Path(cfg.output) / "seed-0" / "data"
    tokenizer = AutoTokenizer.from_pretrained(Path(cfg.output) / "seed-0" / "init")
    search, search_end = (tokenizer.encode(t, add_special_tokens=False)[0] for t in ("<search>", "</search>"))
    checked = 0
    for folder in ("ramp-trajectories", "qa-trajectories"):
        for trajectory in read_trajectories(data / folder):
            rendered = render_trajectory(trajectory.messages, tokenizer)
            ids, prompt = rendered.input_ids, rendered.input_ids[: rendered.prompt_length]
            name = next(w for w in trajectory.queries[0].split() if w[0].isupper())
            start = ids.index(search, rendered.prompt_length) + 1
            end = ids.index(search_end, start)
            copied = tokenizer.encode(" " + name, add_special_tokens=False)
            assert any(ids[i : i + len(copied)] == copied for i in range(start, end)), trajectory.queries[0]
            assert any(prompt[i : i + len(copied)] == copied for i in range(len(prompt))), name
            if folder == "qa-trajectories":
                answer = tokenizer.encode(" " + trajectory.answer, add_special_tokens=False)
                assert ids[-len(answer) - 2 : -2] == answer  # <answer> Name</answer><|endoftext|>
            checked += 1
    assert checked > cfg.questions.train
