# The README's two commands. Each creates the virtual environment if needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up test bench

up: $(VENV)/.installed
	$(BIN)/polybot up

test: $(VENV)/.installed-test
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bus_io.py
	$(BIN)/python benchmarks/bus_throughput.py
	$(BIN)/python benchmarks/venue_updates.py
	$(BIN)/python benchmarks/analytics_ingest.py
	$(BIN)/python benchmarks/trade_path.py
	$(BIN)/python benchmarks/replay.py
	$(BIN)/python benchmarks/metrics_overhead.py
	$(BIN)/python benchmarks/order_signing.py
	$(BIN)/python benchmarks/catch_up.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed
