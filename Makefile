# fcgipool — nginx + a Python FastCGI worker pool that runs work after the response, and load tests that size it.
# `make` lists the targets. Every target works from a fresh clone (it installs what it needs first).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV      ?= .venv
PY        := $(VENV)/bin/python
PYTHON3   ?= python3
STAMP     := $(VENV)/.installed
# MODE, PORT, MAIL_PORT, SMTP_PORT, FCGIPOOL_*: read by the scripts from the environment; `make up PORT=9090`
# works too, since make exports command-line variables to its recipes.

.PHONY: help install install-system up down restart status logs test lint bench bench-deps loadtest faults faults-phpfpm sizing clean

help: ## Show this help
	@printf 'Usage: make <target> [VAR=value]\n\n'
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@printf '\nVariables: MODE=auto|docker|native PORT=8080 MAIL_PORT=8025 DURATION= RATE= SCENARIOS= TARGET_RPS= P99_MS= MEMORY_MB=\n'
	@printf '\nmake loadtest, your own app (docs/loadtest.md, "Bring your own app"):\n'
	@printf '  TARGET=http://host:port  base URL of any app behind nginx + fcgipool (default: the stack from make up)\n'
	@printf '  LOCUSTFILE=path.py       your locust user classes, run open loop (example: loadtest/example_locustfile.py)\n'
	@printf '  SCENARIOS=A,B            which of its user classes (default: all; without LOCUSTFILE: the sample scenarios)\n'
	@printf '  STATUS_URL=url           the pool status page to sample (default: TARGET/pool-status)\n'
	@printf '  REQUEST_LOG= ACCESS_LOG= the target pool'"'"'s request log and nginx JSON access log, if readable here\n'

$(STAMP): requirements.txt requirements-dev.txt pool/pyproject.toml pool/setup.py pool/fcgipool/protocol/_cparams.c pool/fcgipool/scoreboard/_cslot.c pool/fcgipool/_crequestlog.c \
	   pool/fcgipool/_crequestlog_lines.c pool/fcgipool/_crequestlog.h
	@test -x $(PY) || $(PYTHON3) -m venv $(VENV) || { \
	    echo "make: could not create $(VENV): install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q -e pool
	@touch $@

install: $(STAMP) ## Create .venv with the pinned requirements and the pool (pip install -e pool)

install-system: ## Install the system packages native mode, the tests and the PHP-FPM comparisons use (apt; root or sudo)
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    nginx-light libfcgi-bin wrk gettext-base python3-venv python3-dev gcc libc6-dev curl strace redis-server php8.2-fpm apache2 lighttpd caddy haproxy chromium || { \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update && \
	  $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    nginx-light libfcgi-bin wrk gettext-base python3-venv python3-dev gcc libc6-dev curl strace redis-server php8.2-fpm apache2 lighttpd caddy haproxy chromium; }

up: $(STAMP) ## Start the stack (docker if an engine answers, else native; MODE= forces one); returns when healthy
	$(PY) pool/stackctl.py up

down: $(STAMP) ## Stop the stack; nothing is left running
	$(PY) pool/stackctl.py down

restart: down up ## down, then up

status: $(STAMP) ## Print the pool status page (PHP-FPM fields, per-process table) and the ledger
	$(PY) pool/stackctl.py status --full

logs: $(STAMP) ## Follow the stack's logs (FOLLOW=0 to print and exit)
	$(PY) pool/stackctl.py logs $(if $(filter 0,$(FOLLOW)),,--follow)

lint: $(STAMP) ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint ## Lint, type-check and run the whole test suite (PYTEST_ARGS= to narrow it)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: $(STAMP) ## wrk side by side: fcgipool vs gunicorn, uWSGI, flup, php-fpm through one nginx
	$(PY) pool/bench/run.py $(BENCH_ARGS)

# [bench] optional extras for `make bench`: uWSGI (compiles: needs gcc + python3-dev) and py-spy for profile.py
bench-deps: $(STAMP) ## Optional benchmark extras: uWSGI (compiles; needs gcc, python3-dev) and py-spy
	$(VENV)/bin/pip install --disable-pip-version-check -q -r pool/bench/requirements.txt

loadtest: $(STAMP) ## Load scenarios + report + sizing advice: the running stack, or TARGET= with LOCUSTFILE= (see below)
	$(PY) -m loadtest run $(if $(DURATION),--duration $(DURATION)) $(if $(RATE),--rate $(RATE)) \
	    $(if $(SCENARIOS),--scenarios $(SCENARIOS)) $(if $(P99_MS),--p99-ms $(P99_MS)) \
	    $(if $(MEMORY_MB),--memory-mb $(MEMORY_MB)) $(if $(TARGET),--target $(TARGET)) \
	    $(if $(LOCUSTFILE),--locustfile $(LOCUSTFILE)) $(if $(STATUS_URL),--status-url $(STATUS_URL)) \
	    $(if $(REQUEST_LOG),--request-log $(REQUEST_LOG)) $(if $(ACCESS_LOG),--access-log $(ACCESS_LOG)) \
	    $(LOADTEST_ARGS)

faults: $(STAMP) ## Faults under load against the running stack, table in loadtest/reports/ (FAULTS_ARGS=--short, ONLY=a,b)
	$(PY) -m loadtest.faults run $(if $(ONLY),--only $(ONLY)) $(FAULTS_ARGS)

faults-phpfpm: $(STAMP) ## The same faults against nginx + PHP-FPM 8.2, for comparison (needs php8.2-fpm; FAULTS_ARGS=--short)
	$(PY) -m loadtest.faults.phpfpm $(FAULTS_ARGS)

sizing: $(STAMP) ## Sweep worker counts and rates, compare the model with measurements (TARGET_RPS= P99_MS= MEMORY_MB=)
	$(PY) -m loadtest sizing $(if $(TARGET_RPS),--target-rps $(TARGET_RPS)) $(if $(P99_MS),--p99-ms $(P99_MS)) \
	    $(if $(MEMORY_MB),--memory-mb $(MEMORY_MB)) $(SIZING_ARGS)

clean: down ## Stop the stack and delete its state (var/, docker volumes)
	-$(PY) pool/stackctl.py down --volumes
	rm -rf var
