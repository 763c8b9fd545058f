"""The shard protocol as both clients speak it, on a real shard: the tools' sync client
and the router's async client send the same calls and read the same answers."""

from __future__ import annotations

import asyncio

from router.shards.client import ShardClients
from router.shards.keys import state_key
from router.shards.protocol import apply_call, player_state
from router.shards.state import decode
from router.shards.sync_client import SyncShard
from tests.cluster import Cluster

MONTH = "2026-12"


def test_a_state_applied_by_the_sync_client_reads_back_through_the_async_one(board: Cluster):
    tool = SyncShard(board.shard_map.by_id("s1").address)
    try:
        results, count = tool.apply(
            MONTH, [(player_state("ann", 3, 500, 7), True), (player_state("bob", 1, 700, 8), True)]
        )
        assert [r.applied for r in results] == [True, True] and count == 2
        # An older version is refused, whichever client sends it.
        (stale,), _ = tool.apply(MONTH, [(player_state("ann", 2, 900, 9), True)])
        assert not stale.applied
    finally:
        tool.close()

    async def read():
        shards = ShardClients(board.shard_map, read_deadline_s=2, write_deadline_s=2)
        try:
            ann = await shards.lookup("s1", MONTH, "ann")
            (tombstone,), size = await shards.apply("s1", MONTH, [(player_state("bob", 2, 700, 8), False)])
            return ann, tombstone, size, await shards.states("s1", MONTH, ["bob"])
        finally:
            await shards.close()

    ann, tombstone, size, (bob_entry,) = asyncio.run(read())
    assert (ann.version, ann.rank, ann.score, ann.count.size) == (3, 1, 500, 2)  # bob (700) is above
    assert tombstone.applied and tombstone.rank_after == -1 and size == 1
    assert decode(bob_entry).version == 2 and not decode(bob_entry).on_board


def test_an_apply_call_names_each_players_state_hash_after_the_set_generation_and_display_data():
    keys, args = apply_call(MONTH, [(player_state("ann", 3, 500, 7), True)])
    assert keys[:3] == [f"lb:{MONTH}:z", f"lb:{MONTH}:g", f"lb:{MONTH}:m"] and keys[3].startswith(f"lb:{MONTH}:v:")
    assert args[:4] == ["ann", 3, 1, 500] and args[5] == ""
    # Each player's hash is the one state_key names, on the original board and any other.
    for board_period in (MONTH, "cup:daily:2026-12-07"):
        users = [f"player-{n}" for n in range(50)]
        keys, _ = apply_call(board_period, [(player_state(user, 1, 10, 1), True) for user in users])
        assert keys[3:] == [state_key(board_period, user) for user in users]
        assert len(set(keys[3:])) > 40  # spread over the buckets


def test_display_data_goes_with_the_state_and_leaves_with_it(board: Cluster):
    async def run():
        shards = ShardClients(board.shard_map, read_deadline_s=2, write_deadline_s=2)
        try:
            await shards.apply("s1", MONTH, [(player_state("ann", 1, 500, 7, '{"n":"Ann"}'), True)])
            shown = (await shards.lookup("s1", MONTH, "ann")).metadata
            _, page = await shards.range_desc("s1", MONTH, 0, 0)
            # A newer state without display data drops it; a tombstone leaves nothing.
            await shards.apply("s1", MONTH, [(player_state("ann", 2, 500, 7), True)])
            dropped = (await shards.lookup("s1", MONTH, "ann")).metadata
            await shards.apply("s1", MONTH, [(player_state("ann", 3, 500, 7, '{"n":"A"}'), True)])
            await shards.apply("s1", MONTH, [(player_state("ann", 4, 500, 7), False)])
            return shown, page, dropped
        finally:
            await shards.close()

    shown, page, dropped = asyncio.run(run())
    assert shown == '{"n":"Ann"}' and page == [("ann", 500, '{"n":"Ann"}')] and dropped is None
    assert board.redis(1).hgetall(f"lb:{MONTH}:m") == {}
    tool = SyncShard(board.shard_map.by_id("s1").address)
    try:
        tool.apply(MONTH, [(player_state("bob", 1, 9, 8, '{"n":"Bob"}'), True)])
        assert tool.purge(MONTH, ["bob"]) == 1
    finally:
        tool.close()
    assert board.redis(1).hgetall(f"lb:{MONTH}:m") == {} and board.redis(1).zcard(f"lb:{MONTH}:z") == 0
