"""Boards in PostgreSQL: the registry every router caches and the write function checks.

Blocking calls on a psycopg2 connection, used by the router (through `Store`) and by
the shard manager. Creating or changing a board is serialised by an advisory lock, so
two admins racing cannot both pass the "no scores yet" check with different orders,
and each change's updated_at (read under the lock) is later than every earlier one's:
the newest is the registry's version, which routers poll.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from datetime import UTC, datetime

from router.boards import Board, BoardSpec, Range
from router.errors import BoardClosed, BoardConflict, InvalidInput
from router.periods import FUTURE_SKEW

BOARDS_LOCK = 0x6C62_626F  # arbitrary constant: serialises board changes (lb_move_finish takes it too)


def _split(raw) -> tuple[tuple[str, int], ...] | None:
    return None if raw is None else tuple((entry["id"], entry["min_score"]) for entry in raw)


def split_json(split: tuple[tuple[str, int], ...]) -> str:
    return json.dumps([{"id": shard_id, "min_score": start} for shard_id, start in split])


def load_boards(conn) -> tuple[datetime | None, dict[str, Board]]:
    """(the registry's version, every board including closed ones)."""
    with conn.cursor() as cur:
        cur.execute("SELECT id, score_order, operator, windows, closed_at IS NOT NULL, split, updated_at FROM boards")
        rows = cur.fetchall()
    conn.commit()
    version = max((row[6] for row in rows), default=None)
    return version, {row[0]: Board(row[0], row[1], row[2], tuple(row[3]), row[4], _split(row[5])) for row in rows}


def _layout_shards(cur) -> tuple[str, ...]:
    cur.execute("SELECT shards FROM shard_layout WHERE id = 1")
    row = cur.fetchone()
    if row is None:
        raise InvalidInput("ranges", "there is no shard layout yet: start a router once first")
    return tuple(entry["id"] for entry in row[0])


def first_shard(board_id: str, shard_order: tuple[str, ...]) -> str:
    """Where a board created without ranges lives: one shard, picked by a hash of its id,
    so that thousands of small boards spread evenly over the servers with no counter to
    keep, and a board never moves unless an operator re-splits it (`apply --board`)."""
    return shard_order[zlib.crc32(board_id.encode()) % len(shard_order)]


def boards_version(conn) -> datetime | None:
    with conn.cursor() as cur:
        cur.execute("SELECT max(updated_at) FROM boards")
        (version,) = cur.fetchone()
    conn.commit()
    return version


def put_board(conn, board: Board, ranges: tuple[Range, ...] | None = None) -> tuple[Board, bool]:
    """Create the board or change it; (the board as stored, created?). Order and windows
    may not change once the board has scores (BoardConflict); a closed board stays closed.
    `ranges` (scores as the board shows them) set its split; a board with scores is
    re-split online by `shard-manager apply --board`, never here, since its players
    would have to move. Without ranges a new board lives on one shard (`first_shard`)."""
    with conn, conn.cursor() as cur:
        if ranges is not None:
            # Writers place players by the split they read under their periods' shared
            # locks: holding them here means none is placing by the old split as it changes.
            # Taken before the boards' lock, in the order lb_move_finish takes both.
            now = datetime.now(UTC)
            periods = sorted(set(board.live_board_periods(now)) | set(board.live_board_periods(now + FUTURE_SKEW)))
            for key in periods:
                cur.execute("SELECT pg_advisory_xact_lock(lb_period_lock(%s))", (key,))
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (BOARDS_LOCK,))
        cur.execute("SELECT score_order, windows, closed_at IS NOT NULL, split FROM boards WHERE id = %s", (board.id,))
        existing = cur.fetchone()
        shard_order = _layout_shards(cur) if ranges is not None or existing is None else ()
        split = None if ranges is None else board.split_of(ranges, shard_order)
        if existing is None:
            split = split or ((first_shard(board.id, shard_order), 0),)
            cur.execute(
                "INSERT INTO boards (id, score_order, operator, windows, split, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, clock_timestamp())",
                (board.id, board.order, board.operator, list(board.windows), split_json(split)),
            )
            return replace(board, split=split, closed=False), True
        order, windows, closed, stored_split = existing
        if closed:
            raise BoardClosed(board.id)
        changes_split = split is not None and split != _split(stored_split)
        if (order, tuple(windows)) != (board.order, board.windows) or changes_split:
            cur.execute("SELECT EXISTS (SELECT 1 FROM score_events WHERE board = %s)", (board.id,))
            if cur.fetchone()[0]:
                if order != board.order or tuple(windows) != board.windows:
                    field = "order" if order != board.order else "windows"
                    was = order if field == "order" else ",".join(windows)
                    raise BoardConflict(field, f"board {board.id} has scores: its {field} ({was}) cannot change")
                raise BoardConflict(
                    "ranges",
                    f"board {board.id} has scores: its players move to new ranges online with"
                    f" `shard-manager apply --board {board.id} FILE` (the file's boards entry names the ranges)",
                )
        if split is None:
            split = _split(stored_split)
        cur.execute(
            "UPDATE boards SET score_order = %s, operator = %s, windows = %s, split = %s,"
            " updated_at = clock_timestamp() WHERE id = %s",
            (board.order, board.operator, list(board.windows), None if split is None else split_json(split), board.id),
        )
        return replace(board, split=split, closed=False), False


def close_board(conn, board_id: str) -> bool:
    """Mark the board closed (it takes no more events); False if it was closed already.
    Its standings are archived by the caller (router.background.seasons.close_board_periods)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (BOARDS_LOCK,))
        cur.execute(
            "UPDATE boards SET closed_at = now(), updated_at = clock_timestamp() WHERE id = %s AND closed_at IS NULL",
            (board_id,),
        )
        return cur.rowcount == 1


def seed_boards(conn, wanted: list[BoardSpec]) -> list[str]:
    """Create the boards a config file lists that PostgreSQL does not know yet; one that
    exists is left as it is (the admin API may have changed it since: the file seeds,
    PostgreSQL is in force; `apply --board` moves one to the file's ranges). Returns what
    it did or found different, one line each."""
    notes = []
    _, known = load_boards(conn)
    for spec in wanted:
        board = spec.board
        have = known.get(board.id)
        if have is None:
            try:
                put_board(conn, board, spec.ranges)
            except InvalidInput as exc:
                notes.append(f"board {board.id} not created: {exc.field}: {exc.reason}")
                continue
            notes.append(f"created board {board.id} ({board.order}, {board.operator}, {','.join(board.windows)})")
        elif (have.order, have.operator, have.windows) != (board.order, board.operator, board.windows):
            notes.append(
                f"board {board.id} is {have.order}, {have.operator}, {','.join(have.windows)} in PostgreSQL"
                f" (the file says {board.order}, {board.operator}, {','.join(board.windows)}): kept as it is;"
                f" change it with PUT /v1/admin/boards/{board.id}"
            )
        elif spec.ranges is not None and not have.closed:
            with conn.cursor() as cur:
                shard_order = _layout_shards(cur)
            conn.commit()
            try:
                differs = have.split != have.split_of(spec.ranges, shard_order)
            except InvalidInput as exc:
                notes.append(f"board {board.id}: the file's {exc.field} cannot be used: {exc.reason}")
                continue
            if differs:
                notes.append(
                    f"board {board.id}'s ranges in PostgreSQL differ from the file's: kept as they are;"
                    f" `shard-manager apply --board {board.id} FILE` moves it to the file's"
                )
    return notes
