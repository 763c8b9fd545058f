"""The shard protocol: what each script call sends and how its answer reads.

Pure functions over the key layout (router.shards.keys) and the scripts
(router.shards.scripts): the router's async client and the tools' sync client
build their calls and read their answers here, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from router.shards.keys import generation_key, metadata_key, script_keys, tie_prefix, user_of, zset_key


@dataclass(frozen=True, slots=True)
class PlayerState:
    """A player's committed state, as the shards should hold it."""

    user_id: str
    version: int
    score: int
    tie: str
    metadata: str | None = None  # the JSON object of display data, as the write carried it


def player_state(user_id: str, version: int, score: int, seq: int, metadata: str | None = None) -> PlayerState:
    """The state of a player PostgreSQL holds (its seq turned into the tie-break prefix)."""
    return PlayerState(user_id, version, score, tie_prefix(seq), metadata)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: bool
    rank_before: int  # 0-based within the shard, -1 when absent
    rank_after: int


@dataclass(frozen=True, slots=True)
class ShardCount:
    """A shard's member count for a board_period, and the generation of its sorted set
    (lua/generation.lua; "" if it was never written), read in one step."""

    size: int
    generation: str


@dataclass(frozen=True, slots=True)
class Lookup:
    version: int  # -1: the shard never saw this user
    rank: int  # 0-based within the shard, -1: not on this shard
    score: int | None
    count: ShardCount  # read in the same step
    metadata: str | None = None


def apply_call(board_period: str, states: Iterable[tuple[PlayerState, bool]]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of lua/apply.lua for (state, present) pairs, applied in order."""
    states = list(states)
    args: list[Any] = []
    for state, present in states:
        args += [state.user_id, state.version, 1 if present else 0, state.score, state.tie, state.metadata or ""]
    return script_keys(board_period, (state.user_id for state, _ in states)), args


def tombstone(user_id: str, version: int) -> tuple[PlayerState, bool]:
    """The (state, present) pair that takes a player off a shard at `version` and keeps
    any older state from coming back."""
    return PlayerState(user_id, version, 0, ""), False


def purge_call(board_period: str, users: Sequence[str]) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of lua/purge.lua: every trace of these players in the board period."""
    return script_keys(board_period, users), list(users)


def apply_reply(raw: Sequence[Any]) -> tuple[list[ApplyResult], int]:
    """Per state what the shard did, and its member count after them."""
    results = [ApplyResult(bool(raw[i]), int(raw[i + 1]), int(raw[i + 2])) for i in range(0, len(raw) - 1, 3)]
    return results, int(raw[-1])


def lookup_call(board_period: str, users: Sequence[str]) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of lua/lookup.lua: no users reads only the count and generation."""
    return script_keys(board_period, users), list(users)


def lookup_reply(raw: Sequence[Any], users: Sequence[str]) -> tuple[ShardCount, dict[str, Lookup]]:
    count = ShardCount(int(raw[0]), raw[1])
    found = {
        user: Lookup(
            int(raw[i]),
            int(raw[i + 1]),
            int(float(raw[i + 2])) if raw[i + 2] != "" else None,
            count,
            raw[i + 3] or None,
        )
        for user, i in zip(users, range(2, len(raw), 4), strict=True)
    }
    return count, found


def range_call(board_period: str, start: int, stop: int) -> tuple[list[str], list[int]]:
    """KEYS and ARGV of lua/range.lua: members at 0-based positions start..stop, highest first."""
    return [zset_key(board_period), generation_key(board_period), metadata_key(board_period)], [start, stop]


def range_reply(raw: Sequence[Any]) -> tuple[ShardCount, list[tuple[str, int, str | None]]]:
    """The shard's count, and (user, score, display data or None) of each member read."""
    generation, size, *flat = raw
    return ShardCount(int(size), generation), [
        (user_of(flat[i]), int(float(flat[i + 1])), flat[i + 2] or None) for i in range(0, len(flat), 3)
    ]
