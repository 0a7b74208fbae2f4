# The README's commands: `make demo`, `make test` and `make lint`. All work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned: an unpinned range pulls a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/simcse-curriculum demo

test: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(PY) -m pytest -q $(PYTEST_ARGS)

# ruff (from the dev extra) under pyproject.toml's [tool.ruff]; no formatter, checks only.
lint: $(STAMP)
	$(VENV)/bin/ruff check simcse mining curriculum flows dataio bench tests

clean:
	rm -rf $(VENV) build *.egg-info
