# Developer and user entry points. `make demo` and `make test` work on a fresh machine:
# they create .venv and install geopsp with its dependencies first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash docs/examples/demo.sh demo_output

lint: install
	$(BIN)/ruff check geopsp tests bench docs/examples
	$(BIN)/ruff format --check geopsp tests bench docs/examples

format: install
	$(BIN)/ruff format geopsp tests bench docs/examples
	$(BIN)/ruff check --fix geopsp tests bench docs/examples

bench: install
	$(BIN)/python bench/export_chips.py
	$(BIN)/python bench/model.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/classify.py
	$(BIN)/python bench/classify_resume.py

clean:
	rm -rf demo_output .pytest_cache .ruff_cache
