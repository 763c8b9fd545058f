"""Global ranks over score-range shards.

Shard k holds lower scores than shard k+1, so a player's global rank is their rank
inside their shard plus the members of every shard above it; top-N reads the
highest shard first and spills downward. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from router.core.user_cache import UserShardCache
from router.errors import PlayerNotFound
from router.periods import describe
from router.shards.client import ShardClients
from router.shards.protocol import Lookup, ShardCount

# Tries at reading a page from shards that did not change since they were counted.
PAGE_READS = 6


@dataclass(frozen=True, slots=True)
class Entry:
    rank: int
    user_id: str
    score: int
    metadata: str | None = None  # the player's display data: a JSON object, as written


@dataclass(frozen=True, slots=True)
class BoardCounts:
    """Every shard's member count and generation for one board period, under one layout: what a
    page is computed from, and what a rendered page is checked against before it is
    served again (equal fingerprints: no shard's sorted set changed in between)."""

    ids: tuple[str, ...]  # the layout, lowest range first
    counts: Mapping[str, ShardCount]

    @property
    def sizes(self) -> dict[str, int]:
        return {sid: count.size for sid, count in self.counts.items()}

    @property
    def total(self) -> int:
        return sum(count.size for count in self.counts.values())

    @property
    def fingerprint(self) -> tuple[tuple[str, int, str], ...]:
        return tuple((sid, self.counts[sid].size, self.counts[sid].generation) for sid in self.ids)


@dataclass(frozen=True, slots=True)
class Standing:
    user_id: str
    score: int
    rank: int
    total_players: int
    shard_id: str
    counts: BoardCounts | None  # what the rank was computed from; None for an archived period
    metadata: str | None = None

    @property
    def percentile(self) -> float:
        """Share of players this one is level with or ahead of, in percent (rank 1 -> 100)."""
        return round(100.0 * (self.total_players - self.rank + 1) / self.total_players, 2)


@dataclass(frozen=True, slots=True)
class Page:
    counts: BoardCounts  # the shards' counts the page was read under
    entries: list[Entry]
    # False if every read found a shard changed since it was counted: the page is then
    # not known to be one moment's board, and must not be kept (ranking.RankReader._page).
    consistent: bool = True


@dataclass(frozen=True, slots=True)
class Slice:
    shard_id: str
    start: int  # 0-based positions inside the shard, inclusive
    stop: int


def global_rank(in_shard: int, above: int) -> int:
    """The board's 1-based rank of a member at 0-based position `in_shard` of its shard,
    below `above` members of the better shards: the one formula of a global rank."""
    return in_shard + 1 + above


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
            slices.append(Slice(shard_id, lo - first, hi - first - 1))
        first += size
        if first >= offset + limit:
            break
    return slices


class RankReader:
    def __init__(self, shards: ShardClients, cache: UserShardCache) -> None:
        self.shards = shards
        self.cache = cache

    @property
    def shard_ids(self) -> tuple[str, ...]:
        return self.shards.shard_map.ids

    async def standing(self, board_period: str, user_id: str) -> Standing:
        ids = self.shard_ids
        hint = self.cache.get(board_period, user_id)
        if hint in ids:
            others = [sid for sid in ids if sid != hint]
            found, *counts = await asyncio.gather(
                self.shards.lookup(hint, board_period, user_id),
                *(self.shards.count(sid, board_period) for sid in others),
            )
            if found.rank >= 0:
                read = dict(zip(others, counts, strict=True))
                return self._standing(user_id, hint, found, BoardCounts(ids, {**read, hint: found.count}))
            self.cache.forget(board_period, user_id)
        lookups = await asyncio.gather(*(self.shards.lookup(sid, board_period, user_id) for sid in ids))
        counts = BoardCounts(ids, {sid: lk.count for sid, lk in zip(ids, lookups, strict=True)})
        # Mid-move a player can briefly sit on two shards (add before remove); the
        # newer version is the one being moved to.
        present = [(lk.version, sid, lk) for sid, lk in zip(ids, lookups, strict=True) if lk.rank >= 0]
        if not present:
            raise PlayerNotFound(user_id, describe(board_period))
        _, shard_id, found = max(present)
        self.cache.put(board_period, user_id, shard_id)
        return self._standing(user_id, shard_id, found, counts)

    async def standings(self, board_period: str, user_ids: Sequence[str]) -> tuple[dict[str, Standing], int]:
        """({user_id: standing} of those listed who are on the board, players in all).

        Every shard is asked about every listed player, in one lookup call per shard (or
        two: the coalescer sends the first item alone if nothing is in flight); a player
        mid-move, on two shards, is taken from the newer copy, and ranked with the counts
        read beside their own lookups, as `standing` ranks one player."""
        ids = self.shard_ids
        users = list(dict.fromkeys(user_ids))
        per_shard = await asyncio.gather(
            *(asyncio.gather(*(self.shards.lookup(sid, board_period, user) for user in users)) for sid in ids)
        )
        out: dict[str, Standing] = {}
        total = 0
        for k, user in enumerate(users):
            lookups = {sid: per_shard[i][k] for i, sid in enumerate(ids)}
            counts = BoardCounts(ids, {sid: lk.count for sid, lk in lookups.items()})
            total = max(total, counts.total)
            present = [(lk.version, sid) for sid, lk in lookups.items() if lk.rank >= 0]
            if present:
                _, shard_id = max(present)
                self.cache.put(board_period, user, shard_id)
                out[user] = self._standing(user, shard_id, lookups[shard_id], counts)
        if not users:
            total = (await self.counts(board_period)).total
        return out, total

    def _standing(self, user_id: str, shard_id: str, found: Lookup, counts: BoardCounts) -> Standing:
        assert found.score is not None
        rank = global_rank(found.rank, players_above(counts.ids, counts.sizes, shard_id))
        return Standing(user_id, found.score, rank, counts.total, shard_id, counts, found.metadata)

    async def counts(self, board_period: str) -> BoardCounts:
        ids = self.shard_ids
        return BoardCounts(ids, await self.shards.counts(board_period, ids))

    async def top(self, board_period: str, offset: int, limit: int, counts: BoardCounts | None = None) -> Page:
        """`counts`: as read by `counts(board_period)` just before, if the caller has them."""
        return await self._page(board_period, counts or await self.counts(board_period), offset, limit)

    async def around(self, board_period: str, user_id: str, radius: int) -> Page:
        me = await self.standing(board_period, user_id)
        assert me.counts is not None
        offset = max(0, me.rank - 1 - radius)
        return await self._page(board_period, me.counts, offset, me.rank + radius - offset)

    async def _page(self, board_period: str, counts: BoardCounts, offset: int, limit: int) -> Page:
        """Global positions [offset, offset + limit), each player once, ranks consecutive.

        The member counts decide which stretch of which shard holds those positions.
        Each stretch is read with its shard's count and generation: if a shard changed
        after it was counted, the stretches are read again under the new counts (at
        most PAGE_READS times, one round trip each), so that every stretch comes from
        its shard as it was counted, all at one moment between two reads. At such a
        moment a player moving between shards is on one or both of them, never on
        neither (the add lands before the removal); if on both, the copy on the shard
        with the newer version stays and the page is filled from the entries after it.
        So a page neither lists a player twice nor skips one. Under writes so frequent
        that every read finds a shard changed, the last read is served, deduplicated:
        it may then lack a player who was moving between two shards at that moment.
        """
        want = limit
        reads_left = PAGE_READS
        while True:
            reads_left -= 1
            slices = window(counts.ids, counts.sizes, offset, want)
            reads = await asyncio.gather(
                *(self.shards.range_desc(s.shard_id, board_period, s.start, s.stop) for s in slices)
            )
            recounted = {s.shard_id: count for s, (count, _) in zip(slices, reads, strict=True)}
            changed = any(count != counts.counts[sid] for sid, count in recounted.items())
            consistent = not changed
            if changed:
                counts = BoardCounts(counts.ids, {**counts.counts, **recounted})
                if reads_left > 0:
                    continue
            rows = [
                (s.shard_id, user_id, score, metadata)
                for s, (_, members) in zip(slices, reads, strict=True)
                for user_id, score, metadata in members
            ]
            listed = len(rows)
            rows = await self._without_stale_copies(board_period, rows)
            dropped = len(rows) < listed
            if len(rows) >= limit or offset + want >= counts.total or not dropped or reads_left <= 0:
                entries = [
                    Entry(offset + 1 + i, user_id, score, metadata)
                    for i, (_, user_id, score, metadata) in enumerate(rows[:limit])
                ]
                return Page(counts, entries, consistent)
            want += limit - len(rows)

    async def _without_stale_copies(
        self, board_period: str, rows: list[tuple[str, str, int, str | None]]
    ) -> list[tuple[str, str, int, str | None]]:
        """`rows` ((shard, user, score, display data) in page order) without the older copies
        of players listed on several shards."""
        seen: dict[str, list[str]] = {}
        for shard_id, user_id, *_ in rows:
            seen.setdefault(user_id, []).append(shard_id)
        twice = {user_id: shard_ids for user_id, shard_ids in seen.items() if len(shard_ids) > 1}
        if not twice:
            return rows
        pairs = [(sid, user_id) for user_id, shard_ids in twice.items() for sid in shard_ids]
        lookups = await asyncio.gather(*(self.shards.lookup(sid, board_period, user_id) for sid, user_id in pairs))
        newest: dict[str, tuple[int, str]] = {}
        for (sid, user_id), found in zip(pairs, lookups, strict=True):
            if found.rank >= 0 and (user_id not in newest or found.version > newest[user_id][0]):
                newest[user_id] = (found.version, sid)
        # A copy whose shard no longer holds the player (the removal landed since) is
        # stale too: no lookup found it there.
        stale = {(sid, user_id) for sid, user_id in pairs if newest.get(user_id, (0, None))[1] != sid}
        return [row for row in rows if (row[0], row[1]) not in stale]
