"""The live shard layout in PostgreSQL: what routers and the write function place players by.

A shard map file is the operator's wish; the layout is what is in force. It is
created from the file on first start, and afterwards changed only by
`shard-manager apply`, each change with a new epoch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg2

from router.boards import Board
from router.shardmap import ShardMap


@dataclass(frozen=True)
class Layout:
    shard_map: ShardMap
    move: dict[str, Any] | None
    target: dict[str, Any] | None

    @property
    def epoch(self) -> int:
        return self.shard_map.epoch

    def placement(self, board: Board) -> ShardMap:
        """Where the board's players belong: its split over the layout's shards (or the
        layout's own split, for a board without one)."""
        return self.shard_map.over_split(board.split)

    def moving(self, board: Board) -> bool:
        """Whether the running move (if any) re-splits this board."""
        return self.move is not None and board.resplit_by(self.move.get("board"))


def shards_json(shard_map: ShardMap) -> str:
    return json.dumps([{"id": i, "address": a, "min_score": b} for i, a, b in shard_map.bounds()])


def _from_row(epoch: int, shards: list[dict], move: Any, target: Any) -> Layout:
    shard_map = ShardMap.from_bounds(epoch, [(s["id"], s["address"], s["min_score"]) for s in shards])
    return Layout(shard_map, move, target)


def load_layout(conn) -> Layout | None:
    with conn.cursor() as cur:
        cur.execute("SELECT epoch, shards, move, target FROM shard_layout WHERE id = 1")
        row = cur.fetchone()
    conn.commit()
    return None if row is None else _from_row(*row)


def ensure_layout(dsn: str, initial: ShardMap) -> Layout:
    """The layout in force; created from `initial` (the shard map file) if there is none yet."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO shard_layout (id, epoch, shards) VALUES (1, %s, %s) ON CONFLICT (id) DO NOTHING",
                (initial.epoch, shards_json(initial)),
            )
        layout = load_layout(conn)
        assert layout is not None
        return layout
    finally:
        conn.close()


def read_layout(dsn: str) -> Layout | None:
    conn = psycopg2.connect(dsn)
    try:
        return load_layout(conn)
    finally:
        conn.close()
