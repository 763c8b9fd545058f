"""A synchronous client of one shard, for the operator's tools (rebalance, and any
tool that must apply states the way routers do): the same scripts and the same
protocol (router.shards.protocol) as the router's async client.

An apply that meets a shard that does not answer, or a primary that has just been
demoted, is sent again until `retry_for_s` has passed: applies are versioned, so a
repeat changes nothing, and a tool in the middle of a long job (a re-split) rides out
a Sentinel failover or a restart instead of stopping halfway."""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

from router.shards import protocol
from router.shards.connect import sync_client
from router.shards.protocol import ApplyResult, PlayerState
from router.shards.scripts import APPLY_LUA, PURGE_LUA


class SyncShard:
    def __init__(self, address: str, *, timeout_s: float = 30.0, retry_for_s: float = 60.0) -> None:
        self.client = sync_client(address, timeout_s=timeout_s, decode_responses=True)
        self.retry_for_s = retry_for_s
        self._apply = self.client.register_script(APPLY_LUA)
        self._purge = self.client.register_script(PURGE_LUA)

    def _retrying(self, call):
        give_up = time.monotonic() + self.retry_for_s
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.2)

    def apply(self, board_period: str, states: Sequence[tuple[PlayerState, bool]]) -> tuple[list[ApplyResult], int]:
        """Apply (state, present) pairs in order; per state what the shard did, and its member count."""
        keys, args = protocol.apply_call(board_period, states)
        return protocol.apply_reply(self._retrying(lambda: self._apply(keys=keys, args=args)))

    def purge(self, board_period: str, users: Sequence[str]) -> int:
        """Every trace of these players in the board period (lua/purge.lua); members removed."""
        keys, args = protocol.purge_call(board_period, users)
        return int(self._retrying(lambda: self._purge(keys=keys, args=args)))

    def close(self) -> None:
        self.client.close()
