"""A player's entry in a shard's state hash (keys.state_key), its one Python definition.

"version:tie" while the player is on this shard's board (tie: their member's prefix,
keys.tie_prefix), "version" alone — a tombstone — once they left it at that version.
The Lua scripts (lua/apply.lua, lua/lookup.lua) read and write the same format inside
Redis; everything in Python goes through `encode` and `decode`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StateEntry:
    version: int
    tie: str | None  # None: a tombstone

    @property
    def on_board(self) -> bool:
        return self.tie is not None


def encode(version: int, tie: str | None) -> str:
    return f"{version}:{tie}" if tie is not None else str(version)


def decode(entry: str | None) -> StateEntry | None:
    """None when the shard never saw the player."""
    if entry is None:
        return None
    version, sep, tie = entry.partition(":")
    return StateEntry(int(version), tie if sep and tie else None)
