# The two commands of the README: `make up` (install what is needed, start everything on the
# embedded default) and `make test` (the test suite). Both install on first use.
VENV ?= .venv
PYTHON ?= python3

.PHONY: up test install

up: install
	$(VENV)/bin/peftlab up

# Two test processes (pytest-xdist; one test file stays in one process): most of a test's time is waiting
# on the worker and server processes it started, so two sessions fit on two cores. Each session has its
# own database, data dir and queue names (tests/conftest.py). PYTEST_JOBS=0 runs them in this process.
PYTEST_JOBS ?= 2

test: install
	$(VENV)/bin/pytest -n $(PYTEST_JOBS) --dist loadfile

install: $(VENV)/.installed node_modules/.installed static/vendor/versions.json

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The browser libraries the pages load, copied from node_modules at the locked versions (the wheel build
# does the same, so an installed peftlab needs no node_modules).
static/vendor/versions.json: $(VENV)/.installed node_modules/.installed app/build_assets.py
	$(VENV)/bin/python -m app.build_assets
