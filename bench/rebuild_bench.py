"""`make bench-rebuild`: rebuild time from PostgreSQL vs a plain bulk load, in one run.

Starts 3 redis-servers and PostgreSQL in a temp dir, writes PLAYERS players built
from EVENTS_PER_PLAYER events each straight into PostgreSQL (the shape routers
leave), then times, alternating and repeated:

  rebuild:    shard-manager's rebuild of the month (PostgreSQL -> 3 shards)
  bulk load:  the same (user, score) pairs, already in memory, ZADDed in pipelined
              chunks of the same size into the same shards

Usage: python -m bench.rebuild_bench [--players 1000000] [--events-per-player 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg2
import redis

from router.periods import board_period
from router.shardmap import shard_map_from_dict
from router.shards.keys import zset_key
from router.store.migrate import migrate
from shard_manager.local.binaries import require_postgres, require_redis_server
from shard_manager.local.processes import PostgresServer, RedisServer, free_port
from shard_manager.rebuild import CHUNK, rebuild_month


def _populate(dsn: str, month: date, players: int, per_player: int) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        # Players last changed an hour ago: a rebuild's catch-up pass (changes of the
        # last 30 s) then has nothing to do, as on a board that is not being written.
        # Events: score deltas 1..400, spread so totals cover all three ranges.
        cur.execute(
            """
            INSERT INTO score_events (board, user_id, match_id, board_periods, mode, value, occurred_at, scores_after)
            SELECT 'global', 'u' || (g %% %(players)s), 'm' || (g / %(players)s), ARRAY[%(key)s], 'incr',
                   1 + (hashint4(g) & 2147483647) %% 400, now(), '{0}'
              FROM generate_series(0, %(players)s * %(per)s - 1) AS g
            """,
            {"players": players, "per": per_player, "key": board_period("global", "monthly", month)},
        )
        cur.execute(
            """
            INSERT INTO player_scores (board_period, user_id, score, version, seq, shard, epoch, updated_at)
            SELECT %(key)s, user_id, sum(value), count(*), row_number() OVER (ORDER BY user_id), '', 1,
                   now() - interval '1 hour'
              FROM score_events WHERE board = 'global' GROUP BY user_id
            """,
            {"key": board_period("global", "monthly", month)},
        )
    conn.close()


def _plain_bulk_load(clients: list[redis.Redis], bounds: list[int], pairs: list[tuple[str, int]], key: str) -> None:
    per_shard: dict[int, dict[str, int]] = defaultdict(dict)
    for user, score in pairs:
        k = sum(1 for b in bounds if score >= b) - 1
        per_shard[k][user] = score
    for k, mapping in per_shard.items():
        items = list(mapping.items())
        for start in range(0, len(items), CHUNK):
            clients[k].zadd(key, dict(items[start : start + CHUNK]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--events-per-player", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lb-rebuild-bench-"))
    servers = [RedisServer(require_redis_server(), free_port(), workdir / f"r{i}", appendonly=False) for i in range(3)]
    postgres = PostgresServer(require_postgres(), free_port(), workdir / "pg")
    bounds = [0, 400, 1200]
    month = datetime.now(UTC).date().replace(day=1)
    try:
        for server in servers:
            server.start()
        postgres.start()
        migrate(postgres.dsn())
        shard_map = shard_map_from_dict(
            {
                "epoch": 1,
                "shards": [
                    {"id": f"s{i}", "address": s.url, "min_score": b, "max_score": (bounds + [None])[i + 1]}
                    for i, (s, b) in enumerate(zip(servers, bounds, strict=True))
                ],
            }
        )
        started = time.perf_counter()
        _populate(postgres.dsn(), month, args.players, args.events_per_player)
        print(
            f"populated {args.players} players from {args.players * args.events_per_player} events "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        conn = psycopg2.connect(postgres.dsn())
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT user_id, score FROM player_scores WHERE board_period = %s",
                (board_period("global", "monthly", month),),
            )
            pairs = cur.fetchall()
        conn.close()
        clients = [redis.Redis(host="127.0.0.1", port=s.port) for s in servers]
        rebuild_times, bulk_times = [], []
        for round_no in range(args.rounds):
            for client in clients:
                client.flushall()
            t = time.perf_counter()
            report = rebuild_month(postgres.dsn(), shard_map, month)
            rebuild_times.append(time.perf_counter() - t)
            assert report.players == args.players
            for client in clients:
                client.flushall()
            t = time.perf_counter()
            _plain_bulk_load(clients, bounds, pairs, zset_key(board_period("global", "monthly", month)) + ":plain")
            bulk_times.append(time.perf_counter() - t)
            print(
                f"  round {round_no + 1}: rebuild {rebuild_times[-1]:.2f} s, plain bulk load {bulk_times[-1]:.2f} s",
                flush=True,
            )
        r, b = statistics.median(rebuild_times), statistics.median(bulk_times)
        print(f"\nmedians: rebuild {r:.2f} s ({args.players / r:,.0f} players/s), plain bulk load {b:.2f} s")
        print(f"rebuild / plain bulk load = {r / b:.2f}")
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
