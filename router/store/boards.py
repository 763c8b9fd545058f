"""Boards in PostgreSQL: the registry every router caches and the write function checks.

Blocking calls on a psycopg2 connection, used by the router (through `Store`) and by
the shard manager. Creating or changing a board is serialised by an advisory lock, so
two admins racing cannot both pass the "no scores yet" check with different orders,
and each change's updated_at (read under the lock) is later than every earlier one's:
the newest is the registry's version, which routers poll.
"""

from __future__ import annotations

from datetime import datetime

from router.boards import Board
from router.errors import BoardClosed, BoardConflict

_BOARDS_LOCK = 0x6C62_626F  # arbitrary constant: serialises board changes


def load_boards(conn) -> tuple[datetime | None, dict[str, Board]]:
    """(the registry's version, every board including closed ones)."""
    with conn.cursor() as cur:
        cur.execute("SELECT id, score_order, operator, windows, closed_at IS NOT NULL, updated_at FROM boards")
        rows = cur.fetchall()
    conn.commit()
    version = max((row[5] for row in rows), default=None)
    return version, {row[0]: Board(row[0], row[1], row[2], tuple(row[3]), row[4]) for row in rows}


def boards_version(conn) -> datetime | None:
    with conn.cursor() as cur:
        cur.execute("SELECT max(updated_at) FROM boards")
        (version,) = cur.fetchone()
    conn.commit()
    return version


def put_board(conn, board: Board) -> tuple[Board, bool]:
    """Create the board or change it; (the board as stored, created?). Order and windows
    may not change once the board has scores (BoardConflict); a closed board stays closed."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_BOARDS_LOCK,))
        cur.execute("SELECT score_order, windows, closed_at IS NOT NULL FROM boards WHERE id = %s", (board.id,))
        existing = cur.fetchone()
        if existing is None:
            cur.execute(
                "INSERT INTO boards (id, score_order, operator, windows, updated_at)"
                " VALUES (%s, %s, %s, %s, clock_timestamp())",
                (board.id, board.order, board.operator, list(board.windows)),
            )
            return board, True
        order, windows, closed = existing
        if closed:
            raise BoardClosed(board.id)
        if (order, tuple(windows)) != (board.order, board.windows):
            cur.execute("SELECT EXISTS (SELECT 1 FROM score_events WHERE board = %s)", (board.id,))
            if cur.fetchone()[0]:
                field = "order" if order != board.order else "windows"
                was = order if field == "order" else ",".join(windows)
                raise BoardConflict(field, f"board {board.id} has scores: its {field} ({was}) cannot change")
        cur.execute(
            "UPDATE boards SET score_order = %s, operator = %s, windows = %s, updated_at = clock_timestamp()"
            " WHERE id = %s",
            (board.order, board.operator, list(board.windows), board.id),
        )
        return board, False


def close_board(conn, board_id: str) -> bool:
    """Mark the board closed (it takes no more events); False if it was closed already.
    Its standings are archived by the caller (router.background.seasons.close_board_periods)."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_BOARDS_LOCK,))
        cur.execute(
            "UPDATE boards SET closed_at = now(), updated_at = clock_timestamp() WHERE id = %s AND closed_at IS NULL",
            (board_id,),
        )
        return cur.rowcount == 1


def seed_boards(conn, wanted: list[Board]) -> list[str]:
    """Create the boards a config file lists that PostgreSQL does not know yet; one that
    exists is left as it is (the admin API may have changed it since: the file seeds,
    PostgreSQL is in force). Returns what it did or found different, one line each."""
    notes = []
    _, known = load_boards(conn)
    for board in wanted:
        have = known.get(board.id)
        if have is None:
            put_board(conn, board)
            notes.append(f"created board {board.id} ({board.order}, {board.operator}, {','.join(board.windows)})")
        elif (have.order, have.operator, have.windows) != (board.order, board.operator, board.windows):
            notes.append(
                f"board {board.id} is {have.order}, {have.operator}, {','.join(have.windows)} in PostgreSQL"
                f" (the file says {board.order}, {board.operator}, {','.join(board.windows)}): kept as it is;"
                f" change it with PUT /v1/admin/boards/{board.id}"
            )
    return notes
