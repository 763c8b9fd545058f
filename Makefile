# Every target installs what is missing first, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run up down status test lint bench bench-rebuild clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	$(PY) -m shard_manager.binaries ensure
	@touch $(STAMP)

run: install     ## start the whole local cluster in the foreground; Ctrl-C stops it
	$(PY) -m shard_manager run

up: install      ## same as run, in the background; returns once /readyz answers 200
	$(PY) -m shard_manager up

down:            ## stop what `make up` started
	@if [ -x $(PY) ]; then $(PY) -m shard_manager down; fi

status: install
	$(PY) -m shard_manager status

test: install    ## the whole suite; it starts its own redis-server and postgres processes
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check router shard_manager tests bench loadtest
	$(PY) -m ruff format --check router shard_manager tests bench loadtest

bench: install   ## throughput ratios against a private cluster started for the run
	$(PY) -m bench.http_bench $(BENCH_ARGS)

bench-rebuild: install  ## rebuild of 1M players from PostgreSQL vs a plain bulk load, same run
	$(PY) -m bench.rebuild_bench $(BENCH_ARGS)

clean: down
	rm -rf .data
