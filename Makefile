# eximtrack — one entry point for humans. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= chdb://$(CURDIR)/data
export EXIMTRACK_CACHE ?= $(HOME)/.cache/eximtrack

.DEFAULT_GOAL := help

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

NATIVE_SOURCES := native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*.rs)

$(BIN)/eximtrack: pyproject.toml $(NATIVE_SOURCES)
	@command -v $(PY) >/dev/null || PY=python3; test -d $(VENV) || $${PY:-python3} -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@command -v cargo >/dev/null || { echo "the compiled core (native/) needs Rust: https://rustup.rs (cargo on PATH)"; exit 1; }
	$(BIN)/pip install -q --force-reinstall --no-deps ./native
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

venv: $(BIN)/eximtrack ## create the virtualenv and install eximtrack (+ dev tools)

apt: ## install the system packages the tests use (Exim 4.96, Java, Maven, Chromium) — needs root
	@if ! command -v exim4 >/dev/null || ! command -v java >/dev/null || ! command -v mvn >/dev/null || ! command -v chromium >/dev/null; then \
	  apt-get update -qq && apt-get install -y -qq exim4-daemon-light default-jre-headless maven chromium >/dev/null; fi
	@exim4 --version | head -1

broker-fetch: venv ## fetch Apache Kafka 4.x jars with Maven into $(EXIMTRACK_CACHE)
	$(BIN)/python -m eximtrack.local_broker fetch

deps: apt venv broker-fetch ## everything the tests need on a fresh machine

run: venv broker-fetch ## THE MAIN JOB: broker + shipper (demo log or /var/log/exim4/mainlog) + faust + sink into ./data
	$(BIN)/eximtrack run --store $(STORE)

demo: venv ## ingest the real-Exim sample logs into the embedded store and show a search
	$(BIN)/eximtrack ingest --store $(STORE) --server demo1 samples/mainlog-cpanel.log
	$(BIN)/eximtrack ingest --store $(STORE) --server demo2 samples/mainlog-all.log
	$(BIN)/eximtrack search --store $(STORE) --show failures,deferred

schema-baseline: venv ## regenerate schemas/clickhouse_baseline.sql (a new store's layout) after adding a migration
	$(BIN)/python -m sinks.clickhouse.schema_baseline

lint: venv ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv ## format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The suite waits on brokers, Exim and subprocesses more than it computes: two test processes (each with its
# own broker; a test file's tests stay in one process, which keeps its module fixtures) halve its time on 2
# cores. TEST_WORKERS=0 runs it in this process. The tests marked `alone` (a three-broker cluster and random
# kills, timed against a schedule) run afterwards with nothing beside them: beside another test process, the
# cluster test once stored nothing in 5 minutes.
TEST_WORKERS ?= 2

test: venv ## run the whole test suite (unit, real Exim, real chDB, real Kafka; the compiled core's own tests)
	$(BIN)/ruff check .
	cd native && PYO3_PYTHON=$(abspath $(BIN)/python) cargo test -q --release
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not alone"
	$(BIN)/pytest -q -m alone

fuzz: venv ## fuzz the parser+joiner with a million random and mutated lines
	EXIMTRACK_FUZZ_LINES=1000000 $(BIN)/pytest -q -s tests/reliability/test_fuzz.py

chaos: venv ## fault injection: 30 random SIGKILLs of shipper/worker/sink/broker while shipping
	EXIMTRACK_CHAOS_KILLS=30 $(BIN)/pytest -q -s tests/reliability/test_chaos.py

bench: deps ## all benchmarks (~3 h on 2 cores; the 1e8-event store: a 1.5-2 h fill, 55 GB, ~60 GB free while it fills) -> bench/results.json, docs/BENCHMARKS.md
	$(BIN)/python -m bench
	$(BIN)/python -m bench.report

bench-quick: deps ## benchmark smoke run at small sizes (a few minutes; results in .eximtrack/bench, docs untouched)
	$(BIN)/python -m bench --quick

bench-api: venv ## Track Delivery API over HTTP vs its builders on the 1e7 query store (make bench fills it) -> .eximtrack/bench/api-1e7.json
	$(BIN)/python -m bench.api_latency --scale 1e7 --store .eximtrack/bench/q1e7 --json .eximtrack/bench/api-1e7.json

test-unit: venv ## unit tests only (pure logic, seconds)
	$(BIN)/pytest -q tests/unit

clean: ## remove the local store and caches of this checkout
	rm -rf data .pytest_cache .ruff_cache

.PHONY: help venv apt broker-fetch deps run demo schema-baseline lint fmt test fuzz chaos bench bench-quick test-unit clean
