# The two commands of the README: `make up` (install what is needed, start everything on the
# embedded default) and `make test` (the test suite). Both install on first use.
VENV ?= .venv
PYTHON ?= python3

.PHONY: up test install

up: install
	$(VENV)/bin/peftlab up

test: install
	$(VENV)/bin/pytest

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
