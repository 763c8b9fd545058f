"""Re-materialise the shards of a board period from PostgreSQL.

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

import psycopg2
import redis

from router.periods import board_period
from router.shardmap import ShardMap
from router.shards.connect import sync_client
from router.shards.keys import (
    LEGACY_STATE_PATTERN,
    generation_key,
    legacy_state_key,
    metadata_key,
    month_of_legacy_key,
    script_keys,
    state_bucket,
    state_keys,
    tie_prefix,
    zset_key,
)
from router.shards.scripts import APPLY_LUA, BUMP_GENERATION_LUA
from router.shards.state import encode

CATCH_UP_MARGIN = timedelta(seconds=30)
"""Longer than any write transaction may run (statement timeout 5 s, a few retries)."""
CHUNK = 20_000
STATE_FLUSH = 500_000
"""Players' states are held back until this many are pending, then written bucket by
bucket: a chunk's 20,000 spread over 3 shards x 4,096 buckets would cost a command
for every one or two entries."""
SIDE = ":rebuild"


@dataclass(frozen=True)
class RebuildReport:
    board_period: str
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
    """`rebuild_period` for a month of the original board."""
    return rebuild_period(dsn, shard_map, board_period("global", "monthly", month), progress)


def rebuild_period(
    dsn: str, shard_map: ShardMap, label: str, progress: Callable[[str, int, int], None] | None = None
) -> RebuildReport:
    started = time.perf_counter()
    clients = {s.id: sync_client(s.address, timeout_s=60) for s in shard_map.shards}
    side_z = zset_key(label) + SIDE
    side_meta = metadata_key(label) + SIDE
    live_states = state_keys(label)
    side_states = [key + SIDE for key in live_states]
    per_shard: dict[str, int] = dict.fromkeys(shard_map.ids, 0)
    written: dict[str, set[str]] = {shard_id: set() for shard_id in shard_map.ids}
    conn = psycopg2.connect(dsn)
    try:
        for client in clients.values():  # an interrupted rebuild's side keys
            client.delete(side_z, side_meta)
            for start in range(0, len(side_states), 1000):
                client.unlink(*side_states[start : start + 1000])
        with conn, conn.cursor() as cur:
            cur.execute("SELECT now(), count(*) FROM player_scores WHERE board_period = %s", (label,))
            snapshot_at, total = cur.fetchone()
        done = 0
        pending: dict[str, dict[int, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
        pending_count = 0
        with_metadata: set[str] = set()

        def flush_states() -> None:
            for shard_id, buckets in pending.items():
                pipe = clients[shard_id].pipeline(transaction=False)
                for bucket, entries in buckets.items():
                    pipe.hset(side_states[bucket], mapping=entries)
                pipe.execute()
                written[shard_id].update(side_states[bucket] for bucket in buckets)
            pending.clear()

        with conn, conn.cursor(name="rebuild") as cur:
            cur.itersize = CHUNK
            cur.execute(
                "SELECT user_id, score, version, seq, shard, metadata FROM player_scores WHERE board_period = %s",
                (label,),
            )
            known = set(shard_map.ids)
            while rows := cur.fetchmany(CHUNK):
                scores: dict[str, dict[str, int]] = defaultdict(dict)
                shown: dict[str, dict[str, str]] = defaultdict(dict)
                for user_id, score, version, seq, placed_on, metadata in rows:
                    # PostgreSQL's placement wins (it follows a running rebalance's cursor).
                    shard_id = placed_on if placed_on in known else shard_map.shard_for_score(score).id
                    tie = tie_prefix(seq)
                    scores[shard_id][tie + user_id] = score  # members.member(), its tie made once
                    pending[shard_id][state_bucket(user_id)][user_id] = encode(version, tie)
                    if metadata is not None:
                        shown[shard_id][user_id] = metadata
                for shard_id, mapping in scores.items():
                    clients[shard_id].zadd(side_z, mapping)
                    per_shard[shard_id] += len(mapping)
                for shard_id, mapping in shown.items():
                    clients[shard_id].hset(side_meta, mapping=mapping)
                    with_metadata.add(shard_id)
                pending_count += len(rows)
                if pending_count >= STATE_FLUSH:
                    flush_states()
                    pending_count = 0
                done += len(rows)
                if progress:
                    progress(label, done, total)
        flush_states()
        if progress and total == 0:
            progress(label, 0, 0)
        for shard_id, client in clients.items():
            # One transaction per shard: readers see the old board or the new one.
            pipe = client.pipeline(transaction=True)
            if per_shard[shard_id]:
                pipe.rename(side_z, zset_key(label))
            else:
                pipe.unlink(zset_key(label))
            for live, side in zip(live_states, side_states, strict=True):
                if side in written[shard_id]:
                    pipe.rename(side, live)
                else:
                    pipe.unlink(live)
            if shard_id in with_metadata:
                pipe.rename(side_meta, metadata_key(label))
            else:
                pipe.unlink(metadata_key(label))
            pipe.unlink(legacy_state_key(label))
            # The board changed under any page a router rendered from it.
            pipe.eval(BUMP_GENERATION_LUA, 1, generation_key(label))
            pipe.execute()
        caught_up = _catch_up(conn, clients, shard_map, label, snapshot_at - CATCH_UP_MARGIN)
    finally:
        conn.close()
        for client in clients.values():
            client.close()
    return RebuildReport(label, done, per_shard, caught_up, time.perf_counter() - started)


def months_in_old_layout(shard_map: ShardMap) -> list[date]:
    """Months whose states some shard still keeps in one hash (boards written before the
    state buckets). Routers refuse to start on them; a rebuild converts them."""
    months: set[date] = set()
    for shard in shard_map.shards:
        client = sync_client(shard.address, timeout_s=10, decode_responses=True)
        try:
            for key in client.scan_iter(match=LEGACY_STATE_PATTERN, count=1000):
                months.add(date.fromisoformat(month_of_legacy_key(key) + "-01"))
        finally:
            client.close()
    return sorted(months)


def _catch_up(conn, clients: dict[str, redis.Redis], shard_map: ShardMap, label: str, since) -> int:
    """Apply, versioned, every state committed since `since`: the writes the snapshot may miss."""
    scripts = {sid: client.register_script(APPLY_LUA) for sid, client in clients.items()}
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT user_id, score, version, seq, shard, metadata FROM player_scores"
            " WHERE board_period = %s AND updated_at >= %s",
            (label, since),
        )
        rows = cur.fetchall()
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        keys = script_keys(label, (row[0] for row in chunk))
        for shard in shard_map.shards:
            args: list = []
            for user_id, score, version, seq, placed_on, metadata in chunk:
                target = placed_on if placed_on in clients else shard_map.shard_for_score(score).id
                present = target == shard.id
                args += [user_id, version, 1 if present else 0, score, tie_prefix(seq), metadata or ""]
            scripts[shard.id](keys=keys, args=args)
    return len(rows)
