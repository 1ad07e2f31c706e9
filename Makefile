# Two commands: `make run` (set up, then run the daemon with the example agents on the embedded
# defaults) and `make test` (set up, then lint, type-check, check import rules, run every test).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup run test lint typecheck imports pytest bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/agentd --config agentd.toml run

lint: setup
	$(VENV)/bin/ruff check agentd tests bench agents tools
	$(VENV)/bin/ruff format --check agentd tests bench agents tools

typecheck: setup
	$(VENV)/bin/mypy

imports: setup
	$(VENV)/bin/lint-imports

pytest: setup
	$(PY) -m pytest

test: lint typecheck imports pytest

bench: setup
	$(PY) bench/baseline.py
	$(PY) bench/echo.py

clean:
	rm -rf $(VENV) .agentd .mypy_cache .ruff_cache .pytest_cache
