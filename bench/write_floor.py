"""`make bench-write-floor`: PostgreSQL's and Redis's CPU per written event, ours
against the least the write protocol asks of each, in one run.

Issue 7's target (4) asks for 30,000 batch events/s on 2 cores: 66.7 us of CPU per
event for everything together (router, PostgreSQL, Redis, load generator). `make
bench` shows what each part spends now; this shows how much of PostgreSQL's and
Redis's part any implementation of the write protocol would still pay. It starts a
private PostgreSQL (durable, as shipped) and redis-server (AOF on, as shipped), puts
the same players on boards of the same size, and times in alternating rounds, from
the server's own CPU (/proc) per event:

PostgreSQL, groups of --group events for distinct players, one transaction each:
  lb_apply_events   what routers call: the event with its duplicate check, the
                    players' locks and rows, tie-breaks, placement, the outbox row,
                    and every answer a router needs
  bare writes       only the event row (its primary key being the duplicate check)
                    and the player's row (score, version, a tie-break from
                    score_seq, updated_at), one statement, tables with the same
                    indexes; no row read first (so the event's scores_after is
                    left 0) and only a count sent back
  bare writes, primary keys only
                    the same on tables with no secondary index: what the rows
                    themselves cost
Redis, the same groups on one shard:
  apply script      what routers call: each player's version checked, the old
                    member out, the new one in, the state recorded, ranks read
  bare commands     the old members out (one ZREM), the new in (one ZADD), the
                    states (one HSET per state hash): no check, no rank

The bare variants check they changed exactly one row (member) per event, so a floor
that silently did less cannot look cheap.

Usage: python -m bench.write_floor [--players 100000] [--group 1000] [--calls 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import redis

from bench.cpu_time import threads_cpu_seconds
from bench.population import add_players
from router.boards import LEGACY
from router.shardmap import shard_map_from_dict
from router.shards.keys import member, script_keys, state_key, tie_prefix, zset_key
from router.shards.scripts import APPLY_LUA
from router.store.layout import ensure_layout
from router.store.migrate import migrate
from router.store.postgres import array_literal
from shard_manager.local.binaries import require_postgres, require_redis_server
from shard_manager.local.processes import PostgresServer, RedisServer, free_port

BUDGET_US = 2 * 1e6 / 30_000
"""CPU per event two cores have at 30,000 events/s, for every part together."""
PREFIX = "f"

APPLY_EVENTS = (
    "SELECT count(*) FROM lb_apply_events(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],"
    " %s::timestamptz[], %s::int[], %s::int[], %s::text[]) WHERE status = 'applied'"
)
# Index probes per event, as lb_apply_events plans its own: left to itself the planner
# joins a group of a thousand to the whole table by hashing it.
BARE_WRITES = """
WITH recorded AS (
    INSERT INTO {events} (board, user_id, match_id, board_periods, mode, value, occurred_at, scores_after,
                          recorded_month)
    SELECT 'global', t.user_id, t.match_id, ARRAY[%(month)s], 'incr', t.value, now(), '{{0}}',
           date_trunc('month', now() AT TIME ZONE 'UTC')::date
      FROM unnest(%(users)s::text[], %(matches)s::text[], %(values)s::bigint[]) AS t(user_id, match_id, value)
    ON CONFLICT DO NOTHING
    RETURNING user_id, value
), updated AS (
    UPDATE {scores} s
       SET score = s.score + r.value, version = s.version + 1, seq = nextval('score_seq'), updated_at = now()
      FROM recorded r
     WHERE s.board_period = %(month)s AND s.user_id = r.user_id
    RETURNING s.user_id, s.score, s.version, s.seq, s.shard
)
SELECT count(*) FROM updated
"""


Round = Callable[[list[list[str]], str], tuple[float, int]]
"""Runs its groups; returns the CPU seconds they cost the server and the events in them."""


class Backend:
    """A PostgreSQL connection whose server process's CPU can be read."""

    def __init__(self, dsn: str, *settings: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.cur = self.conn.cursor()
        for setting in settings:
            self.cur.execute(setting)
        self.cur.execute("SELECT pg_backend_pid()")
        (self.pid,) = self.cur.fetchone()

    def cpu(self) -> float:
        return threads_cpu_seconds(self.pid)

    def close(self) -> None:
        self.conn.close()


def make_floor_tables(cur, month, *, secondary_indexes: bool, suffix: str) -> tuple[str, str]:
    """Copies of score_events and player_scores (the latter with this month's players)."""
    events, scores = f"floor_events{suffix}", f"floor_scores{suffix}"
    including = "INCLUDING ALL" if secondary_indexes else "INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
    cur.execute(f"CREATE TABLE {events} (LIKE score_events {including})")
    cur.execute(f"CREATE TABLE {scores} (LIKE player_scores {including})")
    if not secondary_indexes:
        cur.execute(f"ALTER TABLE {events} ADD PRIMARY KEY (board, user_id, match_id, recorded_month)")
        cur.execute(f"ALTER TABLE {scores} ADD PRIMARY KEY (board_period, user_id)")
    cur.execute(f"INSERT INTO {scores} SELECT * FROM player_scores WHERE board_period = %s", (month,))
    cur.execute(f"VACUUM ANALYZE {scores}")
    return events, scores


def postgres_variants(dsn: str, month) -> tuple[dict[str, Round], Callable[[], None]]:
    setup = Backend(dsn)
    indexed = make_floor_tables(setup.cur, month, secondary_indexes=True, suffix="")
    keys_only = make_floor_tables(setup.cur, month, secondary_indexes=False, suffix="_pk")
    setup.close()
    ours = Backend(dsn)
    bare = Backend(dsn, "SET enable_hashjoin = off", "SET enable_mergejoin = off")
    bare_pk = Backend(dsn, "SET enable_hashjoin = off", "SET enable_mergejoin = off")
    now = datetime.now(UTC)

    def apply_events(users: list[str], match_prefix: str) -> None:
        n = len(users)
        ours.cur.execute(
            APPLY_EVENTS,
            (
                array_literal(["global"] * n),
                array_literal(users),
                array_literal([f"{match_prefix}{i}" for i in range(n)]),
                array_literal(["incr"] * n),
                array_literal([3] * n),
                array_literal([now] * n),
                array_literal(range(1, n + 1)),
                array_literal(range(1, n + 1)),
                array_literal([month] * n),
            ),
        )
        _expect("lb_apply_events applied", ours.cur.fetchone()[0], n)

    def bare_writes(backend: Backend, tables: tuple[str, str]) -> Callable[[list[str], str], None]:
        sql = BARE_WRITES.format(events=tables[0], scores=tables[1])

        def run(users: list[str], match_prefix: str) -> None:
            backend.cur.execute(
                sql,
                {
                    "month": month,
                    "users": array_literal(users),
                    "matches": array_literal([f"{match_prefix}{i}" for i in range(len(users))]),
                    "values": array_literal([3] * len(users)),
                },
            )
            _expect("bare writes updated", backend.cur.fetchone()[0], len(users))

        return run

    variants = {
        "lb_apply_events": (ours, apply_events),
        "bare writes": (bare, bare_writes(bare, indexed)),
        "bare writes, primary keys only": (bare_pk, bare_writes(bare_pk, keys_only)),
    }

    def close() -> None:
        for backend in (ours, bare, bare_pk):
            backend.close()

    return {name: _timed(backend.cpu, fn) for name, (backend, fn) in variants.items()}, close


class RedisBoards:
    """The same players on two boards of one redis-server: one the apply script keeps,
    one the bare commands keep."""

    def __init__(self, client: redis.Redis, month_label: str, players: list[str]) -> None:
        self.client = client
        self.script = client.register_script(APPLY_LUA)
        self.label = month_label
        self.bare_label = "bare-" + month_label
        self.version = dict.fromkeys(players, 0)
        self.members: dict[str, str] = {}
        self.seq = 0
        self.scores = dict.fromkeys(players, 0)
        for start in range(0, len(players), 1000):
            chunk = players[start : start + 1000]
            self.apply(chunk, "")
            self.bare(chunk, "")

    def _next(self, users: list[str]) -> list[tuple[str, int, int, int]]:
        """(user, version, score, seq) of each player's next state; both boards take
        their states from one sequence, so every state the script gets is newer."""
        states = []
        for user in users:
            self.seq += 1
            self.scores[user] += 3
            self.version[user] += 1
            states.append((user, self.version[user], self.scores[user], self.seq))
        return states

    def apply(self, users: list[str], _: str) -> None:
        args: list[object] = []
        for user, version, score, seq in self._next(users):
            args += [user, version, 1, score, tie_prefix(seq), ""]
        out = self.script(keys=script_keys(self.label, users), args=args)
        _expect("apply script applied", sum(out[0:-1:3]), len(users))

    def bare(self, users: list[str], _: str) -> None:
        zset = zset_key(self.bare_label)
        pipe = self.client.pipeline(transaction=False)
        old = [self.members[user] for user in users if user in self.members]
        if old:
            pipe.zrem(zset, *old)
        added: dict[str, int] = {}
        states: dict[str, dict[str, str]] = defaultdict(dict)
        for user, version, score, seq in self._next(users):
            self.members[user] = member(seq, user)
            added[self.members[user]] = score
            states[state_key(self.bare_label, user)][user] = f"{version}:{tie_prefix(seq)}"
        pipe.zadd(zset, added)
        for key, mapping in states.items():
            pipe.hset(key, mapping=mapping)
        replies = pipe.execute()
        _expect("bare commands removed", replies[0] if old else 0, len(old))
        _expect("bare commands added", replies[1 if old else 0], len(users))


def _expect(what: str, got: int, wanted: int) -> None:
    if got != wanted:
        raise RuntimeError(f"{what} {got} of {wanted}: the measurement would not be of the same work")


def _timed(cpu: Callable[[], float], fn: Callable[[list[str], str], None]) -> Round:
    def round_(groups: list[list[str]], tag: str) -> tuple[float, int]:
        before = cpu()
        for i, users in enumerate(groups):
            fn(users, f"{tag}-{i}-")
        return cpu() - before, sum(len(users) for users in groups)

    return round_


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, default=100_000)
    parser.add_argument("--group", type=int, default=1000, help="events per transaction / script call")
    parser.add_argument("--calls", type=int, default=20, help="groups per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for name in ("players", "group", "calls", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.group > args.players:
        parser.error("--group cannot exceed --players (a group's players are distinct)")

    workdir = Path(tempfile.mkdtemp(prefix="lb-floor-bench-"))
    shard = RedisServer(require_redis_server(), free_port(), workdir / "redis")
    postgres = PostgresServer(require_postgres(), free_port(), workdir / "pg")
    month = LEGACY.board_periods(datetime.now(UTC))[0]  # the original board's current month
    closers: list[Callable[[], None]] = []
    try:
        shard.start()
        postgres.start()
        dsn = postgres.dsn()
        migrate(dsn)
        ensure_layout(
            dsn,
            shard_map_from_dict(
                {"epoch": 1, "shards": [{"id": "s0", "address": shard.url, "min_score": 0, "max_score": None}]}
            ),
        )
        add_players(dsn, 0, args.players - 1, prefix=PREFIX)
        players = [f"{PREFIX}{i}" for i in range(args.players)]
        pg_variants, close_pg = postgres_variants(dsn, month)
        closers.append(close_pg)
        client = redis.Redis.from_url(shard.url)
        closers.append(client.close)
        assert shard.proc is not None
        boards = RedisBoards(client, month, players)

        def redis_cpu() -> float:
            assert shard.proc is not None
            return threads_cpu_seconds(shard.proc.pid)

        redis_variants = {
            "apply script": _timed(redis_cpu, boards.apply),
            "bare commands": _timed(redis_cpu, boards.bare),
        }
        print(
            f"{args.players:,} players; {args.rounds} rounds of {args.calls} groups of {args.group} events per variant"
            " (order alternating); CPU per event, from /proc:",
            flush=True,
        )
        rng = random.Random(7)
        results: dict[str, list[float]] = defaultdict(list)
        for round_no in range(args.rounds):
            groups = [rng.sample(players, args.group) for _ in range(args.calls)]
            for part in (pg_variants, redis_variants):
                order = list(part.items())
                if round_no % 2:
                    order.reverse()
                for name, run in order:
                    seconds, events = run(groups, f"r{round_no}-{time.time_ns()}")
                    results[name].append(seconds / events * 1e6)
            print(
                f"  round {round_no + 1}: " + ", ".join(f"{name} {us[-1]:.1f}" for name, us in results.items()),
                flush=True,
            )
        median = {name: statistics.median(us) for name, us in results.items()}
        print("\nmedians, us of CPU per event:")
        for part, ours, names in (
            ("PostgreSQL", "lb_apply_events", ("bare writes", "bare writes, primary keys only")),
            ("Redis", "apply script", ("bare commands",)),
        ):
            print(f"  {part:11s} {ours:33s} {median[ours]:6.1f}")
            for name in names:
                print(f"  {part:11s} {name:33s} {median[name]:6.1f}  (÷ ours {median[name] / median[ours]:.2f})")
        floor = median["bare writes, primary keys only"] + median["bare commands"]
        ours = median["lb_apply_events"] + median["apply script"]
        print(
            f"\n30,000 events/s on 2 cores leaves {BUDGET_US:.1f} us per event for every part together;"
            f" the bare floors of PostgreSQL and Redis take {floor:.1f} of it ({floor / BUDGET_US:.0%}),"
            f" ours {ours:.1f} ({ours / BUDGET_US:.0%})."
        )
    finally:
        for close in closers:
            close()
        shard.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
