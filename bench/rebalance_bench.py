"""`make bench-rebalance`: players moved per second by `apply`, with writes flowing.

Starts a private cluster (3 shards + 1 spare redis-server, PostgreSQL, one router
with 2 workers), puts PLAYERS players with scores spread over [0, 2000) into
PostgreSQL and rebuilds the shards from it. Then, with the same load generator
posting single scores throughout:

  baseline:  POST /v1/scores latency with no rebalance
  during:    the same while `apply` splits the top half of s1's range onto the spare

It prints the move rate and the write latency percentiles of both phases.

Usage: python -m bench.rebalance_bench [--players 1000000] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from bench import loadgen
from bench.http_bench import bench_cluster, single_scores
from bench.population import add_players
from router.shardmap import shard_map_from_dict
from shard_manager.local.binaries import require_redis_server
from shard_manager.local.processes import RedisServer, free_port
from shard_manager.rebalance import Rebalancer
from shard_manager.rebuild import rebuild_month


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="lb-rebalance-bench-"))
    cluster = bench_cluster(workdir, workers=2)
    spare = RedisServer(require_redis_server(), free_port(), workdir / "spare")
    try:
        cluster.start()
        spare.start()
        dsn = cluster.settings.database_url
        started = time.perf_counter()
        add_players(dsn, 1, args.players, prefix="b")
        month = datetime.now(UTC).date().replace(day=1)
        layout_map = Rebalancer(dsn).layout().shard_map
        rebuild_month(dsn, layout_map, month)
        print(f"{args.players} players in PostgreSQL and on the shards in {time.perf_counter() - started:.1f} s")

        port = cluster.settings.http_port
        host = f"127.0.0.1:{port}"
        baseline = asyncio.run(
            loadgen.run(
                "127.0.0.1",
                port,
                single_scores(host, "base", players=50_000, prefix="w", seed=7),
                connections=args.connections,
                seconds=args.baseline_seconds,
            )
        )

        shards = [
            {"id": s.id, "address": s.address, "min_score": s.range.start, "max_score": s.range.end}
            for s in layout_map.shards
        ]
        s0, s1, s2 = shards
        target = shard_map_from_dict(
            {
                "epoch": 1,
                "shards": [
                    s0,
                    {**s1, "max_score": 550},
                    {"id": "s3", "address": spare.url, "min_score": 550, "max_score": s2["min_score"]},
                    s2,
                ],
            }
        )
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM player_scores WHERE score >= 550 AND score < 1000")
            (moving,) = cur.fetchone()
        conn.close()
        timing: dict[str, float] = {}

        def rebalance() -> None:
            rebalancer = Rebalancer(dsn, settle_s=2.0)
            try:
                t = time.perf_counter()
                rebalancer.apply(target)
                timing["apply"] = time.perf_counter() - t
            finally:
                rebalancer.close()

        worker = threading.Thread(target=rebalance)
        worker.start()
        during_results = []
        while worker.is_alive():
            during_results.append(
                asyncio.run(
                    loadgen.run(
                        "127.0.0.1",
                        port,
                        single_scores(host, f"d{len(during_results)}", players=50_000, prefix="w", seed=7),
                        connections=args.connections,
                        seconds=5,
                    )
                )
            )
        worker.join()
        during = loadgen.LoadResult()
        for part in during_results:
            during.requests += part.requests
            during.errors += part.errors
            during.seconds += part.seconds
            during.latencies += part.latencies

        move_seconds = timing["apply"] - 2.0  # minus the settle pause after adding the shard
        print(
            f"\napply moved {moving} players in {timing['apply']:.1f} s "
            f"({moving / move_seconds:,.0f} players/s, not counting the 2 s settle pause)"
        )
        for name, result in (("without a move", baseline), ("during the move", during)):
            print(
                f"  POST /v1/scores {name:<15} {result.rate:7.0f} req/s  p50 {result.percentile(50) * 1000:6.1f} ms"
                f"  p99 {result.percentile(99) * 1000:6.1f} ms  errors {result.errors}"
            )
        print(f"  p99 during / p99 without = {during.percentile(99) / baseline.percentile(99):.2f}")
    finally:
        cluster.stop()
        spare.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
