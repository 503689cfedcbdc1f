# Governor: `make run` brings up the demo, `make test` runs lint and the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)
# Extra pytest arguments for both runs, e.g. `make test PYTEST_ARGS="-k end_to_end"`.
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2
# The slowest tests are listed after each pass, so the suite's time budget stays visible.
PYTEST_BASE := -n $(PYTEST_WORKERS) --durations=10 -m "not ha"
# The browser tests exercise templates and JavaScript, not the database: run them once, on SQLite.
PG_PYTEST_ARGS ?= -m "not browser and not ha"

.PHONY: run serve test test-ha lint install system-deps system-deps-run test-sqlite test-postgres bench migrate clean

# Order-only: checking the system packages must not make the venv look out of date.
$(BIN)/python: | system-deps-run
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Debian packages (installed only when run as root; otherwise the missing ones are named).
system-deps-run:
	@bash scripts/system-deps.sh run

system-deps:
	@bash scripts/system-deps.sh test

migrate: install
	$(BIN)/python manage.py migrate --noinput -v0

run: install migrate
	$(BIN)/python manage.py seed_demo
	@bash scripts/run-dev.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	# The layers and the no-cycles rule of docs/architecture.md (contracts in pyproject.toml).
	$(BIN)/lint-imports
	$(BIN)/python manage.py makemigrations --check --dry-run -v0
	$(BIN)/mypy

# The production profile (docs/operations.md): gunicorn + WhiteNoise, schedulers and worker clusters on
# DATABASE_URL (and REDIS_URL); refuses to start, naming the setting, when a dependency is not fit.
serve: install
	@bash scripts/serve.sh

test-sqlite: install
	bash scripts/pytest.sh $(PYTEST_BASE) $(PYTEST_ARGS)

# A narrowed selection (PYTEST_ARGS) may match only browser tests, leaving this pass empty.
test-postgres: install
	ALLOW_NO_TESTS=$(if $(strip $(PYTEST_ARGS)),1,0) bash scripts/with-postgres.sh bash scripts/pytest.sh $(PYTEST_BASE) $(PG_PYTEST_ARGS) $(PYTEST_ARGS)

test: system-deps install lint test-sqlite test-postgres

# Several nodes, database failover, backup and restore (marker ha): the tests start their own
# PostgreSQL primaries and replicas and Redis; the selection's database is one more PostgreSQL.
# Kept out of `make test` (-m "not ha" above); .ci/run runs it after.
test-ha: install
	bash scripts/with-postgres.sh bash scripts/pytest.sh -n $(PYTEST_WORKERS) --dist loadfile --durations=10 -m ha $(PYTEST_ARGS)

bench: install migrate
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var
