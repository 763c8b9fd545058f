# Every target installs what is missing first, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run up down status test lint bench bench-rebuild bench-rebalance bench-rank-scaling bench-fsync bench-write-floor bench-boards bench-audit-log bench-display-data loadtest clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,lint]'
	$(PY) -m shard_manager.local.binaries ensure
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
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null 2>&1 || \
		echo "wrk is not installed (Debian package wrk; installing needs root): the Python load generator runs"
	$(PY) -m bench.http_bench $(BENCH_ARGS)

bench-display-data: install  ## what display data on entries costs: bytes per player, top and rank reads (wrk)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null 2>&1 || \
		echo "wrk is not installed (Debian package wrk; installing needs root)"
	$(PY) -m bench.display_data_bench $(BENCH_ARGS)

bench-boards: install  ## a write on 3 windows vs 1, and writes and reads with 5,000 more boards vs 3, same run (wrk)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null 2>&1 || \
		echo "wrk is not installed (Debian package wrk; installing needs root)"
	$(PY) -m bench.boards_bench $(BENCH_ARGS)

bench-audit-log: install  ## a write's resend lookup over 24 months of audit log: every month searched vs two
	$(PY) -m bench.audit_log_bench $(BENCH_ARGS)

bench-rebuild: install  ## rebuild of 1M players from PostgreSQL vs a plain bulk load, same run
	$(PY) -m bench.rebuild_bench $(BENCH_ARGS)

bench-rebalance: install  ## players moved per second by apply, write latency during vs without
	$(PY) -m bench.rebalance_bench $(BENCH_ARGS)

bench-rank-scaling: install  ## rank-read p50 with 1M players vs with 10k, same run
	$(PY) -m bench.rank_scaling_bench $(BENCH_ARGS)

bench-fsync: install  ## fdatasync latency of the disk under the data directory, tail included
	$(PY) -m bench.fsync_tail $(BENCH_ARGS)

bench-write-floor: install  ## PostgreSQL's and Redis's CPU per written event vs the least the protocol needs
	$(PY) -m bench.write_floor $(BENCH_ARGS)

LOADTEST_USERS ?= 40
LOADTEST_TIME  ?= 60s
LOADTEST_HOST  ?= http://127.0.0.1:8000
loadtest: install  ## Locust, headless, against the cluster `make up` started; reports in loadtest/reports/
	@$(PY) -c "import locust" 2>/dev/null || $(PY) -m pip install --quiet --disable-pip-version-check -e '.[loadtest]'
	@mkdir -p loadtest/reports
	$(PY) -m locust -f loadtest/locustfile.py --headless -u $(LOADTEST_USERS) -r 10 -t $(LOADTEST_TIME) \
		--host $(LOADTEST_HOST) --csv loadtest/reports/run --html loadtest/reports/report.html --only-summary
	$(PY) loadtest/summary.py loadtest/reports/run

clean: down
	rm -rf .data
