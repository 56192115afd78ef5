# Everything runs from a local .venv that these targets create; a fresh machine needs only
# Python 3.11+ and pip (the Redis server comes from a pip dependency).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo test bench compare clean

$(BIN)/engine: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench,dashboard]"
	touch $(BIN)/engine

venv: $(BIN)/engine

demo: venv
	$(BIN)/python examples/demo/run_demo.py

test: venv
	$(BIN)/python -m pytest tests

bench: venv
	$(BIN)/python -m pytest bench --benchmark-columns=min,median,ops -p no:cacheprovider

compare: venv
	bash bench/compare/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks build *.egg-info
