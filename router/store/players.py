"""Admin actions on players in PostgreSQL: hide, unhide, remove an entry, erase; and
the audit of every such action (`admin_audit`).

Blocking calls on a psycopg2 connection, used by the router (through `Store`) and by
the shard manager. Each action is one transaction that holds the player's lock
(`lb_player_lock`) exclusively, which every group of events holds shared: an event
commits either before the action (which then sees its rows) or after it (and is
judged by it: a hidden or erased player's events are refused). Periods are locked
shared first, in the order writers take them, so archiving a period waits for an
action on it and the other way round.

The shards' side of an action is returned as `Cleanup` (tombstones, or purges for an
erasure) and recorded in `redis_cleanup` in the same transaction: the caller does it
at once and the reconciler does it again after its settle time, then deletes the row.
A restored player (unhide) goes through the ordinary outbox, like any write.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

from router.errors import BoardNotFound, InvalidInput, PlayerNotHidden
from router.events import PlayerRow

EVERY_BOARD = "*"  # hidden_players.board for a player hidden on every board


def user_hash(user_id: str) -> str:
    """What an erasure keeps of the id (the same as SQL lb_user_hash)."""
    return hashlib.sha256(user_id.encode()).hexdigest()


@dataclass(frozen=True)
class Cleanup:
    """Shard work of one action: per (board period, user) a tombstone at `version`
    on every shard, or with `purge` no trace at all."""

    id: int | None
    entries: list[tuple[str, str, int]] = field(default_factory=list)
    purge: bool = False


@dataclass(frozen=True)
class ActionResult:
    action: str
    user_id: str
    board: str | None
    changed: bool
    detail: dict
    cleanup: Cleanup | None = None
    restored: list[PlayerRow] = field(default_factory=list)
    outbox_id: int | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    who: str
    action: str
    board: str | None
    subject: str
    detail: dict
    reason: str


def _board_of(board_period: str) -> str:
    return board_period.split(":", 1)[0]


def _lock(cur, user_id: str, board_periods) -> None:
    for key in sorted(set(board_periods)):
        cur.execute("SELECT pg_advisory_xact_lock_shared(lb_period_lock(%s))", (key,))
    cur.execute("SELECT pg_advisory_xact_lock(lb_player_lock(%s))", (user_id,))


def _lock_periods_of(cur, user_id: str, sql: str, params: tuple) -> list[str]:
    """The player's periods that `sql` lists, locked with the player; read again under
    the locks (a period can only appear before the player's lock is ours)."""
    cur.execute(sql, params)
    before = {row[0] for row in cur.fetchall()}
    _lock(cur, user_id, before)
    cur.execute(sql, params)
    now = {row[0] for row in cur.fetchall()}
    for key in sorted(now - before):
        cur.execute("SELECT pg_advisory_xact_lock_shared(lb_period_lock(%s))", (key,))
    return sorted(now)


def _require_board(cur, board: str) -> None:
    cur.execute("SELECT 1 FROM boards WHERE id = %s", (board,))
    if cur.fetchone() is None:
        raise BoardNotFound(board)


def _audit(cur, who: str, action: str, board: str | None, subject: str, detail: dict, reason: str) -> None:
    cur.execute(
        "INSERT INTO admin_audit (who, action, board, subject, detail, reason) VALUES (%s, %s, %s, %s, %s, %s)",
        (who, action, board, subject, json.dumps(detail), reason),
    )


def _cleanup(cur, entries: list[tuple[str, str, int]], purge: bool) -> Cleanup:
    if not entries:
        return Cleanup(None, [], purge)
    cur.execute(
        "INSERT INTO redis_cleanup (board_periods, user_ids, versions, purge) VALUES (%s, %s, %s, %s) RETURNING id",
        ([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries], purge),
    )
    return Cleanup(cur.fetchone()[0], entries, purge)


_LIVE = "NOT EXISTS (SELECT 1 FROM period_archives a WHERE a.board_period = p.board_period)"


def hide(conn, user_id: str, board: str | None, reason: str, who: str) -> ActionResult:
    """Hide the player on one board (None: on every board, and boards made later): their
    states in live periods leave player_scores for hidden_scores, the shards get a
    tombstone one version newer. Archived periods keep them (a closed standing is a
    record; `remove` takes an entry out of one)."""
    scope = EVERY_BOARD if board is None else board
    with conn, conn.cursor() as cur:
        if board is not None:
            _require_board(cur, board)
        cur.execute("SELECT pg_advisory_xact_lock(lb_player_lock(%s))", (user_id,))
        cur.execute(
            "INSERT INTO hidden_players (user_id, board, reason) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (user_id, scope, reason),
        )
        newly = cur.rowcount == 1
        # By the periods player_periods lists (player_scores is keyed by period first).
        cur.execute(
            "WITH moved AS ("
            "  DELETE FROM player_scores p USING player_periods pp"
            "   WHERE pp.user_id = %s AND (%s OR split_part(pp.board_period, ':', 1) = %s)"
            "     AND p.board_period = pp.board_period AND p.user_id = pp.user_id"
            f"    AND {_LIVE}"
            "  RETURNING p.board_period, p.user_id, p.score, p.version, p.seq, p.metadata"
            ") INSERT INTO hidden_scores (board_period, user_id, board, score, version, seq, metadata)"
            "  SELECT board_period, user_id, split_part(board_period, ':', 1), score, version + 1, seq, metadata"
            "    FROM moved"
            " RETURNING board_period, version",
            (user_id, board is None, board),
        )
        entries = sorted((bp, user_id, version) for bp, version in cur.fetchall())
        detail = {"periods": [e[0] for e in entries]}
        if newly:
            _audit(cur, who, "hide", board, user_id, detail, reason)
        return ActionResult("hide", user_id, board, newly, detail, _cleanup(cur, entries, purge=False))


def unhide(conn, user_id: str, board: str | None, reason: str, who: str) -> ActionResult:
    """Undo `hide` on one board (None: every hiding of the player): their states come
    back one version newer, placed by the layout in force, with an outbox row so the
    shards get them even if the caller stops first."""
    with conn, conn.cursor() as cur:
        if board is not None:
            _require_board(cur, board)
        periods = _lock_periods_of(
            cur,
            user_id,
            "SELECT board_period FROM hidden_scores WHERE user_id = %s AND (%s OR board = %s)",
            (user_id, board is None, board),
        )
        if board is not None:
            cur.execute("SELECT 1 FROM hidden_players WHERE user_id = %s AND board = %s", (user_id, EVERY_BOARD))
            if cur.fetchone() is not None:
                raise PlayerNotHidden(
                    user_id,
                    f"player {user_id} is hidden on every board: unhide with POST /v1/admin/players/{user_id}/unhide",
                )
        cur.execute(
            "DELETE FROM hidden_players WHERE user_id = %s AND (%s OR board = %s)", (user_id, board is None, board)
        )
        changed = cur.rowcount > 0
        # Placed as lb_apply_events places a write: the board's split (or the layout's),
        # and a running move's cursor when the move re-splits this board. The periods'
        # locks are held, and a move step changes the layout only under them.
        cur.execute(
            "WITH restored AS ("
            "  DELETE FROM hidden_scores h WHERE h.user_id = %s AND (%s OR h.board = %s)"
            "  RETURNING h.board_period, h.user_id, h.board, h.score, h.version, h.seq, h.metadata"
            ") INSERT INTO player_scores AS ps (board_period, user_id, score, version, seq, shard, epoch, metadata)"
            " SELECT r.board_period, r.user_id, r.score, r.version + 1, r.seq,"
            "        lb_layout_shard(r.board_period, r.score, r.seq, coalesce(b.split, l.shards),"
            "            CASE WHEN l.move IS NOT NULL AND CASE WHEN l.move->>'board' IS NULL THEN b.split IS NULL"
            "                                                  ELSE l.move->>'board' = r.board END"
            "                 THEN l.move END),"
            "        l.epoch, r.metadata"
            "   FROM restored r JOIN boards b ON b.id = r.board CROSS JOIN shard_layout l WHERE l.id = 1"
            " RETURNING ps.board_period, ps.user_id, ps.score, ps.version, ps.seq, ps.shard, ps.metadata",
            (user_id, board is None, board),
        )
        rows = [PlayerRow(*row) for row in cur.fetchall()]
        cur.execute("SELECT board_period FROM period_archives WHERE board_period = ANY(%s)", (periods,))
        archived = {row[0] for row in cur.fetchall()}
        live = sorted((r for r in rows if r.board_period not in archived), key=lambda r: r.board_period)
        outbox_id = None
        if live:
            cur.execute(
                "INSERT INTO redis_outbox (board_periods, user_ids) VALUES (%s, %s) RETURNING id",
                ([r.board_period for r in live], [r.user_id for r in live]),
            )
            outbox_id = cur.fetchone()[0]
        detail = {"periods": [r.board_period for r in live]}
        if changed:
            _audit(cur, who, "unhide", board, user_id, detail, reason)
        return ActionResult("unhide", user_id, board, changed, detail, restored=live, outbox_id=outbox_id)


def _strip_events(cur, board: str, user_id: str, board_period: str) -> int:
    """The player's events on the board stop standing for this period: it becomes NULL in
    their `board_periods` (and its `scores_after`), in place, so every other period keeps
    its position and the match_id stays known (a resend is a duplicate, never counted
    again). Returns how many events named it."""
    cur.execute(
        "UPDATE score_events SET board_periods = array_replace(board_periods, %s, NULL),"
        "       scores_after = (SELECT array_agg(CASE WHEN u.bp = %s THEN NULL ELSE u.sc END ORDER BY u.k)"
        "                         FROM unnest(board_periods, scores_after) WITH ORDINALITY AS u(bp, sc, k))"
        " WHERE board = %s AND user_id = %s AND %s = ANY (board_periods)",
        (board_period, board_period, board, user_id, board_period),
    )
    return cur.rowcount


def _drop_archived_rank(cur, board_period: str, user_id: str) -> bool:
    """Take the player out of an archived standing; everyone below moves up one."""
    cur.execute(
        "DELETE FROM period_ranks WHERE board_period = %s AND user_id = %s RETURNING rank", (board_period, user_id)
    )
    found = cur.fetchone()
    if found is None:
        return False
    # Two steps through negative ranks: the primary key (board_period, rank) is checked
    # row by row, so shifting the ranks in place would collide with the next row.
    cur.execute(
        "UPDATE period_ranks SET rank = -(rank - 1) WHERE board_period = %s AND rank > %s", (board_period, found[0])
    )
    cur.execute("UPDATE period_ranks SET rank = -rank WHERE board_period = %s AND rank < 0", (board_period,))
    cur.execute("UPDATE period_archives SET players = players - 1 WHERE board_period = %s", (board_period,))
    return True


def remove_entry(conn, user_id: str, board_period: str, reason: str, who: str) -> ActionResult:
    """Remove the player's entry in one board period, live or archived: their state
    (tombstoned on the shards), their place in an archive, and the period from their
    events on that board (`_strip_events`). They may score there again afterwards,
    from nothing."""
    board = _board_of(board_period)
    with conn, conn.cursor() as cur:
        _require_board(cur, board)
        _lock(cur, user_id, [board_period])
        cur.execute(
            "DELETE FROM player_scores WHERE board_period = %s AND user_id = %s RETURNING version",
            (board_period, user_id),
        )
        state = cur.fetchone()
        cur.execute(
            "DELETE FROM hidden_scores WHERE board_period = %s AND user_id = %s RETURNING version",
            (board_period, user_id),
        )
        hidden = cur.fetchone()
        cur.execute("SELECT 1 FROM period_archives WHERE board_period = %s", (board_period,))
        archived = cur.fetchone() is not None
        ranked = _drop_archived_rank(cur, board_period, user_id) if archived else False
        events = _strip_events(cur, board, user_id, board_period)
        entries: list[tuple[str, str, int]] = []
        if not archived and (state is not None or hidden is not None):
            version = state[0] + 1 if state is not None else hidden[0]
            cur.execute(
                "INSERT INTO removed_scores (board_period, user_id, version) VALUES (%s, %s, %s)"
                " ON CONFLICT (board_period, user_id) DO UPDATE"
                " SET version = greatest(removed_scores.version, excluded.version)",
                (board_period, user_id, version),
            )
            entries.append((board_period, user_id, version))
        changed = state is not None or hidden is not None or ranked or events > 0
        detail = {"period": board_period, "events": events, "archived": archived}
        if changed:
            _audit(cur, who, "remove", board, user_id, detail, reason)
        return ActionResult("remove", user_id, board, changed, detail, _cleanup(cur, entries, purge=False))


def erase(conn, user_id: str, reason: str, who: str) -> ActionResult:
    """Forget the player: every state, hidden state, tombstone record, archived place
    and event, on every board; earlier audit entries name the hash instead. What stays
    is the erasure record (when, and the hash), which also refuses the id's later
    events. The shards' copies are purged, tombstones included."""
    digest = user_hash(user_id)
    with conn, conn.cursor() as cur:
        periods = _lock_periods_of(
            cur,
            user_id,
            "SELECT board_period FROM player_periods WHERE user_id = %s"
            " UNION SELECT board_period FROM hidden_scores WHERE user_id = %s"
            " UNION SELECT board_period FROM removed_scores WHERE user_id = %s"
            " UNION SELECT board_period FROM period_ranks WHERE user_id = %s",
            (user_id, user_id, user_id, user_id),
        )
        counts = {}
        cur.execute("DELETE FROM player_scores WHERE board_period = ANY(%s) AND user_id = %s", (periods, user_id))
        counts["player_scores"] = cur.rowcount
        for table in ("hidden_scores", "removed_scores", "hidden_players", "player_periods"):
            cur.execute(f"DELETE FROM {table} WHERE user_id = %s", (user_id,))  # noqa: S608 - fixed names
            counts[table] = cur.rowcount
        cur.execute("SELECT board_period FROM period_ranks WHERE user_id = %s", (user_id,))
        archived = [row[0] for row in cur.fetchall()]
        for board_period in archived:
            _drop_archived_rank(cur, board_period, user_id)
        cur.execute(
            "DELETE FROM score_events WHERE board = ANY (ARRAY(SELECT id FROM boards)) AND user_id = %s", (user_id,)
        )
        events = cur.rowcount
        cur.execute("UPDATE admin_audit SET subject = %s WHERE subject = %s", (digest, user_id))
        cur.execute("INSERT INTO erased_players (user_hash) VALUES (%s) ON CONFLICT DO NOTHING", (digest,))
        first_time = cur.rowcount == 1
        cur.execute("SELECT board_period FROM period_archives WHERE board_period = ANY(%s)", (periods,))
        closed = {row[0] for row in cur.fetchall()}
        live = [key for key in periods if key not in closed]
        detail = {
            "states": counts["player_scores"] + counts["hidden_scores"],
            "archived_places": len(archived),
            "events": events,
        }
        _audit(cur, who, "erase", None, digest, detail, reason)
        cleanup = _cleanup(cur, [(key, user_id, 0) for key in live], purge=True)
        changed = first_time or any(counts.values()) or bool(archived) or events > 0
        return ActionResult("erase", digest, None, changed, detail, cleanup)


@dataclass(frozen=True)
class HeldEntry:
    board_period: str
    score: int  # stored (higher is better)
    hidden: bool
    archived_rank: int | None  # the place in the period's archive, if it is archived
    metadata: str | None


def player_report(conn, user_id: str) -> tuple[bool, list[str], list[HeldEntry]]:
    """What is held about a player: (erased?, the boards they are hidden on, every entry
    in every period, hidden ones included), for support staff and access requests."""
    with conn.cursor() as cur:
        erased = _erased(cur, user_id)
        cur.execute("SELECT board FROM hidden_players WHERE user_id = %s ORDER BY board", (user_id,))
        hidden_on = [row[0] for row in cur.fetchall()]
        cur.execute(
            "SELECT p.board_period, p.score, false, r.rank, p.metadata"
            "  FROM player_periods pp JOIN player_scores p"
            "    ON p.board_period = pp.board_period AND p.user_id = pp.user_id"
            "  LEFT JOIN period_ranks r ON r.board_period = p.board_period AND r.user_id = p.user_id"
            " WHERE pp.user_id = %s"
            " UNION ALL"
            " SELECT h.board_period, h.score, true, NULL, h.metadata FROM hidden_scores h WHERE h.user_id = %s"
            " ORDER BY 1",
            (user_id, user_id),
        )
        entries = [HeldEntry(*row) for row in cur.fetchall()]
    conn.commit()
    return erased, hidden_on, entries


def _erased(cur, user_id: str) -> bool:
    cur.execute("SELECT 1 FROM erased_players WHERE user_hash = %s", (user_hash(user_id),))
    return cur.fetchone() is not None


def is_erased(conn, user_id: str) -> bool:
    with conn.cursor() as cur:
        found = _erased(cur, user_id)
    conn.commit()
    return found


def audit_log(
    conn, *, limit: int = 100, before: int | None = None, subject: str | None = None, board: str | None = None
) -> list[AuditEntry]:
    """Admin actions, newest first; `before`: an id, to page back. `subject` matches the
    user id, or the hash of an erased one."""
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit", "must be 1 to 1000")
    where, params = ["TRUE"], []
    if before is not None:
        where.append("id < %s")
        params.append(before)
    if subject is not None:
        where.append("subject IN (%s, %s)")
        params += [subject, user_hash(subject)]
    if board is not None:
        where.append("board = %s")
        params.append(board)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, at, who, action, board, subject, detail, reason FROM admin_audit"
            f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",  # noqa: S608 - fixed clauses
            (*params, limit),
        )
        rows = [AuditEntry(*row) for row in cur.fetchall()]
    conn.commit()
    return rows


def cleanups_due(conn, settle_s: float, limit: int = 100) -> list[Cleanup]:
    """Recorded shard work of admin actions older than `settle_s`, oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, board_periods, user_ids, versions, purge FROM redis_cleanup"
            " WHERE created_at < now() - make_interval(secs => %s) ORDER BY id LIMIT %s",
            (settle_s, limit),
        )
        rows = cur.fetchall()
    conn.commit()
    return [Cleanup(i, list(zip(bps, users, versions, strict=True)), purge) for i, bps, users, versions, purge in rows]


def finish_cleanups(conn, ids: list[int]) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM redis_cleanup WHERE id = ANY(%s)", (ids,))
