# Every target sets up what it needs; `make quickstart` and `make test` work on a bare machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
RUN    ?= runs/quickstart

.PHONY: setup quickstart test docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@scripts/ensure-libusb.sh
	@scripts/ensure-chromium.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The CPU wheel of torch first: a loose `torch` requirement would pull a multi-GB CUDA build.
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[all,dev]"
	touch $(STAMP)

quickstart: setup
	$(VENV)/bin/modal-core quickstart --out $(RUN)

test: setup
	$(VENV)/bin/pytest -q

docs: setup
	$(PY) scripts/docs_reference.py  # regenerate the recipe, CLI and hooks reference pages
	$(VENV)/bin/mkdocs build --strict

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) site runs
