"""Global ranks over score-range shards.

Shard k holds lower scores than shard k+1, so a player's global rank is their rank
inside their shard plus the members of every shard above it; top-N reads the
highest shard first and spills downward. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.errors import PlayerNotFound
from router.members import user_of
from router.shard_clients import Lookup, ShardClients
from router.user_cache import UserShardCache


@dataclass(frozen=True, slots=True)
class Entry:
    rank: int
    user_id: str
    score: int


@dataclass(frozen=True, slots=True)
class Standing:
    user_id: str
    score: int
    rank: int
    total_players: int
    shard_id: str
    sizes: Mapping[str, int]
    shard_order: tuple[str, ...] = ()  # the layout the sizes were read under, lowest range first

    @property
    def percentile(self) -> float:
        """Share of players this one is level with or ahead of, in percent (rank 1 -> 100)."""
        return round(100.0 * (self.total_players - self.rank + 1) / self.total_players, 2)


@dataclass(frozen=True, slots=True)
class Slice:
    shard_id: str
    start: int  # 0-based positions inside the shard, inclusive
    stop: int
    first_rank: int  # global rank of the member at `start`


def players_above(shard_ids: Sequence[str], sizes: Mapping[str, int], shard_id: str) -> int:
    """Members of every shard above `shard_id` (shards are listed lowest range first)."""
    k = shard_ids.index(shard_id)
    return sum(sizes[sid] for sid in shard_ids[k + 1 :])


def window(shard_ids: Sequence[str], sizes: Mapping[str, int], offset: int, limit: int) -> list[Slice]:
    """Which shard positions hold global positions [offset, offset + limit)."""
    slices = []
    first = 0  # global 0-based position of the current shard's top member
    for shard_id in reversed(shard_ids):
        size = sizes[shard_id]
        lo = max(offset, first)
        hi = min(offset + limit, first + size)
        if lo < hi:
            slices.append(Slice(shard_id, lo - first, hi - first - 1, lo + 1))
        first += size
        if first >= offset + limit:
            break
    return slices


class Board:
    def __init__(self, shards: ShardClients, cache: UserShardCache) -> None:
        self.shards = shards
        self.cache = cache

    @property
    def shard_ids(self) -> tuple[str, ...]:
        return self.shards.shard_map.ids

    async def standing(self, month: str, user_id: str) -> Standing:
        ids = self.shard_ids
        hint = self.cache.get(month, user_id)
        if hint in ids:
            others = [sid for sid in ids if sid != hint]
            found, *counts = await asyncio.gather(
                self.shards.lookup(hint, month, user_id), *(self.shards.size(sid, month) for sid in others)
            )
            if found.rank >= 0:
                sizes = dict(zip(others, counts, strict=True))
                return self._standing(ids, user_id, hint, found, {**sizes, hint: found.size})
            self.cache.forget(month, user_id)
        lookups = await asyncio.gather(*(self.shards.lookup(sid, month, user_id) for sid in ids))
        sizes = {sid: lk.size for sid, lk in zip(ids, lookups, strict=True)}
        # Mid-move a player can briefly sit on two shards (add before remove); the
        # newer version is the one being moved to.
        present = [(lk.version, sid, lk) for sid, lk in zip(ids, lookups, strict=True) if lk.rank >= 0]
        if not present:
            raise PlayerNotFound(user_id, month)
        _, shard_id, found = max(present)
        self.cache.put(month, user_id, shard_id)
        return self._standing(ids, user_id, shard_id, found, sizes)

    def _standing(
        self, ids: Sequence[str], user_id: str, shard_id: str, found: Lookup, sizes: Mapping[str, int]
    ) -> Standing:
        assert found.score is not None
        rank = found.rank + 1 + players_above(ids, sizes, shard_id)
        return Standing(user_id, found.score, rank, sum(sizes.values()), shard_id, sizes, tuple(ids))

    async def top(self, month: str, offset: int, limit: int) -> tuple[int, list[Entry]]:
        ids = self.shard_ids
        sizes = await self.shards.sizes(month, ids)
        return sum(sizes.values()), await self._entries(month, ids, sizes, offset, limit)

    async def around(self, month: str, user_id: str, radius: int) -> tuple[int, list[Entry]]:
        me = await self.standing(month, user_id)
        offset = max(0, me.rank - 1 - radius)
        limit = me.rank - 1 + radius + 1 - offset
        return me.total_players, await self._entries(month, me.shard_order, me.sizes, offset, limit)

    async def _entries(
        self, month: str, ids: Sequence[str], sizes: Mapping[str, int], offset: int, limit: int
    ) -> list[Entry]:
        slices = window(ids, sizes, offset, limit)
        ranges = await asyncio.gather(*(self.shards.range_desc(s.shard_id, month, s.start, s.stop) for s in slices))
        entries = []
        for s, members in zip(slices, ranges, strict=True):
            entries += [Entry(s.first_rank + i, user_of(member), score) for i, (member, score) in enumerate(members)]
        return entries
