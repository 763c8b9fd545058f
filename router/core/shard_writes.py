"""Step 2 of the write path: a committed group's player states onto the shards.

States, not deltas: the add on each player's (new) shard first, then the removal
from the old one — on two shards is fixable (the newer version wins, the reconciler
removes the other), on none is not. Ranks for the answers come from the in-shard
ranks the applies return plus the member counts of the shards above, read in the
same round trips.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from router.core.ranking import global_rank, players_above
from router.core.user_cache import UserShardCache
from router.errors import ShardUnavailable
from router.events import EventRow, PlayerRow, ScoreEvent
from router.metrics import PLAYERS_MOVED
from router.shards.client import ShardClients
from router.shards.protocol import ApplyResult, PlayerState, player_state

_Results = dict[tuple[str, str], "tuple[list[ApplyResult], int] | ShardUnavailable"]


@dataclass
class WriteOutcome:
    event: ScoreEvent
    row: EventRow
    rank: int | None = None
    previous_rank: int | None = None
    unavailable: ShardUnavailable | None = None


@dataclass(eq=False)  # identity: players are dict keys within one group
class _Player:
    """One player's part of a group: where they were before it, where they are after."""

    board_period: str
    user_id: str
    prev_shard: str | None
    row: EventRow
    outcomes: list[WriteOutcome] = field(default_factory=list)
    add_index: int = 0
    removal_index: dict[str, int] = field(default_factory=dict)

    @property
    def target(self) -> str:
        assert self.row.shard is not None
        return self.row.shard

    @property
    def state(self) -> PlayerState:
        assert self.row.version is not None and self.row.seq is not None and self.row.score is not None
        return player_state(self.user_id, self.row.version, self.row.score, self.row.seq, self.row.metadata)


def _players_above(
    sizes_read: _Results, lowest: dict[str, int], ids: tuple[str, ...]
) -> dict[str, dict[str, int] | None]:
    """Per board period, the members of every shard above each shard from the period's lowest
    one the group touches (`lowest`, an index into `ids`), from the sizes the applies
    returned (read after the group's changes); None if one of those shards failed."""
    out: dict[str, dict[str, int] | None] = {}
    for board_period, low in lowest.items():
        sizes: dict[str, int] = {}
        for sid in ids[low + 1 :]:
            result = sizes_read[(board_period, sid)]
            if isinstance(result, ShardUnavailable):
                out[board_period] = None
                break
            sizes[sid] = result[1]
        else:
            out[board_period] = {sid: players_above(ids, sizes, sid) for sid in ids[low:]}
    return out


class ShardWriter:
    def __init__(self, shards: ShardClients, cache: UserShardCache) -> None:
        self.shards = shards
        self.cache = cache

    async def apply(self, outcomes: Sequence[WriteOutcome]) -> bool:
        """Puts the group's states on the shards; True if every one of them landed."""
        players: dict[tuple[str, str], _Player] = {}
        for outcome in outcomes:
            row = outcome.row
            if row.version is None or row.shard is None:
                continue  # refused before the player had any score: nothing to show
            key = (row.board_period, outcome.event.user_id)
            player = players.get(key)
            if player is None:
                player = players[key] = _Player(key[0], key[1], row.prev_shard, row)
            elif row.version >= (player.row.version or 0):
                player.row = row
            player.outcomes.append(outcome)
        if not players:
            return True
        # One layout for the whole group, even if the watcher switches mid-way.
        ids = self.shards.shard_map.ids

        adds: dict[tuple[str, str], list[_Player]] = defaultdict(list)
        for player in players.values():
            group = adds[(player.board_period, player.target)]
            player.add_index = len(group)
            group.append(player)
        # Where each player must also be removed from: their old shard, and the shard
        # our cache last saw them on, if different.
        stale = {
            player: sorted(
                {player.prev_shard, self.cache.get(player.board_period, player.user_id)} - {None, player.target}
            )
            for player in players.values()
        }
        # A rank counts the members of the shards above the player's, so only the
        # shards above the lowest one a player of the group is (or was) on are read:
        # a group on the top shard reads no other shard at all. (A board period whose players
        # all went to a shard this process has not heard of has no entry: no ranks.)
        lowest: dict[str, int] = {}
        for player in players.values():
            for sid in (player.target, player.prev_shard):
                if sid in ids:
                    k = ids.index(sid)
                    lowest[player.board_period] = min(k, lowest.get(player.board_period, k))
        sized = [(board_period, sid) for board_period, low in lowest.items() for sid in ids[low + 1 :]]
        add_work = {key: [(p.state, True) for p in g] for key, g in adds.items()}

        if not any(stale.values()):
            # Nobody changed shard (the common case): one round trip per shard, the
            # adds on their shards and the sizes above them, all at once.
            done = await self._run_applies({**dict.fromkeys(sized, []), **add_work})
            above = _players_above(done, lowest, ids)
            # A list, not a generator: every player is settled, even after one that failed.
            return all(
                [self._settle(player, done, done, ids, above.get(player.board_period)) for player in players.values()]
            )

        # Phase 1: the add on each player's (new) shard, and the sizes of the shards
        # above that the group changes nowhere (nothing later changes them either).
        may_lose = {(player.board_period, sid) for player, shard_ids in stale.items() for sid in shard_ids}
        untouched = [key for key in sized if key not in add_work and key not in may_lose]
        added = await self._run_applies({**dict.fromkeys(untouched, []), **add_work})
        # Phase 2: the removals, never before the add landed (on two shards is fixable,
        # on none is not). A rank needs each shard's size after the group's last change
        # there: a shard's own removal call returns it; a shard phase 1 changed or read,
        # and phase 2 does not touch, already has it.
        removals: dict[tuple[str, str], list[_Player]] = defaultdict(list)
        for player, shard_ids in stale.items():
            if isinstance(added[(player.board_period, player.target)], ShardUnavailable):
                continue
            for shard_id in shard_ids:
                if shard_id in ids:
                    group = removals[(player.board_period, shard_id)]
                    player.removal_index[shard_id] = len(group)
                    group.append(player)
        unread = [key for key in sized if key not in removals and key not in added]
        removed = await self._run_applies(
            {
                **dict.fromkeys(unread, []),
                **{key: [(p.state, False) for p in group] for key, group in removals.items()},
            }
        )
        above = _players_above({**added, **removed}, lowest, ids)
        return all(
            [self._settle(player, added, removed, ids, above.get(player.board_period)) for player in players.values()]
        )

    def _settle(
        self, player: _Player, added: _Results, removed: _Results, ids: tuple[str, ...], above: dict[str, int] | None
    ) -> bool:
        """Record what the shards did for one player (cache, ranks); False if a shard failed them."""
        board_period, target = player.board_period, player.target
        touched = [(board_period, target)] + [(board_period, sid) for sid in player.removal_index]
        for key in touched:
            failure = added.get(key) if key[1] == target else removed.get(key)
            if isinstance(failure, ShardUnavailable):
                for outcome in player.outcomes:
                    outcome.unavailable = failure
                return False
        self.cache.put(board_period, player.user_id, target)
        if player.prev_shard is not None and player.prev_shard != target:
            PLAYERS_MOVED.inc()

        if above is None:
            return True  # the write is done; a rank needs every shard's size
        add_result = added[(board_period, target)]
        assert not isinstance(add_result, ShardUnavailable)
        mine = add_result[0][player.add_index]
        rank = global_rank(mine.rank_after, above[target])
        previous_rank = None
        prev = player.prev_shard
        if player.row.prev_score is not None and prev in ids:
            if prev == target:
                before = mine.rank_before
            else:
                prev_result = removed[(board_period, prev)]
                assert not isinstance(prev_result, ShardUnavailable)
                before = prev_result[0][player.removal_index[prev]].rank_before
            if before >= 0:
                # Sizes are read after the move: a player who moved up is now counted
                # above their old shard, where they were not before.
                moved_up = ids.index(target) > ids.index(prev)
                previous_rank = global_rank(before, above[prev] - int(moved_up))
        for outcome in player.outcomes:
            outcome.rank = rank
            outcome.previous_rank = previous_rank
        return True

    async def _run_applies(self, work: dict[tuple[str, str], list[tuple[PlayerState, bool]]]) -> _Results:
        keys = list(work)

        async def one(board_period: str, shard_id: str, states: list[tuple[PlayerState, bool]]):
            if states:
                return await self.shards.apply(shard_id, board_period, states)
            return [], await self.shards.size(shard_id, board_period)

        results = await asyncio.gather(
            *(one(board_period, sid, work[(board_period, sid)]) for board_period, sid in keys), return_exceptions=True
        )
        out: _Results = {}
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, ShardUnavailable):
                out[key] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                out[key] = result
        return out


async def put_committed(
    shards: ShardClients, cache: UserShardCache, rows: Sequence[PlayerRow]
) -> tuple[list[PlayerRow], set[str]]:
    """Committed states (as PostgreSQL holds them) onto the shards, add before remove: each
    on its own shard, then a tombstone at the same version on every other shard, even one
    that never held the player (a slow router's older add arriving later must find a newer
    version there). Returns the rows now in place everywhere, and the shards that failed.
    For the reconciler's repairs and for players an admin shows again."""
    ids = shards.shard_map.ids
    in_place: list[PlayerRow] = []
    failed: set[str] = set()
    by_period: dict[str, list[PlayerRow]] = defaultdict(list)
    for row in rows:
        by_period[row.board_period].append(row)
    for board_period, period_rows in by_period.items():
        states = {r.user_id: player_state(r.user_id, r.version, r.score, r.seq, r.metadata) for r in period_rows}
        targets: dict[str, list[PlayerRow]] = defaultdict(list)
        for row in period_rows:
            targets[row.shard].append(row)
        added = await asyncio.gather(
            *(shards.apply(sid, board_period, [(states[r.user_id], True) for r in rs]) for sid, rs in targets.items()),
            return_exceptions=True,
        )
        landed = []
        for (sid, rs), result in zip(targets.items(), added, strict=True):
            if isinstance(result, BaseException):
                failed.add(sid)
            else:
                landed += rs
        removals = {sid: [(states[r.user_id], False) for r in landed if r.shard != sid] for sid in ids}
        removals = {sid: work for sid, work in removals.items() if work}
        removed = await asyncio.gather(
            *(shards.apply(sid, board_period, work) for sid, work in removals.items()), return_exceptions=True
        )
        not_removed = {sid for sid, result in zip(removals, removed, strict=True) if isinstance(result, BaseException)}
        failed |= not_removed
        for row in landed:
            # In place once every other shard holds its tombstone.
            if not_removed <= {row.shard}:
                cache.put(board_period, row.user_id, row.shard)
                in_place.append(row)
    return in_place, failed
