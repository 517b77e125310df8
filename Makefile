# The two commands of the README: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DJANGO_SETTINGS_MODULE := mailsetup.settings

# PostgreSQL on this machine, as a superuser so pytest-django can create its test database.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mailsetup
PYTEST_ARGS ?=
# Two pytest-xdist workers, each with its own test database and Redis database
# (tests/conftest.py): the suite took 931 s in one process on 2 cores, 456 s in two.
# `--dist load` hands each worker its tests in collection order, which keeps
# pytest-django's order (transactional tests, which empty the database of the data
# migrations' rows, after the others); `--dist loadfile` broke it. TEST_WORKERS=0: one
# process (what `-s` prints shows only so).
TEST_WORKERS ?= 2
BENCH_ARGS ?=
PUSH_BENCH_ARGS ?=

.PHONY: run test dev-mail bench lint format clean

$(BIN)/python:
	"$$(scripts/find-python)" -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

## make run: set up on embedded defaults (SQLite, filesystem broker) and start web, worker, beat and the push listener.
## migrate also ships the built-in providers.
run: $(VENV)/.installed-run
	DEBUG=$${DEBUG:-true} python manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} python manage.py ensure_admin
	@echo "Open http://127.0.0.1:$${MAILSETUP_PORT:-8000}/admin/ (Ctrl-C stops them all)."
	@# With DEBUG on, the app trusts make dev-mail's CA under its own var dir
	@# (settings.MAIL_DEV_CA_FILE), wherever MAILSETUP_VAR_DIR points.
	DEBUG=$${DEBUG:-true} exec honcho -f Procfile.dev start

## make dev-mail: a local Dovecot and SMTP server with a demo mailbox full of sample mail,
## kept under the var dir (var/dev-mail/) across restarts; the demo company and contacts.
dev-mail: $(VENV)/.installed-test
	scripts/dev-mail-services
	DEBUG=$${DEBUG:-true} python manage.py migrate --noinput
	DEBUG=$${DEBUG:-true} python -m tests.servers.devmail

## make test: install test dependencies, make sure the services run, run pytest on PostgreSQL.
test: $(VENV)/.installed-test
	scripts/test-services
	DATABASE_URL=$(TEST_DATABASE_URL) pytest -n $(TEST_WORKERS) --dist load $(PYTEST_ARGS)

## make bench: the IMAP sync benchmark (own Dovecot, PostgreSQL database mailsetup_bench),
## then the push benchmark (a real listener, worker and Dovecot; mailsetup_bench_push).
bench: $(VENV)/.installed-test
	scripts/test-services
	python bench/sync_bench.py $(BENCH_ARGS)
	python bench/push_bench.py $(PUSH_BENCH_ARGS)

lint: $(VENV)/.installed-test
	ruff check .
	ruff format --check .

format: $(VENV)/.installed-test
	ruff format .
	ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
