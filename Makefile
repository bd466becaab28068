# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_data
DEMO_STORE ?= demo_store.duckdb
DEMO_N ?= 60000

.PHONY: demo test test-all install lock lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Installs the pinned set (requirements.lock), then the project itself without re-resolving.
$(STAMP): $(PY) requirements.lock pyproject.toml
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/convocausal fixtures --out $(DEMO_DIR) --conversations $(DEMO_N) --seed 7
	$(VENV)/bin/convocausal run --raw $(DEMO_DIR) --store $(DEMO_STORE) --truth $(DEMO_DIR)/truth.json

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_pipeline.py --conversations $${BENCH_N:-1000000}

# Refresh the pins: resolve pyproject's ranges in a throwaway venv and freeze the result;
# requirements-distributed.lock holds what the `distributed` extra adds on top (the Celery run).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet -e '.[dev]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
	.venv-lock/bin/pip install --quiet -e '.[dev,distributed]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^-e' | grep -vxFf requirements.lock \
		> requirements-distributed.lock
	rm -rf .venv-lock

clean:
	rm -rf $(DEMO_DIR) $(DEMO_STORE) $(DEMO_STORE).parts
