"""The router's user -> shard cache: a hint, never the truth.

A hit saves asking every shard where a player is; the shard's answer is always
checked, and a wrong hint is dropped and the player looked up everywhere, the way
a cluster client treats a stale slot map.
"""

from __future__ import annotations

from collections import OrderedDict


class UserShardCache:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], str] = OrderedDict()

    def get(self, board_period: str, user_id: str) -> str | None:
        key = (board_period, user_id)
        shard_id = self._entries.get(key)
        if shard_id is not None:
            self._entries.move_to_end(key)
        return shard_id

    def put(self, board_period: str, user_id: str, shard_id: str) -> None:
        if self._capacity <= 0:
            return
        key = (board_period, user_id)
        self._entries[key] = shard_id
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, board_period: str, user_id: str) -> None:
        self._entries.pop((board_period, user_id), None)
