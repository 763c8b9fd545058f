"""How a player is stored in a shard's sorted set.

The sorted-set score is the raw integer score (exact up to 2^53). Ties must order
by who reached the score first, i.e. by the smaller `seq`. ZREVRANGE orders equal
scores by member in reverse byte order, so the member starts with a fixed-width
*inverted* seq: a smaller seq gives a larger prefix and sorts first. Packing the
seq into the double score instead would lose precision long before 2^53.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

TIE_WIDTH = 12
SEQ_LIMIT = 16**TIE_WIDTH - 1


def tie_prefix(seq: int) -> str:
    if not 0 < seq <= SEQ_LIMIT:
        raise ValueError(f"seq {seq} outside (0, {SEQ_LIMIT}]")
    return format(SEQ_LIMIT - seq, f"0{TIE_WIDTH}x")


def member(seq: int, user_id: str) -> str:
    return tie_prefix(seq) + user_id


def user_of(member_name: str) -> str:
    return member_name[TIE_WIDTH:]


def redis_prefix(board_period: str) -> str:
    """Where a board period's keys live on a shard. The original board's months keep
    the names they had before there were boards (`lb:2026-11:…`), so a cluster
    upgraded in place needs no rebuild; every other board period is `lb:<board
    period>:…` (which cannot collide: it has three parts, a month has one)."""
    if board_period.startswith(LEGACY_BOARD_WINDOW):
        return "lb:" + board_period[len(LEGACY_BOARD_WINDOW) :]
    return "lb:" + board_period


LEGACY_BOARD_WINDOW = "global:monthly:"


def zset_key(board_period: str) -> str:
    return f"{redis_prefix(board_period)}:z"


def generation_key(board_period: str) -> str:
    """Changes with every change to the board period's sorted set on a shard (lua/generation.lua)."""
    return f"{redis_prefix(board_period)}:g"


# A player's state lives in one of STATE_BUCKETS small hashes per board period and shard,
# chosen by a CRC of the user id, instead of one big hash. Redis keeps a hash of up to
# hash-max-ziplist-entries (512 by default) short fields as one packed array: about 16
# bytes an entry, against about 83 for an entry of a hash table (entry, field and
# value each allocated on their own). 4096 buckets stay packed up to 2M entries per
# shard and board period (players plus tombstones); past that, full buckets turn into hash
# tables one by one: correct, only no smaller. Changing the count moves every player's
# bucket, so it takes a rebuild of every board period.
STATE_BUCKETS = 4096


def user_bucket(user_id: str, buckets: int) -> int:
    """Which of `buckets` small hashes keeps this user's entry: a CRC, the same in every
    router process and release (Python's hash() is not). Players' states and the rate
    limiter's hourly counters are both spread this way, to stay packed."""
    return zlib.crc32(user_id.encode()) % buckets


def state_bucket(user_id: str) -> int:
    return user_bucket(user_id, STATE_BUCKETS)


def state_keys(board_period: str) -> list[str]:
    """Every state hash a board period can have on a shard, by bucket (most exist once it has players)."""
    prefix = legacy_state_key(board_period)
    return [_state_hash(prefix, bucket) for bucket in range(STATE_BUCKETS)]


def state_key(board_period: str, user_id: str) -> str:
    """The hash holding this player's entry: user_id -> "version:tie" (on the board)
    or "version" (a tombstone: the player left this shard at that version)."""
    return _state_hash(legacy_state_key(board_period), state_bucket(user_id))


def _state_hash(prefix: str, bucket: int) -> str:
    """A bucket's state hash, under its board period's `legacy_state_key`."""
    return f"{prefix}:{bucket}"


def legacy_state_key(board_period: str) -> str:
    """The single state hash per month of boards written before the buckets (and the
    prefix of the buckets' names)."""
    return f"{redis_prefix(board_period)}:v"


LEGACY_STATE_PATTERN = "lb:[0-9][0-9][0-9][0-9]-[0-9][0-9]:v"


def month_of_legacy_key(key: str) -> str:
    """'YYYY-MM' of a key LEGACY_STATE_PATTERN matched."""
    return key.split(":")[1]


def metadata_key(board_period: str) -> str:
    """The hash of players' display data on a shard: user_id -> the JSON object their
    last write carried, for the players on this shard that have one. One hash per
    board period (not buckets, as for the states): a page read names it among its KEYS
    without knowing which players it will find, and values of up to 256 bytes would
    not stay packed in small hashes anyway."""
    return f"{redis_prefix(board_period)}:m"


def script_keys(board_period: str, user_ids: Iterable[str]) -> list[str]:
    """KEYS for the apply, lookup and purge scripts: the sorted set, the generation, the
    display data, then each user's state hash."""
    # state_key's prefix once per call, not once per player: a group's apply names dozens.
    prefix = legacy_state_key(board_period)
    return [
        zset_key(board_period),
        generation_key(board_period),
        metadata_key(board_period),
        *(_state_hash(prefix, state_bucket(user)) for user in user_ids),
    ]


# Self-healing (router/background/self_healing.py). The marker names the server run (Redis's
# run_id) whose contents were last known to match PostgreSQL: a restarted server has
# a new run_id, and an emptied one (FLUSHALL, a replacement, a lost disk) has no
# marker at all. The lease keeps several routers from repairing a shard at once; the
# progress lets a router that takes over resume where the previous one stopped.
SHARD_MARKER_KEY = "lb:shard:marker"
REPAIR_LEASE_KEY = "lb:shard:repair"
REPAIR_PROGRESS_KEY = "lb:shard:repair:progress"
