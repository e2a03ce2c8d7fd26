# The two commands of the README:
#   make demo   installs tracker, trains the demo runs on real digits and serves the UI
#   make test   installs tracker with its test tools and runs lint, types and the test suite
# Both create ./.venv; every version comes from constraints.txt.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PIN := -c constraints.txt
PORT ?= 5000

.PHONY: demo test lint typecheck pytest chromium bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and pinned: an unpinned torch would pull several GB of CUDA packages.
# setup.py builds the stats kernel (tracker/capture/_reduce.c) into the editable install.
$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py tracker/capture/_reduce.c constraints.txt
	$(PIP) install -q $(PIN) torch==2.13.0
	$(PIP) install -q $(PIN) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q $(PIN) -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/tracker demo --port $(PORT)

# Debian's Chromium drives the browser tests (never `playwright install`).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "browser tests need Debian's chromium: sudo apt-get install chromium"; exit 1; \
	  fi; }

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

pytest: $(VENV)/.installed-test chromium
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered

test: lint typecheck pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage tests/artifacts
