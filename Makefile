# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test unit lint format system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The whole system on loopback; the first URL it prints is the page to open.
demo: install
	$(BIN)/pinedge demo

# Programs the tests drive besides Python packages (headless Chromium, nginx as a foreign origin).
system-deps:
	sh scripts/system-deps

test: install system-deps lint
	$(BIN)/pytest

# The fast target: what is neither slow nor needs a program pip cannot install.
unit: install
	$(BIN)/pytest -q -m "not slow and not system and not browser and not nginx and not dig and not varnish and not root"

# The same checks run before each commit with `pre-commit install` (.pre-commit-config.yaml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/typecheck

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
