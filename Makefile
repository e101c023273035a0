# make demo: set up .venv and run the demo (synthesize, train, deblur, report) on built-in data
# make test: set up .venv and run the tests
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: setup demo test test-quick bench lint clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/cdvd-demo

test: setup
	$(VENV)/bin/python -m pytest -q --durations=25 $(PYTEST_ARGS)

test-quick: setup
	$(VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(VENV)/bin/python scripts/bench_all.py

lint: setup
	$(VENV)/bin/ruff check cdvd scripts tests
	$(VENV)/bin/ruff format --check cdvd scripts tests

clean:
	rm -rf $(VENV) build dist *.egg-info
