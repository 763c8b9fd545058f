"""`make bench-audit-log`: what a write's resend lookup costs as the audit log grows by
months, searched in every month's partition against the two lb_apply_events searches.

Starts a private PostgreSQL, fills a table partitioned by month like score_events
(--months partitions of --events events each, plus the same rows unpartitioned), then
times one plpgsql call looking up --lookups new (board, user_id, match_id) keys — the
common case, where no partition holds the key, so no search can stop early — in three
ways, alternating, --rounds each:

  unpartitioned          one primary-key probe per lookup (the log before 009)
  every partition        what a search without a month would cost
  two months (pruned)    this month's and the previous one's partitions, as lb_apply_events does

Prints each median in microseconds per lookup.

Usage: python -m bench.audit_log_bench [--months 24] [--events 20000] [--lookups 1000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg2

from shard_manager.local.binaries import require_postgres
from shard_manager.local.processes import PostgresServer, free_port

PROBE = """
CREATE FUNCTION probe(p_users text[], p_from date, p_table text) RETURNS int LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE n int;
BEGIN
    IF p_table = 'partitioned' THEN
        SELECT count(x.value) INTO n FROM unnest(p_users) AS u LEFT JOIN LATERAL (
            SELECT e.value FROM partitioned e
             WHERE e.board = 'global' AND e.user_id = u AND e.match_id = 'new' AND e.recorded_month >= p_from
             LIMIT 1) x ON true;
    ELSE
        SELECT count(x.value) INTO n FROM unnest(p_users) AS u LEFT JOIN LATERAL (
            SELECT e.value FROM flat e WHERE e.board = 'global' AND e.user_id = u AND e.match_id = 'new'
             LIMIT 1) x ON true;
    END IF;
    RETURN n;
END $$
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--events", type=int, default=20_000, help="events per month")
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lb-audit-bench-"))
    postgres = PostgresServer(require_postgres(), free_port(), workdir / "pg", durable=False)
    postgres.start()
    try:
        conn = psycopg2.connect(postgres.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE partitioned (board text, user_id text, match_id text, value bigint, recorded_month date,"
            " PRIMARY KEY (board, user_id, match_id, recorded_month)) PARTITION BY RANGE (recorded_month)"
        )
        months = [f"{2020 + k // 12}-{k % 12 + 1:02d}-01" for k in range(args.months + 1)]
        for k in range(args.months):
            cur.execute(
                f"CREATE TABLE part_{k} PARTITION OF partitioned FOR VALUES FROM (%s) TO (%s)",
                (months[k], months[k + 1]),
            )
            cur.execute(
                "INSERT INTO partitioned SELECT 'global', 'u' || g, %s, 1, %s FROM generate_series(1, %s) AS g",
                (f"m{k}", months[k], args.events),
            )
        cur.execute(
            "CREATE TABLE flat (board text, user_id text, match_id text, value bigint, recorded_month date,"
            " PRIMARY KEY (board, user_id, match_id))"
        )
        cur.execute("INSERT INTO flat SELECT * FROM partitioned")
        cur.execute("ANALYZE partitioned, flat")
        cur.execute(PROBE)
        users = [f"u{i}" for i in range(args.lookups)]
        ways = {
            "unpartitioned": (months[0], "flat"),
            f"every partition ({args.months})": (months[0], "partitioned"),
            "two months (pruned)": (months[args.months - 2], "partitioned"),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, (since, table) in ways.items():
                started = time.perf_counter()
                cur.execute("SELECT probe(%s, %s, %s)", (users, since, table))
                assert cur.fetchone() == (0,)
                times[name].append(time.perf_counter() - started)
        conn.close()
        print(f"resend lookups of new keys, {args.months} months x {args.events:,} events, medians of {args.rounds}:")
        for name, samples in times.items():
            print(f"  {name:<24} {statistics.median(samples) * 1e6 / args.lookups:6.2f} us per lookup")
        return 0
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
