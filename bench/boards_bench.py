"""What many boards and several windows cost: ratios measured in the same run.

Against a private cluster (3 shards, PostgreSQL, a router with 2 workers), with wrk
(a C load generator) sending the HTTP load:

  (1) a write to a board with three windows (daily, weekly, all) against a write to a
      board with one (all): how much the extra windows cost an event;
  (2) writes and rank reads on one board with only a few boards configured, and again
      with 5,000 more boards configured: the cost of the registry's size;
  (3) bytes per event in PostgreSQL, and per player and window in PostgreSQL and Redis.

Each round measures /healthz next to the scenarios, and the report gives the medians
of per-round ratios, so a noisy machine shows as spread, not as a wrong figure. The
extra boards are inserted into PostgreSQL directly (as many admin calls would) and
removed again between rounds, so both sides of (2) run in every round.

    python -m bench.boards_bench [--rounds 5] [--seconds 4] [--connections 64] [--boards 5000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import psycopg2
import redis

from bench import wrk
from bench.http_bench import TOKEN, bench_cluster, board_memory

PLAYERS = 20_000
ADMIN = "bench-admin-token-0123456789"


def _wait_boards(url: str, expected: int, timeout: float = 30.0) -> None:
    """Until every router process serves `expected` boards (each polls the version)."""
    deadline = time.monotonic() + timeout
    seen = set()
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() < deadline:
            # Several answers in a row, so that both worker processes are asked.
            seen = {len(client.get("/v1/boards").json()["boards"]) for _ in range(6)}
            if seen == {expected}:
                return
            time.sleep(0.2)
    raise RuntimeError(f"routers serve {seen} boards, expected {expected}")


def _set_extra_boards(dsn: str, count: int) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM boards WHERE id LIKE 'extra-%'")
        if count:
            cur.execute(
                "INSERT INTO boards (id, score_order, operator, windows, updated_at)"
                " SELECT 'extra-' || g, CASE WHEN g %% 2 = 0 THEN 'asc' ELSE 'desc' END, 'best',"
                "        ARRAY['daily', 'all'], clock_timestamp() FROM generate_series(1, %s) AS g",
                (count,),
            )
        # A version newer than any so far, so routers reload also after a deletion.
        cur.execute("UPDATE boards SET updated_at = clock_timestamp() WHERE id = 'global'")
    conn.close()


def _print_storage(dsn: str, cluster) -> None:
    """(3) What an event and a standing cost to keep: PostgreSQL bytes per audit row and
    per player state (tables with their indexes and TOAST), Redis bytes per player of
    one standing (its sorted set and state hashes, over all shards)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True  # VACUUM runs outside a transaction
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE score_events, player_scores")
        cur.execute(
            # The audit log is partitioned: its size is its partitions' (the parent holds nothing).
            "SELECT (SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('score_events')),"
            " (SELECT count(*) FROM score_events),"
            " pg_total_relation_size('player_scores'), (SELECT count(*) FROM player_scores)"
        )
        events_bytes, events, states_bytes, states = cur.fetchone()
    conn.close()
    clients = [redis.Redis.from_url(s.address) for s in cluster.shard_map.shards]
    try:
        redis_bytes, players = board_memory(clients, "one:all:all")
    finally:
        for client in clients:
            client.close()
    print(
        f"  (3) PostgreSQL {events_bytes / events:.0f} bytes per event ({events:,} in score_events),"
        f" {states_bytes / states:.0f} bytes per player per window ({states:,} in player_scores);"
        f" Redis {redis_bytes / players:.0f} bytes per player per window ({players:,} players of one:all:all)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--boards", type=int, default=5000, help="extra boards configured for (2)")
    args = parser.parse_args()
    version = wrk.available()
    if version is None:
        parser.error("wrk is not installed (Debian package wrk): this benchmark measures the server with it")
    workdir = Path(tempfile.mkdtemp(prefix="lb-boards-bench-"))
    cluster = bench_cluster(workdir, workers=2)
    try:
        cluster.start()
        url = f"http://127.0.0.1:{cluster.settings.http_port}"
        dsn = cluster.settings.database_url
        print(f"boards bench: router with 2 workers, {args.connections} connections, load generator {version}")
        with httpx.Client(base_url=url, timeout=30, headers={"X-Admin-Token": ADMIN}) as admin:
            for board, windows in (("one", ["all"]), ("three", ["daily", "weekly", "all"])):
                admin.put(f"/v1/admin/boards/{board}", json={"windows": windows}).raise_for_status()
            for board in ("one", "three"):  # players to read, on both boards
                for start in range(0, PLAYERS, 1000):
                    events = [
                        {"user_id": f"p{i}", "match_id": "seed", "score": i % 2000} for i in range(start, start + 1000)
                    ]
                    admin.post(
                        f"/v1/boards/{board}/scores/batch",
                        json={"events": events},
                        headers={"X-Game-Service-Token": TOKEN},
                    ).raise_for_status()

        def rate(script: str) -> float:
            result = wrk.run(url, script, connections=args.connections, seconds=args.seconds)
            if result.errors:
                raise RuntimeError(f"{result.errors} failed requests")
            return result.rate

        healthz = wrk.get_script("/healthz")
        figures: dict[str, list[float]] = {
            k: [] for k in ("one", "three", "few_write", "many_write", "few_rank", "many_rank")
        }
        for round_no in range(args.rounds):
            row = {}
            for label, extra in (("few", 0), ("many", args.boards)):
                _set_extra_boards(dsn, extra)
                _wait_boards(url, 3 + extra)
                h = rate(healthz)
                write = rate(wrk.score_script(TOKEN, f"{label}{round_no}", PLAYERS, path="/v1/boards/one/scores")) / h
                rank = rate(wrk.rank_script(PLAYERS, "p", path="/v1/boards/one/scores/")) / h
                figures[f"{label}_write"].append(write)
                figures[f"{label}_rank"].append(rank)
                row[label] = (h, write, rank)
                if label == "few":
                    h = rate(healthz)
                    one = rate(wrk.score_script(TOKEN, f"one{round_no}", PLAYERS, path="/v1/boards/one/scores")) / h
                    three = (
                        rate(wrk.score_script(TOKEN, f"three{round_no}", PLAYERS, path="/v1/boards/three/scores")) / h
                    )
                    figures["one"].append(one)
                    figures["three"].append(three)
                    row["windows"] = (one, three)
            print(
                f"  round {round_no + 1}: writes/healthz 1 window {row['windows'][0]:.3f}, 3 windows"
                f" {row['windows'][1]:.3f} | {3} boards: write {row['few'][1]:.3f} rank {row['few'][2]:.3f}"
                f" | {3 + args.boards} boards: write {row['many'][1]:.3f} rank {row['many'][2]:.3f}",
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in figures.items()}
        print(f"medians of {args.rounds} rounds (ratios to /healthz measured just before):")
        print(
            f"  (1) an event on 3 windows costs {med['one'] / med['three']:.2f}x one on 1 window"
            f" (writes/healthz {med['one']:.3f} vs {med['three']:.3f})"
        )
        print(
            f"  (2) with {3 + args.boards} boards vs 3: writes {med['many_write'] / med['few_write']:.3f}x,"
            f" rank reads {med['many_rank'] / med['few_rank']:.3f}x"
            f" (writes/healthz {med['few_write']:.3f} vs {med['many_write']:.3f},"
            f" rank/healthz {med['few_rank']:.3f} vs {med['many_rank']:.3f})"
        )
        _print_storage(dsn, cluster)
        return 0
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
