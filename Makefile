# Everything runs from a local .venv that these targets create; a fresh machine needs only
# Python 3.11+ and pip (the Redis server comes from a pip dependency).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo test bench compare clean chromium

$(BIN)/engine: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench,dashboard]"
	touch $(BIN)/engine

# the third-party Celery task modules tests/compat/test_thirdparty.py runs: their source
# archives, downloaded (not installed) next to the environment
THIRDPARTY := tests/compat/thirdparty/requirements.txt
$(VENV)/thirdparty/.done: $(THIRDPARTY) $(BIN)/engine
	$(BIN)/pip download --quiet --no-deps --no-binary :all: -d $(VENV)/thirdparty -r $(THIRDPARTY)
	touch $@

venv: $(BIN)/engine $(VENV)/thirdparty/.done

demo: venv
	$(BIN)/python examples/demo/run_demo.py

# the dashboard tests drive Debian's chromium (never a browser download)
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: venv chromium
	$(BIN)/python -m pytest tests

bench: venv
	$(BIN)/python -m pytest bench --benchmark-columns=min,median,ops -p no:cacheprovider

compare: venv
	bash bench/compare/run.sh

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks build *.egg-info
