"""What display data (`metadata` on entries) costs: memory per player, and reads.

Against a private cluster (3 shards, PostgreSQL, a router with 2 workers), three
boards of 20,000 players each: `plain` (no display data), `named` (a typical object,
{"name": "Player 12345", "country": "FR", "level": 12}: 49 bytes) and `full` (the
largest allowed, 256 bytes). Reports:

  (1) Redis bytes per player of each board (sorted set, state hashes and display data,
      MEMORY USAGE) and PostgreSQL bytes per row of player_scores (pg_column_size);
  (2) with wrk, top-10 pages and rank reads of each board as ratios to /healthz
      measured in the same round; medians of the rounds.

    python -m bench.display_data_bench [--rounds 5] [--seconds 4] [--connections 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import httpx
import psycopg2
import redis

from bench import wrk
from bench.http_bench import TOKEN, bench_cluster, board_memory

PLAYERS = 20_000
ADMIN = "bench-admin-token-0123456789"


def display_data(board: str, i: int) -> dict | None:
    if board == "plain":
        return None
    if board == "named":
        return {"name": f"Player {i:05d}", "country": "FR", "level": 12}
    # 256 bytes as compact JSON: {"name":"Player 00042","bio":"xxx..."}
    empty = len(json.dumps({"name": "Player 00000", "bio": ""}, separators=(",", ":")))
    return {"name": f"Player {i:05d}", "bio": "x" * (256 - empty)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    version = wrk.available()
    if version is None:
        parser.error("wrk is not installed (Debian package wrk): this benchmark measures the server with it")
    boards = ("plain", "named", "full")
    assert len(json.dumps(display_data("full", 0), separators=(",", ":"))) == 256
    workdir = Path(tempfile.mkdtemp(prefix="lb-display-bench-"))
    cluster = bench_cluster(workdir, workers=2)
    try:
        cluster.start()
        url = f"http://127.0.0.1:{cluster.settings.http_port}"
        print(f"display data bench: router with 2 workers, {args.connections} connections, load generator {version}")
        with httpx.Client(base_url=url, timeout=60, headers={"X-Admin-Token": ADMIN}) as client:
            for board in boards:
                client.put(f"/v1/admin/boards/{board}", json={"windows": ["all"]}).raise_for_status()
                for start in range(0, PLAYERS, 1000):
                    events = []
                    for i in range(start, start + 1000):
                        event = {"user_id": f"p{i}", "match_id": "seed", "score": i % 2000}
                        if (shown := display_data(board, i)) is not None:
                            event["metadata"] = shown
                        events.append(event)
                    client.post(
                        f"/v1/boards/{board}/scores/batch",
                        json={"events": events},
                        headers={"X-Game-Service-Token": TOKEN},
                    ).raise_for_status()
        shard_clients = [redis.Redis.from_url(s.address) for s in cluster.shard_map.shards]
        conn = psycopg2.connect(cluster.settings.database_url)
        print("(1) storage per player:")
        try:
            for board in boards:
                redis_bytes, players = board_memory(shard_clients, f"{board}:all:all")
                with conn, conn.cursor() as cur:
                    cur.execute(
                        "SELECT avg(pg_column_size(p.*)), avg(coalesce(pg_column_size(p.metadata), 0))"
                        " FROM player_scores p WHERE board_period = %s",
                        (f"{board}:all:all",),
                    )
                    row_bytes, metadata_bytes = cur.fetchone()
                print(
                    f"  {board:<6} Redis {redis_bytes / players:6.1f} B/player;"
                    f" PostgreSQL row {float(row_bytes):6.1f} B (display data {float(metadata_bytes):5.1f} B of it)"
                )
        finally:
            conn.close()
            for c in shard_clients:
                c.close()

        def rate(script: str) -> float:
            result = wrk.run(url, script, connections=args.connections, seconds=args.seconds)
            if result.errors:
                raise RuntimeError(f"{result.errors} failed requests")
            return result.rate

        figures: dict[str, list[float]] = {f"{kind}_{b}": [] for kind in ("top", "rank") for b in boards}
        for round_no in range(args.rounds):
            h = rate(wrk.get_script("/healthz"))
            for board in boards:
                figures[f"top_{board}"].append(rate(wrk.get_script(f"/v1/boards/{board}/top?limit=10")) / h)
                figures[f"rank_{board}"].append(rate(wrk.rank_script(PLAYERS, "p", f"/v1/boards/{board}/scores/")) / h)
            print(
                f"  round {round_no + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in figures.items()),
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in figures.items()}
        print(f"(2) medians of {args.rounds} rounds, ratios to /healthz measured just before:")
        for kind in ("top", "rank"):
            print(
                f"  {kind:<4} "
                + "  ".join(f"{b} {med[f'{kind}_{b}']:.3f}" for b in boards)
                + f"  (named/plain {med[f'{kind}_named'] / med[f'{kind}_plain']:.3f},"
                f" full/plain {med[f'{kind}_full'] / med[f'{kind}_plain']:.3f})"
            )
        return 0
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
