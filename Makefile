# Thin wrappers over the `studioops` CLI in .venv. `make up` and `make test` set everything up themselves.
# COMPOSE=1 selects the Docker Compose stack (infra/docker-compose.yaml) instead of the embedded one.
PYTHON ?= python3
COMPOSE ?=
STACK  := $(if $(COMPOSE),--compose,)
VENV   ?= .venv
BIN    := $(VENV)/bin
SO     := $(BIN)/studioops


.PHONY: web up down status test lint bench browser install dev-up dev-down db-migrate db-seed logs api health backup-db restore-db clean clean-venv

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/.installed

## up: create .venv, install, start the embedded stack (PostgreSQL + pgvector), migrate
up: $(BIN)/.installed
	$(SO) up $(STACK) $(if $(COMPOSE),,--seed)

down: $(BIN)/.installed
	$(SO) down $(STACK)

status: $(BIN)/.installed
	$(SO) status

## test: install the dev extras and the browser, lint, run the whole suite
test: $(BIN)/.installed-dev browser
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

## browser: Debian's chromium for the console's browser tests (Playwright drives it; nothing is downloaded).
## Quick when it is there; without root or apt-get the browser tests skip and say why.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null || echo "make: could not install chromium; the browser tests will be skipped" >&2; \
	  else echo "make: chromium is missing and installing it needs root and apt-get (apt-get install -y chromium); the browser tests will be skipped" >&2; fi; }

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check src tests bench

bench: $(BIN)/.installed-dev
	$(BIN)/python bench/stack.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/api_load.py
	$(BIN)/python bench/tracing.py
	$(BIN)/python bench/backup.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/rag.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/metrics_scrape.py

# The design document's targets.
dev-up: up
dev-down: down
db-migrate: $(BIN)/.installed
	$(SO) db migrate
db-seed: $(BIN)/.installed
	$(SO) db seed
logs: $(BIN)/.installed
	$(SO) logs -f $(STACK)
web:
	@if [ -d apps/web ]; then cd apps/web && pnpm dev; \
	elif [ -n "$(COMPOSE)" ]; then docker compose -f infra/docker-compose.yaml --profile web up -d --wait web; \
	else echo "make web: the web app (apps/web) is not part of this repository; COMPOSE=1 make web runs its image" >&2; exit 1; fi
api: $(BIN)/.installed
	$(SO) api --reload
health: $(BIN)/.installed
	$(SO) health
backup-db: $(BIN)/.installed
	$(SO) backup create
restore-db: $(BIN)/.installed
	@$(SO) backup list
	@read -p "Enter backup file path (or latest): " BACKUP_FILE; \
	$(SO) backup restore "$$BACKUP_FILE"
clean: $(BIN)/.installed
	$(SO) clean

clean-venv:
	rm -rf $(VENV)
