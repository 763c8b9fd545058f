"""`make bench`: throughput ratios against a private local cluster, measured in one run.

Starts its own cluster (3 shards, PostgreSQL, one router with LB_WORKERS workers) in
a temp dir on free ports, then alternates rounds of each scenario so that machine
noise hits all of them alike, and prints medians:

  (1) POST /v1/scores req/s  /  GET /healthz req/s   (same client, same connections)
  (2) GET /v1/scores/{id} req/s  /  GET /healthz req/s
  (3) GET /v1/leaderboard/top?limit=10 req/s  /  GET /healthz req/s
  (4) batch ingest: events/s through POST /v1/scores/batch (1,000 events a request)
  (5) GET /v1/scores/{id} p50 latency with 1M players on the board / with 10k: the
      same 10k players read at 8 connections, before the rounds (when they are the
      whole board) and after them, once the board has been grown to --large players
      in PostgreSQL and rebuilt onto the shards; healthz's p50 is timed beside every
      round, since the two phases are minutes apart and the machine's speed drifts
  (6) Redis memory per player: the board's keys over all shards (sorted sets and
      version hashes, tombstones included) after the rounds, divided by its players

and (1) again at other numbers of client connections (--sweep), each against healthz
at the same connections: single writes wait on a group commit, so with few
connections in flight the cores idle between groups, and req/s at 32 connections is
not yet the write path's capacity (healthz is CPU-bound at any of them).

and, per scenario, the CPU that the router, PostgreSQL, Redis and the load generator
each spent per request (per event for batches): where the time goes.

The HTTP load for healthz, single writes, rank and top reads comes from wrk (a C
generator, `bench/wrk.py`) when it is installed, so the cores measure the server, not
the client; the output says which generator ran.

Usage: python -m bench.http_bench [--rounds 5] [--seconds 5] [--connections 64] [--sweep 8,32,128]
                                  [--large 1000000] [--generator auto|wrk|python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

import redis

from bench import loadgen, wrk
from bench.cpu_time import cpu_seconds, per_request_us
from bench.population import add_players
from router.periods import board_period
from router.settings import Settings
from router.shards.keys import metadata_key, state_keys, zset_key
from router.store.layout import read_layout
from shard_manager.local.launcher import LocalCluster
from shard_manager.local.processes import free_port
from shard_manager.rebuild import rebuild_month

PLAYERS = 100_000
SEEDED_PLAYERS = 10_000  # p0..p9999: the whole board when (5) is first measured
RANK_LATENCY_CONNECTIONS = 8  # few enough that the p50 is a read's own path, not a queue
TOKEN = "bench-token-0123456789abcdef"


def bench_cluster(workdir: Path, workers: int) -> LocalCluster:
    ports = [free_port() for _ in range(3)]
    shards_file = workdir / "shards.yaml"
    shards_file.write_text(
        "epoch: 1\nshards:\n"
        f"  - {{id: s0, address: 'redis://127.0.0.1:{ports[0]}/0', min_score: 0, max_score: 100}}\n"
        f"  - {{id: s1, address: 'redis://127.0.0.1:{ports[1]}/0', min_score: 100, max_score: 1000}}\n"
        f"  - {{id: s2, address: 'redis://127.0.0.1:{ports[2]}/0', min_score: 1000, max_score: null}}\n"
    )
    settings = Settings(
        data_dir=workdir / "data",
        shards_file=shards_file,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/leaderboard",
        http_port=free_port(),
        workers=workers,
        game_tokens=[TOKEN],
        admin_token="bench-admin-token-0123456789",
    )
    # The router's log lines (an access line per write) go to a file, as with `make up`:
    # printed to a terminal they cost the machine more than some of what is measured.
    return LocalCluster(settings, router_output=workdir / "router.log")


def board_memory(shard_clients: list[redis.Redis], board_period_key: str) -> tuple[int, int]:
    """(bytes, players) of one board period over all shards: sorted sets, state hashes
    (tombstones included) and display data, counted exactly (MEMORY USAGE with SAMPLES
    0, which counts each key's own overhead too)."""
    keys = [zset_key(board_period_key), metadata_key(board_period_key), *state_keys(board_period_key)]
    board_bytes = 0
    for client in shard_clients:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        board_bytes += sum(used or 0 for used in pipe.execute())
    return board_bytes, sum(c.zcard(zset_key(board_period_key)) for c in shard_clients)


def rank_requests(host: str, players: int, prefix: str) -> list[bytes]:
    """4,096 `GET /v1/scores/{id}` requests for random players <prefix>0..<players - 1>."""
    rng = random.Random(3)
    return [loadgen.build_request("GET", f"/v1/scores/{prefix}{rng.randrange(players)}", host) for _ in range(4096)]


async def rank_read_latency(port: int, requests: list[bytes], seconds: float) -> tuple[float, float]:
    """p50 latencies in seconds of the given rank reads and, just before them, of healthz,
    both at RANK_LATENCY_CONNECTIONS. (5) compares p50s measured minutes apart, on a
    board before and after it grows; healthz beside each says how fast the machine ran
    meanwhile, which on a shared machine moves by more than the board's size does."""
    healthz = loadgen.build_request("GET", "/healthz", f"127.0.0.1:{port}")
    latencies = []
    for make in (lambda _: healthz, lambda n: requests[n % len(requests)]):
        result = await loadgen.run("127.0.0.1", port, make, connections=RANK_LATENCY_CONNECTIONS, seconds=seconds / 2)
        if result.errors:
            raise SystemExit(f"{result.errors} failed requests while timing rank reads")
        latencies.append(result.percentile(50))
    healthz_p50, rank_p50 = latencies
    return rank_p50, healthz_p50


def rank_scaling_lines(
    small: list[tuple[float, float]], large: list[tuple[float, float]], players: tuple[int, int]
) -> tuple[str, str]:
    """(5) from rounds of `rank_read_latency` on the small board and on the large one: the
    rank reads' p50s and their ratio, then healthz's beside them."""
    rank_small, healthz_small = (statistics.median(x) for x in zip(*small, strict=True))
    rank_large, healthz_large = (statistics.median(x) for x in zip(*large, strict=True))
    adjusted = statistics.median(r / h for r, h in large) / statistics.median(r / h for r, h in small)
    return (
        f"{rank_large * 1000:.2f} ms with {players[1]:,} players ÷ {rank_small * 1000:.2f} ms with "
        f"{players[0]:,}: ratio {rank_large / rank_small:.2f} ({RANK_LATENCY_CONNECTIONS} connections)",
        f"healthz p50 beside them {healthz_large * 1000:.2f} ÷ {healthz_small * 1000:.2f} ms (the machine's speed);"
        f" rank ÷ healthz p50, large board ÷ small: {adjusted:.2f}",
    )


def single_scores(host: str, run_id: str, *, players: int = PLAYERS, prefix: str = "p", seed: int = 1):
    """Request maker for loadgen: one `POST /v1/scores` per call, random player, unique match_id."""
    rng = random.Random(seed)

    def make(n: int) -> bytes:
        user = f"{prefix}{rng.randrange(players)}"
        body = json.dumps({"user_id": user, "match_id": f"{run_id}-{n}", "score": rng.randint(1, 40)}).encode()
        return loadgen.build_request("POST", "/v1/scores", host, body, {"X-Game-Service-Token": TOKEN})

    return make


def _post_batch(host: str, run_id: str):
    rng = random.Random(2)

    def make(n: int) -> bytes:
        events = [
            {"user_id": f"p{rng.randrange(PLAYERS)}", "match_id": f"{run_id}-{n}-{i}", "score": rng.randint(1, 40)}
            for i in range(1000)
        ]
        body = json.dumps({"events": events}).encode()
        return loadgen.build_request("POST", "/v1/scores/batch", host, body, {"X-Game-Service-Token": TOKEN})

    return make


Cpu = dict[str, list[dict[str, float]]]  # scenario -> per round, part -> µs of CPU per request


async def _measure(
    args: argparse.Namespace, port: int, parts: dict[str, list[int]]
) -> tuple[dict[str, list[float]], list[tuple[float, float]], dict[int, dict[str, list[float]]], Cpu]:
    host = f"127.0.0.1:{port}"
    cpu: Cpu = defaultdict(list)

    async def scenario(name: str, make, connections: int, units: int = 1, script: str | None = None):
        """One timed run, and the CPU each part of the cluster spent per request (or per
        event: `units` per request) meanwhile. With `script` and wrk installed, wrk
        sends the load (`bench/wrk.py`); otherwise the Python generator, with `make`."""
        before = cpu_seconds(parts)
        if script is not None and args.generator == "wrk":
            result = await asyncio.to_thread(
                wrk.run, f"http://{host}", script, connections=connections, seconds=args.seconds
            )
        else:
            result = await loadgen.run("127.0.0.1", port, make, connections=connections, seconds=args.seconds)
        cpu[name].append(per_request_us(before, cpu_seconds(parts), max(1, result.requests * units)))
        return result

    healthz = loadgen.build_request("GET", "/healthz", host)
    results: dict[str, list[float]] = {
        "healthz": [],
        "post": [],
        "ratio": [],
        "batch_events": [],
        "post_p50_ms": [],
        "rank": [],
        "rank_ratio": [],
        "top": [],
        "top_ratio": [],
    }
    rank_small: list[tuple[float, float]] = []
    sweep: dict[int, dict[str, list[float]]] = {c: defaultdict(list) for c in [args.connections, *args.sweep]}
    # Warm-up: players p0..p9999 certainly exist (the reads ask for them), then more.
    for chunk in range(SEEDED_PLAYERS // 1000):
        events = [{"user_id": f"p{chunk * 1000 + i}", "match_id": "seed", "score": (i * 7) % 2000} for i in range(1000)]
        seed = loadgen.build_request(
            "POST", "/v1/scores/batch", host, json.dumps({"events": events}).encode(), {"X-Game-Service-Token": TOKEN}
        )
        await loadgen.run("127.0.0.1", port, lambda _, body=seed: body, connections=1, seconds=0.01)
    reads = rank_requests(host, SEEDED_PLAYERS, "p")
    for _ in range(args.rounds):
        rank_small.append(await rank_read_latency(port, reads, args.seconds))
    await loadgen.run("127.0.0.1", port, _post_batch(host, "warm"), connections=2, seconds=3)
    top_request = loadgen.build_request("GET", "/v1/leaderboard/top?limit=10", host)
    for round_no in range(args.rounds):
        health = await scenario("GET /healthz", lambda _: healthz, args.connections, script=wrk.get_script("/healthz"))
        post = await scenario(
            "POST /v1/scores",
            single_scores(host, f"r{round_no}"),
            args.connections,
            script=wrk.score_script(TOKEN, f"r{round_no}", PLAYERS),
        )
        batch = await scenario("batch, per event", _post_batch(host, f"b{round_no}"), 4, units=1000)
        if health.errors or post.errors or batch.errors:
            raise SystemExit(
                f"errors during the run: healthz {health.errors}, post {post.errors}, batch {batch.errors}"
            )
        results["healthz"].append(health.rate)
        results["post"].append(post.rate)
        results["ratio"].append(post.rate / health.rate)
        results["batch_events"].append(batch.rate * 1000)
        results["post_p50_ms"].append(post.median_latency * 1000)
        rank = await scenario(
            "GET /v1/scores/{id}",
            lambda n: reads[n % 4096],
            args.connections,
            script=wrk.rank_script(SEEDED_PLAYERS, "p"),
        )
        top = await scenario(
            "GET top-10", lambda _: top_request, args.connections, script=wrk.get_script("/v1/leaderboard/top?limit=10")
        )
        if rank.errors or top.errors:
            raise SystemExit(f"errors during the run: rank {rank.errors}, top {top.errors}")
        results["rank"].append(rank.rate)
        results["rank_ratio"].append(rank.rate / health.rate)
        results["top"].append(top.rate)
        results["top_ratio"].append(top.rate / health.rate)
        for connections in args.sweep:
            health_at = await scenario(
                f"GET /healthz, {connections} conns", lambda _: healthz, connections, script=wrk.get_script("/healthz")
            )
            post_at = await scenario(
                f"POST /v1/scores, {connections} conns",
                single_scores(host, f"r{round_no}c{connections}"),
                connections,
                script=wrk.score_script(TOKEN, f"r{round_no}c{connections}", PLAYERS),
            )
            if health_at.errors or post_at.errors:
                raise SystemExit(
                    f"errors during the run at {connections} connections: "
                    f"healthz {health_at.errors}, post {post_at.errors}"
                )
            _record_writes(sweep[connections], health_at, post_at)
        _record_writes(sweep[args.connections], health, post)
        print(
            f"  round {round_no + 1}: healthz {health.rate:8.0f} req/s | POST /v1/scores {post.rate:7.0f} req/s "
            f"(ratio {post.rate / health.rate:.3f}, p50 {post.median_latency * 1000:.1f} ms) | "
            f"batch {batch.rate * 1000:8.0f} events/s | "
            f"rank {rank.rate / health.rate:.3f} | top {top.rate / health.rate:.3f}",
            flush=True,
        )
    return results, rank_small, sweep, cpu


def _grow_board(cluster: LocalCluster, shard_clients: list[redis.Redis], month: date, players: int, target: int) -> int:
    """Adds players to this month's board in PostgreSQL until it has `target`, puts them
    on the shards with a rebuild (as an operator would after a bulk import), and
    returns the players the shards then hold. (Not a board to weigh for (6): the
    rebuild's catch-up tombstones each player written in its last 30 s on every shard
    the player is not on.)"""
    dsn = cluster.settings.database_url
    if target <= players:
        return players
    print(f"growing the board from {players:,} to {target:,} players for (5)", flush=True)
    add_players(dsn, 1, target - players, prefix="g")
    rebuild_month(dsn, read_layout(dsn).shard_map, month)
    return sum(c.zcard(zset_key(board_period("global", "monthly", month))) for c in shard_clients)


def _record_writes(into: dict[str, list[float]], health: loadgen.LoadResult, post: loadgen.LoadResult) -> None:
    into["healthz"].append(health.rate)
    into["post"].append(post.rate)
    into["ratio"].append(post.rate / health.rate)
    into["p50_ms"].append(post.median_latency * 1000)
    into["p99_ms"].append(post.percentile(99) * 1000)


def _at_least_one(kind):
    def parse(text: str):
        value = kind(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text} is less than 1")
        return value

    return parse


def _connection_counts(text: str) -> list[int]:
    parse = _at_least_one(int)
    return [parse(part) for part in text.split(",") if part.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=_at_least_one(int), default=5)
    parser.add_argument("--seconds", type=_at_least_one(float), default=5.0)
    parser.add_argument("--connections", type=_at_least_one(int), default=64)
    parser.add_argument("--workers", type=_at_least_one(int), default=2)
    parser.add_argument(
        "--sweep",
        type=_connection_counts,
        default=[8, 32, 128],
        help="other client connection counts to measure (1) at, comma-separated; empty: none",
    )
    parser.add_argument(
        "--large",
        type=_at_least_one(int),
        default=1_000_000,
        help="players on the board for the second rank-latency measurement of (5)",
    )
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="who sends the HTTP load: wrk (a C generator, measures the server) if installed, else the Python one",
    )
    args = parser.parse_args()
    args.sweep = sorted(set(args.sweep) - {args.connections})
    wrk_version = wrk.available()
    if args.generator == "wrk" and wrk_version is None:
        parser.error("--generator wrk: wrk is not installed (Debian package wrk)")
    if args.generator == "auto":
        args.generator = "wrk" if wrk_version else "python"
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    workdir = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    cluster = bench_cluster(workdir, args.workers)
    shard_clients: list[redis.Redis] = []
    try:
        cluster.start()
        print(
            f"bench: router with {args.workers} workers, {args.connections} connections, "
            f"{args.rounds} rounds x {args.seconds:.0f} s per scenario",
            flush=True,
        )
        generator = (
            f"{wrk_version}, one thread" if args.generator == "wrk" else "the Python generator (bench/loadgen.py)"
        )
        print(
            f"load generator: {generator} for healthz, single writes, rank and top reads; "
            "the Python generator for batches and (5)'s latencies",
            flush=True,
        )
        shard_clients = [redis.Redis.from_url(s.address) for s in cluster.shard_map.shards]
        baseline_memory = sum(c.info("memory")["used_memory"] for c in shard_clients)
        assert cluster.router is not None and cluster.postgres is not None and cluster.postgres.proc is not None
        parts = {
            "router": [cluster.router.pid],
            "postgres": [cluster.postgres.proc.pid],
            "redis": [server.proc.pid for server in cluster.redis if server.proc is not None],
        }
        results, rank_small, sweep, cpu = asyncio.run(_measure(args, cluster.settings.http_port, parts))
        month = datetime.now(UTC).date().replace(day=1)
        # The board itself, and everything the shards gained, which also counts the
        # per-player rate-limit counters on s0.
        board_bytes, players = board_memory(shard_clients, board_period("global", "monthly", month))
        memory_per_player = board_bytes / players
        gained_per_player = (sum(c.info("memory")["used_memory"] for c in shard_clients) - baseline_memory) / players
        large_players = _grow_board(cluster, shard_clients, month, players, args.large)
        reads = rank_requests(f"127.0.0.1:{cluster.settings.http_port}", SEEDED_PLAYERS, "p")
        rank_large = [
            asyncio.run(rank_read_latency(cluster.settings.http_port, reads, args.seconds)) for _ in range(args.rounds)
        ]
    except BaseException:
        log = workdir / "router.log"
        if log.exists():
            print("router log, last lines:\n" + "\n".join(log.read_text().splitlines()[-20:]), file=sys.stderr)
        raise
    finally:
        for client in shard_clients:
            client.close()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print("\nmedians over rounds:")
    print(f"  GET /healthz          {med['healthz']:10.0f} req/s")
    print(f"  POST /v1/scores       {med['post']:10.0f} req/s   p50 {med['post_p50_ms']:.1f} ms")
    print(f"  POST / healthz ratio  {med['ratio']:10.3f}")
    print(f"  GET /v1/scores/{{id}}   {med['rank']:10.0f} req/s   ratio {med['rank_ratio']:.3f}")
    print(f"  GET top-10            {med['top']:10.0f} req/s   ratio {med['top_ratio']:.3f}")
    print(f"  batch ingest          {med['batch_events']:10.0f} events/s")
    first, second = rank_scaling_lines(rank_small, rank_large, (SEEDED_PLAYERS, large_players))
    print(f"  {'rank read p50':22}{first}")
    print(f"  {'':22}{second}")
    print(f"  Redis memory          {memory_per_player:10.1f} bytes per player in the board keys ({players:,} players)")
    print(
        f"                        {gained_per_player:10.1f} bytes per player of used_memory growth "
        "(also rate-limit counters, AOF and client buffers)"
    )
    print("\nsingle writes by client connections (healthz at the same connections, medians over rounds):")
    print(f"  {'connections':>11} {'healthz req/s':>14} {'POST req/s':>11} {'ratio':>7} {'p50 ms':>7} {'p99 ms':>7}")
    for connections in sorted(sweep):
        m = {k: statistics.median(v) for k, v in sweep[connections].items()}
        print(
            f"  {connections:>11} {m['healthz']:>14.0f} {m['post']:>11.0f} {m['ratio']:>7.3f} "
            f"{m['p50_ms']:>7.1f} {m['p99_ms']:>7.1f}"
        )
    print("\nCPU per request in µs, medians over rounds (where the time goes; the machine's cores are shared):")
    names = list(next(iter(cpu.values()))[0])
    print(f"  {'':22}" + "".join(f"{name:>16}" for name in names))
    for scenario_name, rounds in cpu.items():
        row = "".join(f"{statistics.median(r[name] for r in rounds):16.0f}" for name in names)
        print(f"  {scenario_name:22}{row}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
