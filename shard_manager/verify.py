"""Check the shards of a board period against PostgreSQL, player by player.

Every player must be on exactly one shard, the one whose range holds their score,
with the score, version and tie order PostgreSQL holds, and no shard may hold a
player PostgreSQL does not know. While routers write, a player can be caught
mid-write; mismatches are therefore checked again after a pause and only the ones
that persist are reported.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date

import psycopg2
import redis

from router.periods import board_period, split_board_period
from router.shardmap import ShardMap
from router.shards.connect import sync_client
from router.shards.keys import (
    TIE_WIDTH,
    legacy_state_key,
    metadata_key,
    state_key,
    state_keys,
    tie_prefix,
    zset_key,
)
from router.shards.state import decode, encode

SCAN = 50_000


@dataclass
class VerifyReport:
    board_period: str
    players: int
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, example: str) -> None:
        self.problems[kind] += 1
        if len(self.examples[kind]) < 5:
            self.examples[kind].append(example)

    def render(self) -> str:
        if self.ok:
            return f"verify {self.board_period}: ok, {self.players} players, each on exactly one shard and exact"
        lines = [f"verify {self.board_period}: {sum(self.problems.values())} problem(s) among {self.players} players"]
        for kind, count in self.problems.most_common():
            lines.append(f"  {kind}: {count}  e.g. " + "; ".join(self.examples[kind]))
        return "\n".join(lines)


def _pg_rows(dsn: str, key: str, users: list[str] | None = None) -> dict[str, tuple[int, int, int, str]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor(name="verify") as cur:
            cur.itersize = SCAN
            if users is None:
                cur.execute(
                    "SELECT user_id, score, version, seq, shard, metadata FROM player_scores WHERE board_period = %s",
                    (key,),
                )
            else:
                cur.execute(
                    "SELECT user_id, score, version, seq, shard, metadata FROM player_scores"
                    " WHERE board_period = %s AND user_id = ANY(%s)",
                    (key, users),
                )
            return {user: tuple(rest) for user, *rest in cur}
    finally:
        conn.close()


def _shard_contents(
    client: redis.Redis, label: str, users: list[str] | None
) -> tuple[dict[str, list[tuple[str, int]]], dict[str, str], dict[str, str]]:
    """(user -> [(tie, score)] from the sorted set, user -> state entry, user -> display data) on one shard."""
    members: dict[str, list[tuple[str, int]]] = defaultdict(list)
    if users is None:
        start = 0
        while batch := client.zrange(zset_key(label), start, start + SCAN - 1, withscores=True):
            for name, score in batch:
                name = name.decode()
                members[name[TIE_WIDTH:]].append((name[:TIE_WIDTH], int(score)))
            start += SCAN
        states = {}
        keys = state_keys(label)
        for start in range(0, len(keys), 256):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + 256]:
                pipe.hgetall(key)
            for bucket in pipe.execute():
                states.update((k.decode(), v.decode()) for k, v in bucket.items())
        shown = {k.decode(): v.decode() for k, v in client.hscan_iter(metadata_key(label), count=SCAN)}
    else:
        pipe = client.pipeline(transaction=False)
        for user in users:
            pipe.hget(state_key(label, user), user)
        raw = pipe.execute() if users else []
        states = {u: v.decode() for u, v in zip(users, raw, strict=True) if v is not None}
        for user, entry in states.items():
            tie = decode(entry).tie  # type: ignore[union-attr]
            if tie:
                score = client.zscore(zset_key(label), tie + user)
                if score is not None:
                    members[user].append((tie, int(score)))
        raw_shown = client.hmget(metadata_key(label), users) if users else []
        shown = {u: v.decode() for u, v in zip(users, raw_shown, strict=True) if v is not None}
    return members, states, shown


def _check(
    report: VerifyReport, shard_map: ShardMap, moving: bool, pg: dict, contents: dict, users: list[str] | None
) -> set[str]:
    """Record problems into `report`; return the users involved."""
    bad: set[str] = set()
    placed: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for shard_id, (members, _, _) in contents.items():
        for user, entries in members.items():
            for tie, score in entries:
                placed[user].append((shard_id, tie, score))
    for shard_id, (members, _, shown) in contents.items():
        for user in sorted(set(shown) - set(members)):
            report.add("stray_display_data", f"{user}'s display data on {shard_id}, where the player is not")
            bad.add(user)
    candidates = set(pg) | set(placed) if users is None else set(users)
    for user in sorted(candidates):
        places = placed.get(user, [])
        if user not in pg:
            if places:
                report.add("unknown_player", f"{user} on {places[0][0]} (not in PostgreSQL)")
                bad.add(user)
            continue
        score, version, seq, placed_on, metadata = pg[user]
        if not places:
            report.add("missing", f"{user} (score {score}) is on no shard")
            bad.add(user)
            continue
        if len(places) > 1:
            report.add("on_several_shards", f"{user} on {', '.join(p[0] for p in places)}")
            bad.add(user)
            continue
        shard_id, tie, held = places[0]
        # PostgreSQL records where each player belongs (mid-rebalance, by the move's
        # cursor); with no move running that must also be the shard whose range holds the score.
        expected = placed_on if moving else shard_map.shard_for_score(score).id
        if shard_id != expected or (not moving and placed_on != expected):
            report.add("wrong_shard", f"{user} (score {score}) on {shard_id}, belongs on {expected}")
            bad.add(user)
        if held != score:
            report.add("wrong_score", f"{user}: shard {held}, PostgreSQL {score}")
            bad.add(user)
        if tie != tie_prefix(seq):
            report.add("wrong_tie_order", f"{user}: shard tie {tie}, PostgreSQL seq {seq}")
            bad.add(user)
        entry = contents[shard_id][1].get(user)
        if entry != encode(version, tie_prefix(seq)):
            report.add("wrong_version", f"{user}: shard state {entry!r}, PostgreSQL version {version}")
            bad.add(user)
        shown = contents[shard_id][2].get(user)
        if shown != metadata:
            report.add("wrong_display_data", f"{user}: shard {shown!r}, PostgreSQL {metadata!r}")
            bad.add(user)
    return bad


def verify_month(dsn: str, shard_map: ShardMap, month: date, **options) -> VerifyReport:
    """`verify_period` for a month of the original board."""
    return verify_period(dsn, shard_map, board_period("global", "monthly", month), **options)


def verify_period(
    dsn: str, shard_map: ShardMap, key: str, recheck_after_s: float = 3.0, moving: bool = False
) -> VerifyReport:
    """Check one board period; `shard_map` is the layout in force, `moving` whether a rebalance is mid-move."""
    label = key
    clients = {s.id: sync_client(s.address, timeout_s=60) for s in shard_map.shards}
    try:
        pg = _pg_rows(dsn, key)
        contents = {sid: _shard_contents(c, label, None) for sid, c in clients.items()}
        report = VerifyReport(label, len(pg))
        bad = _check(report, shard_map, moving, pg, contents, None)
        if bad and recheck_after_s > 0:
            # Give in-flight writes and the reconciler time to finish, then look again.
            time.sleep(recheck_after_s)
            users = sorted(bad)
            report = VerifyReport(label, len(pg))
            pg_again = _pg_rows(dsn, key, users)
            contents = {sid: _shard_contents(c, label, users) for sid, c in clients.items()}
            _check(report, shard_map, moving, pg_again, contents, users)
        for sid, client in clients.items():
            if client.exists(legacy_state_key(label)):
                # A board from before the state buckets: its players' states look
                # missing above, and what fixes that is the conversion, so name it.
                board, window, period = split_board_period(label)
                option = f"--month {period}" if (board, window) == ("global", "monthly") else f"--period {label}"
                fix = f"`shard-manager rebuild {option}`"
                report.add("old_layout", f"{sid} holds {legacy_state_key(label)}: {fix}")
        return report
    finally:
        for client in clients.values():
            client.close()
