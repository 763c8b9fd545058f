"""A synchronous client of one shard, for the operator's tools (rebalance, and any
tool that must apply states the way routers do): the same scripts and the same
protocol (router.shards.protocol) as the router's async client."""

from __future__ import annotations

from collections.abc import Sequence

from router.shards import protocol
from router.shards.connect import sync_client
from router.shards.protocol import ApplyResult, PlayerState
from router.shards.scripts import APPLY_LUA


class SyncShard:
    def __init__(self, address: str, *, timeout_s: float = 30.0) -> None:
        self.client = sync_client(address, timeout_s=timeout_s, decode_responses=True)
        self._apply = self.client.register_script(APPLY_LUA)

    def apply(self, month: str, states: Sequence[tuple[PlayerState, bool]]) -> tuple[list[ApplyResult], int]:
        """Apply (state, present) pairs in order; per state what the shard did, and its member count."""
        keys, args = protocol.apply_call(month, states)
        return protocol.apply_reply(self._apply(keys=keys, args=args))

    def close(self) -> None:
        self.client.close()
