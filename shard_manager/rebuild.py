"""Re-materialise the shards of a month from PostgreSQL.

Fast path: stream player_scores with a server-side cursor, write each shard's
players into fresh side keys with multi-member ZADD/HSET in pipelines, then swap
the side keys in with RENAME inside MULTI (atomic per shard). Safe while routers
write: anything committed since the snapshot began (plus a margin for
transactions in flight) is applied again afterwards through the same versioned
script the routers use, so the swap cannot roll a player back for longer than
the catch-up pass takes.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources

import psycopg2
import redis

from router.members import member, state_key, tie_prefix, zset_key
from router.periods import month_label
from shard_manager.shardmap import ShardMap

CATCH_UP_MARGIN = timedelta(seconds=30)
"""Longer than any write transaction may run (statement timeout 5 s, a few retries)."""
CHUNK = 20_000
APPLY_LUA = (resources.files("router") / "lua" / "apply.lua").read_text()


@dataclass(frozen=True)
class RebuildReport:
    month: str
    players: int
    per_shard: dict[str, int]
    caught_up: int
    seconds: float


def progress_printer(stream=sys.stderr) -> Callable[[str, int, int], None]:
    def show(month: str, done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        pct = 100 * done / total if total else 100
        end = "\n" if done >= total else ""
        stream.write(f"\rrebuild {month} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({pct:.0f}%){end}")
        stream.flush()

    return show


def rebuild_month(
    dsn: str, shard_map: ShardMap, month: date, progress: Callable[[str, int, int], None] | None = None
) -> RebuildReport:
    started = time.perf_counter()
    label = month_label(month)
    clients = {s.id: redis.Redis.from_url(s.address, socket_timeout=60) for s in shard_map.shards}
    side_z, side_v = zset_key(label) + ":rebuild", state_key(label) + ":rebuild"
    per_shard: dict[str, int] = dict.fromkeys(shard_map.ids, 0)
    conn = psycopg2.connect(dsn)
    try:
        for client in clients.values():
            client.delete(side_z, side_v)
        with conn, conn.cursor() as cur:
            cur.execute("SELECT now(), count(*) FROM player_scores WHERE month = %s", (month,))
            snapshot_at, total = cur.fetchone()
        done = 0
        with conn, conn.cursor(name="rebuild") as cur:
            cur.itersize = CHUNK
            cur.execute("SELECT user_id, score, version, seq, shard FROM player_scores WHERE month = %s", (month,))
            known = set(shard_map.ids)
            while rows := cur.fetchmany(CHUNK):
                scores: dict[str, dict[str, int]] = defaultdict(dict)
                states: dict[str, dict[str, str]] = defaultdict(dict)
                for user_id, score, version, seq, placed_on in rows:
                    # PostgreSQL's placement wins (it follows a running rebalance's cursor).
                    shard_id = placed_on if placed_on in known else shard_map.shard_for_score(score).id
                    scores[shard_id][member(seq, user_id)] = score
                    states[shard_id][user_id] = f"{version}:{tie_prefix(seq)}"
                for shard_id, mapping in scores.items():
                    pipe = clients[shard_id].pipeline(transaction=False)
                    pipe.zadd(side_z, mapping)
                    pipe.hset(side_v, mapping=states[shard_id])
                    pipe.execute()
                    per_shard[shard_id] += len(mapping)
                done += len(rows)
                if progress:
                    progress(label, done, total)
        if progress and total == 0:
            progress(label, 0, 0)
        for shard_id, client in clients.items():
            pipe = client.pipeline(transaction=True)
            if per_shard[shard_id]:
                pipe.rename(side_z, zset_key(label))
                pipe.rename(side_v, state_key(label))
            else:
                pipe.delete(zset_key(label), state_key(label))
            pipe.execute()
        caught_up = _catch_up(conn, clients, shard_map, month, snapshot_at - CATCH_UP_MARGIN)
    finally:
        conn.close()
        for client in clients.values():
            client.close()
    return RebuildReport(label, done, per_shard, caught_up, time.perf_counter() - started)


def _catch_up(conn, clients: dict[str, redis.Redis], shard_map: ShardMap, month: date, since) -> int:
    """Apply, versioned, every state committed since `since`: the writes the snapshot may miss."""
    label = month_label(month)
    keys = [zset_key(label), state_key(label)]
    scripts = {sid: client.register_script(APPLY_LUA) for sid, client in clients.items()}
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT user_id, score, version, seq, shard FROM player_scores WHERE month = %s AND updated_at >= %s",
            (month, since),
        )
        rows = cur.fetchall()
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        for shard in shard_map.shards:
            args: list = []
            for user_id, score, version, seq, placed_on in chunk:
                target = placed_on if placed_on in clients else shard_map.shard_for_score(score).id
                present = target == shard.id
                args += [user_id, version, 1 if present else 0, score, tie_prefix(seq)]
            scripts[shard.id](keys=keys, args=args)
    return len(rows)
