# make demo: set up .venv and run the demo (synthesize, train, deblur, report) on built-in data
# make test: set up .venv and run the tests
VENV ?= .venv
PYTEST_ARGS ?=
# tests run in this many processes (pytest-xdist): many of them wait on subprocess start-up, so 2 fill 2 cores
TEST_WORKERS ?= 2

.PHONY: setup demo test test-quick bench lint clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/cdvd-demo

test: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --durations=25 $(PYTEST_ARGS)

test-quick: setup
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python scripts/bench_all.py

lint: setup
	$(VENV)/bin/ruff check cdvd scripts tests
	$(VENV)/bin/ruff format --check cdvd scripts tests

clean:
	rm -rf $(VENV) build dist *.egg-info
