"""The evaluation harness end to end: the distractor corpus and a real Lucene index of it, the builtin
floor through the CLI, a tiny HF model killed half-way and resumed, a scripted agent that searches,
the LLM judge, MLflow (sqlite) read back through the client, and `ramp eval compare`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ramp.cli import run as ramp
from ramp.config import load_config
from ramp.qa.config import EvalConfig
from ramp.qa.scoring import METRIC_NAMES, score

ROOT = Path(__file__).resolve().parent.parent
DISTRACTOR = ROOT / "data" / "hotpotqa-dev-distractor-53.json"


@pytest.fixture(scope="module")
def distractor_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`ramp eval corpus` then `ramp index build` over the 53 distractor questions' paragraphs."""
    base = tmp_path_factory.mktemp("distractor")
    corpus = base / "corpus"
    assert (
        ramp(["eval", "corpus", "--dataset", "hotpotqa", "--input", str(DISTRACTOR), "--output", str(corpus)])
        == 0
    )
    stats = json.loads((corpus / "corpus-stats.json").read_text())
    assert stats == {"dataset": "hotpotqa", "paragraphs": 522, "passages": 521, "duplicates": 1, "empty": 0}
    index = base / "index"
    assert ramp(["index", "build", "--corpus", str(corpus), "--index", str(index), "--threads", "2"]) == 0
    return index


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _config(tmp: Path, index: Path, store: str, name: str, **extra) -> Path:
    data = {
        "experiment": "eval-tests",
        "run_name": name,
        "tracking_uri": store,
        "output_dir": str(tmp / name),
        "retriever": {"kind": "lucene", "index": str(index)},
        "datasets": [{"name": "hotpotqa", "path": str(DISTRACTOR)}],
        "agent": {"search": {"top_k": 3}},
        **extra,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _client(store: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(store)


def _runs(store: str, name: str) -> list:
    client = _client(store)
    experiment = client.get_experiment_by_name("eval-tests")
    return client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{name}'")


def _artifacts(store: str, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in _client(store).list_artifacts(run_id, path):
        found |= _artifacts(store, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_corpus_holds_every_supporting_paragraph(distractor_index):
    from ramp.qa import load_qa
    from ramp.retrieval.lucene import LuceneRetriever

    records = load_qa("hotpotqa", DISTRACTOR)
    corpus = pq.read_table(distractor_index.parent / "corpus" / "passages-00000.parquet").to_pylist()
    titles = {row["title"] for row in corpus}
    assert all(t in titles for r in records for t in r.metadata["supporting_titles"])
    assert len({row["passage_id"] for row in corpus}) == len(corpus)
    retriever = LuceneRetriever(distractor_index)
    try:
        [hits] = retriever.search([records[0].question], k=5)
    finally:
        retriever.close()
    assert "Scott Derrickson#0" in {h.doc_id for h in hits}  # a supporting paragraph of question 0


def test_builtin_floor_through_the_cli_logged_to_mlflow(tmp_path, distractor_index, store, capsys):
    config = _config(tmp_path, distractor_index, store, "floor", chunk_size=20)
    assert ramp(["eval", "run", "--config", str(config), "--policy", "builtin", "--no-progress"]) == 0
    assert "53 questions (53 answered now)" in capsys.readouterr().out
    rows = pq.read_table(tmp_path / "floor" / "predictions.parquet").to_pylist()
    assert [(r["dataset"], r["position"]) for r in rows] == [("hotpotqa", i) for i in range(53)]
    for row in rows:  # every stored metric is the official one of the stored prediction
        assert {m: row[m] for m in METRIC_NAMES} == score(row["prediction"], row["golden_answers"])
        assert row["num_searches"] == 1 and row["queries"] == [row["question"]]
        assert len(row["retrieved_ids"][0]) == 3
    [run] = _runs(store, "floor")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    for metric in METRIC_NAMES:
        assert metrics[f"{metric}/hotpotqa"] == pytest.approx(sum(r[metric] for r in rows) / 53)
    assert metrics["exact_match/hotpotqa"] > 0.1  # the reader finds answers, not just "yes"
    assert "exact_match/hotpotqa/bridge" in metrics and "f1/hotpotqa/comparison" in metrics
    params = run.data.params
    assert (params["policy"], params["model"], params["k"], params["datasets"]) == (
        "builtin",
        "builtin",
        "3",
        "hotpotqa",
    )
    assert params["retriever"] == f"lucene:{distractor_index}"
    expected = {
        "predictions.json",
        "predictions.parquet",
        "plots/datasets.png",
        "plots/recall_vs_searches.png",
    }
    assert expected <= _artifacts(store, run.info.run_id)
    store_dir = Path(store.removeprefix("sqlite:///")).parent
    assert run.info.artifact_uri.startswith((store_dir / "mlartifacts").as_uri())  # not ./mlruns


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_model import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer = tiny_tokenizer()
    tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tiny_agent(model: Path) -> dict:
    return {
        "backend": {"kind": "hf", "hf": {"model": str(model), "device": "cpu", "dtype": "float32"}},
        "rollout": {"max_turns": 3, "max_new_tokens_per_turn": 24, "max_total_new_tokens": 48},
        "search": {"top_k": 3},
    }


def test_tiny_model_run_killed_half_way_resumes_to_identical_rows(
    tmp_path, distractor_index, store, tiny_checkpoint
):
    extra = {"policy": "agent", "chunk_size": 2, "agent": _tiny_agent(tiny_checkpoint)}
    extra["datasets"] = [{"name": "hotpotqa", "path": str(DISTRACTOR), "limit": 12}]
    resumed = _config(tmp_path, distractor_index, store, "tiny-resumed", **extra)
    parts = tmp_path / "tiny-resumed" / "parts"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ramp", "eval", "run", "--config", str(resumed), "--no-progress"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    markers = tmp_path / "tiny-resumed" / ".stages"  # a part is done once its marker is written
    deadline = time.monotonic() + 120
    while not (markers.is_dir() and list(markers.glob("hotpotqa-*.json"))) and process.poll() is None:
        assert time.monotonic() < deadline, "no part written within 120 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    done_before = len(list(markers.glob("hotpotqa-*.json")))
    assert len(list(parts.glob("*.parquet"))) in (done_before, done_before + 1)  # one may lack its marker
    assert 1 <= done_before < 6  # killed half-way
    [killed] = _runs(store, "tiny-resumed")
    assert killed.info.status == "RUNNING"  # SIGKILL: MLflow never heard the end

    from ramp.eval.run import run_eval

    result = run_eval(load_config(EvalConfig, resumed), progress=False)  # the restart
    assert result.computed == 12 - 2 * done_before
    reference = run_eval(
        load_config(EvalConfig, _config(tmp_path, distractor_index, store, "tiny-reference", **extra)),
        progress=False,
    )
    rows = pq.read_table(result.predictions).to_pylist()
    assert rows == pq.read_table(reference.predictions).to_pylist()
    assert len({r["id"] for r in rows}) == len(rows) == 12
    assert {r["finish_reason"] for r in rows} <= {"answer", "eos", "length", "token_budget", "max_turns"}

    again = run_eval(load_config(EvalConfig, resumed), progress=False)  # finished: nothing to redo
    assert again.computed == 0 and pq.read_table(again.predictions).to_pylist() == rows
    table = json.loads(
        Path(_client(store).download_artifacts(result.run_id, "predictions.json", str(tmp_path))).read_text()
    )
    assert [row[table["columns"].index("id")] for row in table["data"]] == [r["id"] for r in rows]  # no dupes

    [run] = _runs(store, "tiny-resumed")  # one run, continued
    assert run.info.run_id == killed.info.run_id == result.run_id and run.info.status == "FINISHED"
    [ref] = _runs(store, "tiny-reference")
    for metric in METRIC_NAMES:
        assert run.data.metrics[f"{metric}/hotpotqa"] == ref.data.metrics[f"{metric}/hotpotqa"]
    assert run.data.params["checkpoint"] == str(tiny_checkpoint)
    assert (run.data.params["model"], run.data.params["max_turns"]) == (tiny_checkpoint.name, "3")


def _mtimes(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root``: its modification time (ns) and inode (a replaced file has a
    new one)."""
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_ino) for p in root.rglob("*")}


def test_a_changed_setting_reruns_its_parts_and_an_unchanged_rerun_touches_nothing(
    tmp_path, distractor_index, store
):
    from ramp.eval.run import run_eval

    extra = {"policy": "builtin", "chunk_size": 4}
    extra["datasets"] = [{"name": "hotpotqa", "path": str(DISTRACTOR), "limit": 8}]
    config = _config(tmp_path, distractor_index, store, "floor-resume", **extra)
    first = run_eval(load_config(EvalConfig, config), progress=False)
    assert first.computed == 8
    out, db = tmp_path / "floor-resume", Path(store.removeprefix("sqlite:///"))
    before, db_before = _mtimes(out), db.stat().st_mtime_ns
    again = run_eval(load_config(EvalConfig, config), progress=False)
    assert (again.computed, again.run_id, again.summary) == (0, first.run_id, first.summary)
    assert _mtimes(out) == before and db.stat().st_mtime_ns == db_before  # nothing ran, nothing written

    changed = _config(
        tmp_path, distractor_index, store, "floor-resume", **extra, agent={"search": {"top_k": 2}}
    )
    result = run_eval(load_config(EvalConfig, changed), progress=False)
    assert result.computed == 8 and result.run_id != first.run_id  # every part; a new MLflow run
    rows = pq.read_table(result.predictions).to_pylist()
    assert [len(r["retrieved_ids"][0]) for r in rows] == [2] * 8  # the rows follow the new setting
    runs = {r.info.run_id: r.data.params["k"] for r in _runs(store, "floor-resume")}
    assert runs == {first.run_id: "3", result.run_id: "2"}


def test_scripted_agent_searches_the_index_and_compare(
    tmp_path, distractor_index, store, tiny_checkpoint, capsys
):
    from ramp.eval.run import run_eval
    from tiny_model import ScriptedBackend, tiny_model, tiny_tokenizer

    from ramp.agent.backends.hf import HFBackend
    from ramp.qa import load_qa
    from ramp.retrieval.lucene import LuceneRetriever

    records = load_qa("hotpotqa", DISTRACTOR, limit=6)
    scripts = {}
    for record in records[:3]:  # these search their question, then answer the gold
        key = " " + " ".join(record.question.split()[1:4])
        scripts[key] = [
            f"<think>look it up</think>\n<search>{record.question}</search>",
            f"<answer>{record.golden_answers[0]}</answer>",
        ]
    tokenizer = tiny_tokenizer()
    backend = ScriptedBackend(HFBackend(tiny_model(tokenizer), tokenizer, device="cpu"), scripts)
    agent = _tiny_agent(tiny_checkpoint)
    agent["rollout"] = {"max_turns": 3, "max_new_tokens_per_turn": 64, "max_total_new_tokens": 128}
    extra = {"policy": "agent", "chunk_size": 3, "agent": agent}
    extra["datasets"] = [{"name": "hotpotqa", "path": str(DISTRACTOR), "limit": 6}]
    config = load_config(EvalConfig, _config(tmp_path, distractor_index, store, "scripted", **extra))
    result = run_eval(config, progress=False, backend=backend)
    rows = pq.read_table(result.predictions).to_pylist()
    retriever = LuceneRetriever(distractor_index)
    try:
        direct = retriever.search([row["question"] for row in rows[:3]], k=3)
    finally:
        retriever.close()
    for row, hits in zip(rows[:3], direct, strict=True):
        assert row["queries"] == [row["question"]] and row["finish_reason"] == "answer"
        assert row["prediction"] == row["golden_answers"][0] and row["exact_match"] == 1.0
        assert row["retrieved_ids"] == [[h.doc_id for h in hits]]  # what the real index returns
    assert result.summary["exact_match/hotpotqa"] >= 0.5

    out = tmp_path / "compare"
    assert (
        ramp(
            [
                "eval",
                "compare",
                "floor",
                "scripted",
                "--metric",
                "exact_match",
                "--output",
                str(out),
                "--tracking-uri",
                store,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "floor" in printed and "scripted" in printed
    markdown = (out / "compare.md").read_text().splitlines()
    assert markdown[2] == "| run | hotpotqa | macro |"
    scripted_row = next(line for line in markdown if line.startswith("| scripted |"))
    value = f"{100 * result.summary['exact_match/hotpotqa']:.1f}"
    assert scripted_row == f"| scripted | {value} | {value} |"
    assert (out / "compare.png").stat().st_size > 1000
    assert ramp(["eval", "compare", "no-such-run", "--output", str(out), "--tracking-uri", store]) == 2


def test_llm_judge_column(tmp_path, distractor_index, store):
    from openai_server import ScriptedOpenAIServer
    from ramp.eval.run import run_eval

    def responder(path, body):
        prompt = body["messages"][-1]["content"]
        verdict = "correct" if "Predicted answer: yes" in prompt else "incorrect"
        return f"Compared.\nVerdict: {verdict}"

    with ScriptedOpenAIServer(responder) as server:
        judge = {
            "enabled": True,
            "backend": {"kind": "openai", "openai": {"base_url": server.base_url, "model": "j"}},
        }
        extra = {"policy": "builtin", "judge": judge}
        extra["datasets"] = [{"name": "hotpotqa", "path": str(DISTRACTOR), "limit": 10}]
        result = run_eval(
            load_config(EvalConfig, _config(tmp_path, distractor_index, store, "judged", **extra)),
            progress=False,
        )
    rows = pq.read_table(result.predictions).to_pylist()
    assert [r["judge"] for r in rows] == [float(r["prediction"] == "yes") for r in rows]
    assert result.summary["judge/hotpotqa"] == sum(r["judge"] for r in rows) / 10


@pytest.mark.parametrize(
    ("prompts", "system_start"), [("prompts", "You are a research"), ("experiment/prompts", "Search with")]
)
def test_agent_renders_questions_with_the_configured_prompts(
    tmp_path, distractor_index, store, tiny_checkpoint, prompts, system_start
):
    """``agent.prompts`` picks the templates the policy was trained on (what its tasks' prompts read)."""
    from ramp.eval.run import AgentPolicy
    from tiny_model import tiny_model, tiny_tokenizer

    from ramp.agent.backends.hf import HFBackend
    from ramp.qa import load_qa
    from ramp.retrieval.lucene import LuceneRetriever

    tokenizer = tiny_tokenizer()
    inner = HFBackend(tiny_model(tokenizer), tokenizer, device="cpu")
    seen: list[list[int]] = []

    class Recording:
        tokenizer, eos_ids, max_length = inner.tokenizer, inner.eos_ids, inner.max_length

        def generate(self, requests):
            seen.extend(r.prompt_ids or [] for r in requests)
            return inner.generate(requests)

    agent = {**_tiny_agent(tiny_checkpoint), "prompts": prompts}
    agent["rollout"] = {"max_turns": 1, "max_new_tokens_per_turn": 4, "max_total_new_tokens": 4}
    config = load_config(EvalConfig, _config(tmp_path, distractor_index, store, "prompts", agent=agent))
    record = load_qa("hotpotqa", DISTRACTOR, limit=1)[0]
    retriever = LuceneRetriever(distractor_index)
    try:
        AgentPolicy(config, retriever, backend=Recording()).answer([record])
    finally:
        retriever.close()
    prompt = tokenizer.decode(seen[0])
    assert f"<|im_start|>system\n{system_start}" in prompt and record.question in prompt
