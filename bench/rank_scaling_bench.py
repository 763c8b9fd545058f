"""`make bench-rank-scaling`: rank-read latency with 1M players vs with 10k, in one run.

Starts a private cluster (3 shards, PostgreSQL, one router with 2 workers), puts
10,000 players on the board (PostgreSQL, then `rebuild`), measures GET
/v1/scores/{id} for random existing players in rounds, grows the board to 1,000,000
players, and measures again. Prints the p50 of each and their ratio (the target is at
most 1.3: a rank read should not care how big the board is) with healthz's p50 timed
beside each round, which shows how much of the ratio is the machine's own drift
between the two phases, and the board's Redis
memory per player at both sizes (a board just rebuilt from PostgreSQL, with no
writes before it: no tombstones). `make bench` measures (5) the same way within its
run; this is the minute-long version of it on its own, plus the memory.

Usage: python -m bench.rank_scaling_bench [--small 10000] [--large 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import redis

from bench.http_bench import bench_cluster, board_memory, rank_read_latency, rank_requests, rank_scaling_lines
from bench.population import add_players
from router.periods import board_period
from router.store.layout import read_layout
from shard_manager.rebuild import rebuild_month


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="lb-rank-bench-"))
    cluster = bench_cluster(workdir, workers=2)
    try:
        cluster.start()
        dsn = cluster.settings.database_url
        month = datetime.now(UTC).date().replace(day=1)
        port = cluster.settings.http_port
        shard_clients = [redis.Redis.from_url(shard.address) for shard in cluster.shard_map.shards]
        label = board_period("global", "monthly", month)
        reads = rank_requests(f"127.0.0.1:{port}", args.small, "r")
        add_players(dsn, 0, args.small - 1)
        rebuild_month(dsn, read_layout(dsn).shard_map, month)
        small_memory = board_memory(shard_clients, label)
        small = [asyncio.run(rank_read_latency(port, reads, args.seconds)) for _ in range(args.rounds)]
        add_players(dsn, args.small, args.large - 1)
        rebuild_month(dsn, read_layout(dsn).shard_map, month)
        large_memory = board_memory(shard_clients, label)
        large = [asyncio.run(rank_read_latency(port, reads, args.seconds)) for _ in range(args.rounds)]
        for client in shard_clients:
            client.close()
        # Reads of the first players only in both phases, so the router's user->shard
        # cache is equally warm; only the board's size differs.
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nrounds, rank read p50 / healthz p50 beside it, ms:")
    for name, rounds in (("small board", small), ("large board", large)):
        print(f"  {name}: " + ", ".join(f"{r * 1000:.2f} / {h * 1000:.2f}" for r, h in rounds))
    first, second = rank_scaling_lines(small, large, (args.small, args.large))
    print(f"rank read p50 {first}\n{second}")
    print("(target for the first ratio: <= 1.3)")
    for board_bytes, players in (small_memory, large_memory):
        print(f"Redis memory of the board keys with {players:,} players: {board_bytes / players:.1f} bytes per player")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
