"""PostgreSQL: the durable truth. Blocking psycopg2 calls, run in worker threads.

Every statement runs under a statement timeout, which the server enforces, and every
call under a deadline, which we enforce (`_Call`): a frozen server or a black-holed
network cannot cancel its own statements, and a request must not wait on it past
the deadline. A lost connection, a timeout or a passed deadline becomes
`StoreUnavailable`. Each group of events is one transaction, so such a failure
either committed all of the group or none of it; when we cannot tell which, the
error says so (`outcome_unknown`) and the client resends the same match_ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from router.aio.circuit_breaker import CircuitBreaker
from router.boards import Board, Range
from router.errors import StoreUnavailable
from router.events import EventRow, GroupCommit, PlayerRow, ScoreEvent
from router.store import boards as board_rows
from router.store import players as player_rows
from router.store.layout import Layout, load_layout


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def array_literal(values: Iterable[object]) -> str:
    """One PostgreSQL array literal ('{"a","b"}') for a whole column of a group.

    psycopg2 would send a list as ARRAY['a', 'b', ...]: one expression per element for
    the server to parse. For the seven columns of 500 events that took 10 ms against
    1.2 ms for literals (medians of 20), next to about 40 ms for applying them.

    A column holds one type. Every element is quoted; quotes and backslashes are
    escaped only if one scan of the whole column (in C) finds any, which with the
    API's identifiers it never does. Dates and datetimes go as ISO 8601, each distinct
    value formatted once (a batch's events mostly share one moment).
    """
    items = list(values)
    if not items:
        return "{}"
    if any(v is None for v in items):
        # A column with holes (display data that most events lack): NULL unquoted.
        return "{" + ",".join("NULL" if v is None else array_literal([v])[1:-1] for v in items) + "}"
    if isinstance(items[0], date):  # datetime is a date too
        formatted: dict[object, str] = {}
        texts = [formatted.get(v) or formatted.setdefault(v, v.isoformat()) for v in items]  # type: ignore[attr-defined]
    else:
        texts = list(map(str, items))
    whole = "".join(texts)
    if '"' in whole or "\\" in whole:
        texts = [text.replace("\\", "\\\\").replace('"', '\\"') for text in texts]
    return '{"' + '","'.join(texts) + '"}'


class _Call:
    """One call's claim on a worker thread and the connection it uses, so the event
    loop can give up on it at its deadline: shutting the socket down wakes the thread
    from its wait on the server (psycopg2 then raises, and the pool drops the
    connection), and a call abandoned before it got a connection never starts."""

    _current = threading.local()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg2.extensions.connection | None = None
        self.abandoned = False

    @classmethod
    def current(cls) -> _Call | None:
        return getattr(cls._current, "call", None)

    def run(self, fn: Callable[..., T], args: tuple) -> T:
        self._current.call = self
        try:
            return fn(*args)
        finally:
            self._current.call = None

    def attach(self, conn: psycopg2.extensions.connection) -> None:
        with self._lock:
            if self.abandoned:
                raise StoreUnavailable("deadline passed before a connection was free")
            self._conn = conn

    def detach(self) -> None:
        with self._lock:
            self._conn = None

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(conn.fileno()))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()


class _DeadlinePassed(StoreUnavailable):
    """The call's deadline passed: PostgreSQL is hung or unreachable, not just refusing."""


class _Retryable(Exception):
    """Serialization failure or deadlock: the transaction rolled back and may simply run again."""


class ConnectionPool:
    """A fixed-size pool that keeps its connections open.

    psycopg2's own pools close a returned connection once `minconn` are idle, so
    under real concurrency every request would reconnect; this one never does.
    """

    def __init__(self, dsn: str, size: int, statement_timeout_ms: int, wait_s: float = 10.0) -> None:
        self._dsn = dsn
        self._wait_s = wait_s
        self._options = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={statement_timeout_ms}"
        self._idle: queue.LifoQueue[psycopg2.extensions.connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    def _connect(self) -> psycopg2.extensions.connection:
        # 2 s is libpq's smallest connect timeout; the call's deadline may be shorter.
        conn = psycopg2.connect(self._dsn, connect_timeout=2, options=self._options)
        # Every call here is one statement (a group is one function call), and a
        # statement is its own transaction: without BEGIN and COMMIT each call is one
        # round trip instead of three, and one hand-off of the GIL instead of three.
        conn.autocommit = True
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        if not self._slots.acquire(timeout=self._wait_s):
            raise StoreUnavailable(f"no free PostgreSQL connection within {self._wait_s:g} s")
        call = _Call.current()
        conn = None
        in_use = False
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                try:
                    conn = self._connect()
                except psycopg2.OperationalError as exc:
                    # Nothing was sent: whatever the caller meant to do, it did not happen.
                    raise StoreUnavailable(_first_line(exc)) from exc
            if call is not None:
                call.attach(conn)
            in_use = True
            yield conn
        except psycopg2.OperationalError as exc:
            if conn is not None:
                conn.close()
                conn = None
            raise StoreUnavailable(_first_line(exc) or "connection lost", outcome_unknown=in_use) from exc
        except psycopg2.InterfaceError as exc:
            if conn is not None:
                conn.close()
                conn = None
            raise StoreUnavailable("connection lost", outcome_unknown=in_use) from exc
        finally:
            if call is not None:
                call.detach()
            if conn is not None:
                if conn.closed or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                if not conn.closed:
                    self._idle.put(conn)
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


# One controller for every call, not tenacity's decorator: the decorator copies its
# controller per call, and a copy used in a long-lived worker thread stays in a
# reference cycle (its thread-local state holds bound methods of itself) until the
# garbage collector finds it — ten objects per group commit, most of what the
# collector's young passes found in a loadtest. The controller keeps its state per
# thread, so the pool's threads can share it.
_CONFLICT_RETRIES = Retrying(
    retry=retry_if_exception_type(_Retryable),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.005, max=0.2),
    reraise=True,
)

T = TypeVar("T")


def with_conflict_retries(fn: Callable[..., T], *args: object) -> T:
    """`fn(*args)`, run again after a serialization failure or deadlock (`_Retryable`)."""
    return _CONFLICT_RETRIES(fn, *args)


class Store:
    """`deadline_s` bounds every call, from the request's side (`_Call`)."""

    def __init__(self, dsn: str, pool_size: int, statement_timeout_ms: int, *, deadline_s: float = 10.0) -> None:
        self.deadline_s = deadline_s
        self.pool = ConnectionPool(dsn, pool_size, statement_timeout_ms, wait_s=deadline_s)
        # One call past its deadline is enough: the next ones would each wait it out
        # too, and writes queued behind them would wait for all of them.
        self.breaker = CircuitBreaker("postgres", self._probe, failures_to_open=1)

    def close(self) -> None:
        self.pool.close()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self.breaker.is_open:
            raise StoreUnavailable(f"not answering for {self.breaker.open_for_s():.1f} s")
        try:
            result = await self._run_unguarded(fn, *args)
        except _DeadlinePassed:
            self.breaker.record_failure()
            raise
        self.breaker.record_success()
        return result

    async def _run_unguarded(self, fn: Callable[..., T], *args: object) -> T:
        deadline_s = self.deadline_s
        call = _Call()
        future = asyncio.get_running_loop().run_in_executor(None, call.run, fn, args)
        try:
            async with asyncio.timeout(deadline_s):
                # Shielded: at the deadline the thread is woken by abandon(), not cancelled.
                return await asyncio.shield(future)
        except TimeoutError:
            call.abandon()
            raise _DeadlinePassed(f"no answer within {deadline_s:g} s", outcome_unknown=True) from None

    async def _probe(self) -> None:
        await self._run_unguarded(self._fetch_sync, "SELECT 1", ())

    # -- writes -------------------------------------------------------------------

    def _apply_events_sync(self, events: Sequence[ScoreEvent]) -> GroupCommit:
        return with_conflict_retries(self._apply_events_once, events)

    def _apply_events_once(self, events: Sequence[ScoreEvent]) -> GroupCommit:
        row_events = [k for k, event in enumerate(events, start=1) for _ in event.board_periods]
        row_periods = [period for event in events for period in event.board_periods]
        with self.pool.connection() as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "SELECT idx, event, status, detail, board_period, score, prev_score, version, prev_version,"
                        " seq, shard, prev_shard, metadata, outbox_id"
                        " FROM lb_apply_events(%s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[],"
                        " %s::timestamptz[], %s::int[], %s::int[], %s::text[], %s::text[])",
                        (
                            array_literal([e.board for e in events]),
                            array_literal([e.user_id for e in events]),
                            array_literal([e.match_id for e in events]),
                            array_literal([e.mode for e in events]),
                            array_literal([e.value for e in events]),
                            array_literal([e.occurred_at for e in events]),
                            array_literal(range(1, len(events) + 1)),
                            array_literal(row_events),
                            array_literal(row_periods),
                            # Most groups carry no display data: NULL, not an array of NULLs.
                            array_literal([e.metadata for e in events]) if any(e.metadata for e in events) else None,
                        ),
                    )
                    rows = cur.fetchall()
            except (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected) as exc:
                raise _Retryable() from exc
            except psycopg2.errors.QueryCanceled as exc:
                raise StoreUnavailable("statement timed out") from exc
        rows.sort(key=lambda r: r[0])
        per_event: list[list[EventRow]] = [[] for _ in events]
        for row in rows:
            per_event[row[1] - 1].append(EventRow(*row[2:-1]))
        return GroupCommit(per_event, rows[0][-1] if rows else None)

    async def apply_events(self, events: Sequence[ScoreEvent]) -> GroupCommit:
        """Commit a group of events, in arrival order, in one transaction; rows come back in the same order.

        Arrival order decides each player's order of events and the tie order within
        the group; PostgreSQL takes the players' locks in its own fixed order.
        """
        return await self._run(self._apply_events_sync, events)

    def _ack_sync(self, outbox_ids: Sequence[int]) -> int:
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT lb_ack_outbox(%s::bigint[])", (array_literal(outbox_ids),))
            (count,) = cur.fetchone()
        return count

    async def ack_outbox(self, outbox_ids: Sequence[int]) -> int:
        """Forget outbox rows whose every state the shards now hold."""
        if not outbox_ids:
            return 0
        return await self._run(self._ack_sync, outbox_ids)

    # -- reads --------------------------------------------------------------------

    def _outbox_sync(self, settle_s: float, players: int) -> dict[int, list[PlayerRow]]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            # Oldest rows first, as many as fit in `players` (at least one); the
            # window runs over at most 1,000 rows, however long the backlog.
            cur.execute(
                "WITH oldest AS ("
                "  SELECT id, board_periods, user_ids FROM redis_outbox"
                "   WHERE created_at < now() - make_interval(secs => %s) ORDER BY id LIMIT 1000"
                "), due AS ("
                "  SELECT id, board_periods, user_ids FROM ("
                "    SELECT *, sum(cardinality(user_ids)) OVER (ORDER BY id) - cardinality(user_ids) AS before"
                "      FROM oldest) counted"
                "   WHERE before < %s"
                ")"
                " SELECT d.id, s.board_period, s.user_id, s.score, s.version, s.seq, s.shard, s.metadata"
                " FROM due d LEFT JOIN LATERAL ("
                "   SELECT DISTINCT p.board_period, p.user_id, p.score, p.version, p.seq, p.shard, p.metadata"
                "     FROM unnest(d.board_periods, d.user_ids) AS x(board_period, user_id)"
                "     JOIN player_scores p ON p.board_period = x.board_period AND p.user_id = x.user_id"
                "    WHERE NOT EXISTS (SELECT 1 FROM period_archives a WHERE a.board_period = x.board_period)"
                " ) s ON true"
                " ORDER BY d.id",
                (settle_s, players),
            )
            found: dict[int, list[PlayerRow]] = {}
            for outbox_id, *state in cur.fetchall():
                players_of_row = found.setdefault(outbox_id, [])
                if state[0] is not None:
                    players_of_row.append(PlayerRow(*state))
        return found

    async def unfinished(self, settle_s: float, players: int = 1000) -> dict[int, list[PlayerRow]]:
        """Outbox rows older than `settle_s`, oldest first, up to about `players` players in all:
        each row's id and the current state of its players in live periods (a player with no
        state, only refused events, or in an archived period, needs nothing on the shards)."""
        return await self._run(self._outbox_sync, settle_s, players)

    async def outbox_backlog(self) -> int:
        return (await self._fetch("SELECT count(*) FROM redis_outbox"))[0][0]

    def _layout_sync(self) -> Layout | None:
        with self.pool.connection() as conn:
            return load_layout(conn)

    async def layout(self) -> Layout | None:
        return await self._run(self._layout_sync)

    async def layout_epoch(self) -> int | None:
        rows = await self._fetch("SELECT epoch FROM shard_layout WHERE id = 1")
        return rows[0][0] if rows else None

    async def boards(self) -> tuple[datetime | None, dict[str, Board]]:
        return await self._run(self._with_conn, board_rows.load_boards)

    async def boards_version(self) -> datetime | None:
        return await self._run(self._with_conn, board_rows.boards_version)

    async def put_board(self, board: Board, ranges: tuple[Range, ...] | None = None) -> tuple[Board, bool]:
        return await self._run(self._with_conn, board_rows.put_board, board, ranges)

    async def close_board(self, board_id: str) -> bool:
        return await self._run(self._with_conn, board_rows.close_board, board_id)

    async def board_players(self, board_periods: Sequence[str]) -> dict[str, int]:
        """Players per board period (archived ones included), from PostgreSQL."""
        rows = await self._fetch(
            "SELECT board_period, count(*) FROM player_scores WHERE board_period = ANY(%s::text[]) GROUP BY 1",
            (array_literal(board_periods),),
        )
        return dict(rows)

    async def hide_player(self, user_id: str, board: str | None, reason: str, who: str) -> player_rows.ActionResult:
        return await self._run(self._with_conn, player_rows.hide, user_id, board, reason, who)

    async def unhide_player(self, user_id: str, board: str | None, reason: str, who: str) -> player_rows.ActionResult:
        return await self._run(self._with_conn, player_rows.unhide, user_id, board, reason, who)

    async def remove_entry(self, user_id: str, board_period: str, reason: str, who: str) -> player_rows.ActionResult:
        return await self._run(self._with_conn, player_rows.remove_entry, user_id, board_period, reason, who)

    async def erase_player(self, user_id: str, reason: str, who: str) -> player_rows.ActionResult:
        return await self._run(self._with_conn, player_rows.erase, user_id, reason, who)

    async def player_report(self, user_id: str) -> tuple[bool, list[str], list[player_rows.HeldEntry]]:
        return await self._run(self._with_conn, player_rows.player_report, user_id)

    async def is_erased(self, user_id: str) -> bool:
        return await self._run(self._with_conn, player_rows.is_erased, user_id)

    async def audit_log(self, **filters: object) -> list[player_rows.AuditEntry]:
        return await self._run(self._with_conn, functools.partial(player_rows.audit_log, **filters))

    async def cleanups_due(self, settle_s: float, limit: int = 100) -> list[player_rows.Cleanup]:
        return await self._run(self._with_conn, player_rows.cleanups_due, settle_s, limit)

    async def finish_cleanups(self, ids: list[int]) -> None:
        if ids:
            await self._run(self._with_conn, player_rows.finish_cleanups, ids)

    async def withdrawn_versions(self, board_period: str, user_ids: Sequence[str]) -> dict[str, int]:
        """For players PostgreSQL has no state of in the period: the version a hidden or
        removed one was tombstoned at (absent: never there, or erased)."""
        rows = await self._fetch(
            "SELECT user_id, max(version) FROM ("
            "  SELECT user_id, version FROM hidden_scores WHERE board_period = %s AND user_id = ANY(%s::text[])"
            "  UNION ALL"
            "  SELECT user_id, version FROM removed_scores WHERE board_period = %s AND user_id = ANY(%s::text[])"
            ") w GROUP BY user_id",
            (board_period, array_literal(user_ids), board_period, array_literal(user_ids)),
        )
        return dict(rows)

    def _with_conn(self, fn: Callable[..., T], *args: object) -> T:
        with self.pool.connection() as conn:
            return fn(conn, *args)

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    # -- self-healing -------------------------------------------------------------

    async def players_on_shard(self, board_period: str, shard_id: str, after_user: str, limit: int) -> list[PlayerRow]:
        """The board period's players PostgreSQL places on this shard, by user id after `after_user`."""
        rows = await self._fetch(
            "SELECT board_period, user_id, score, version, seq, shard, metadata FROM player_scores"
            " WHERE board_period = %s AND user_id > %s AND shard = %s ORDER BY user_id LIMIT %s",
            (board_period, after_user, shard_id, limit),
        )
        return [PlayerRow(*row) for row in rows]

    async def players(self, board_period: str, user_ids: Sequence[str]) -> dict[str, PlayerRow]:
        rows = await self._fetch(
            "SELECT board_period, user_id, score, version, seq, shard, metadata FROM player_scores"
            " WHERE board_period = %s AND user_id = ANY(%s::text[])",
            (board_period, array_literal(user_ids)),
        )
        return {row[1]: PlayerRow(*row) for row in rows}

    async def has_players_on_shard(self, board_periods: Sequence[str], shard_id: str) -> bool:
        rows = await self._fetch(
            "SELECT EXISTS (SELECT 1 FROM player_scores WHERE board_period = ANY(%s::text[]) AND shard = %s)",
            (array_literal(board_periods), shard_id),
        )
        return bool(rows[0][0])

    # -- archived periods ---------------------------------------------------------

    def _fetch_sync(self, sql: str, params: tuple) -> list[tuple]:
        with self.pool.connection() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        return rows

    async def _fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        return await self._run(self._fetch_sync, sql, params)

    async def archived_players(self, board_period: str) -> int | None:
        """Players in an archived board period, or None if it is not archived."""
        rows = await self._fetch("SELECT players FROM period_archives WHERE board_period = %s", (board_period,))
        return rows[0][0] if rows else None

    async def archived_standing(self, board_period: str, user_id: str) -> tuple[int, int, str | None] | None:
        rows = await self._fetch(
            "SELECT rank, score, metadata FROM period_ranks WHERE board_period = %s AND user_id = %s",
            (board_period, user_id),
        )
        return rows[0] if rows else None

    async def archived_standings(
        self, board_period: str, user_ids: Sequence[str]
    ) -> dict[str, tuple[int, int, str | None]]:
        """{user_id: (rank, score, display data)} of those listed who are in the archived period."""
        rows = await self._fetch(
            "SELECT user_id, rank, score, metadata FROM period_ranks WHERE board_period = %s AND user_id = ANY(%s)",
            (board_period, list(user_ids)),
        )
        return {user_id: (rank, score, metadata) for user_id, rank, score, metadata in rows}

    async def archived_range(
        self, board_period: str, offset: int, limit: int
    ) -> list[tuple[int, str, int, str | None]]:
        """Entries at 1-based ranks offset+1 .. offset+limit (scores as the board shows them)."""
        return await self._fetch(
            "SELECT rank, user_id, score, metadata FROM period_ranks"
            " WHERE board_period = %s AND rank > %s AND rank <= %s ORDER BY rank",
            (board_period, offset, offset + limit),
        )

    async def archived_among(self, board_periods: Sequence[str]) -> list[str]:
        return [
            row[0]
            for row in await self._fetch(
                "SELECT board_period FROM period_archives WHERE board_period = ANY(%s::text[])",
                (array_literal(board_periods),),
            )
        ]

    async def archived_periods(self, board: str | None = None) -> list[tuple[str, int, datetime]]:
        """(board period, players, closed at) of every archive (of one board), newest first."""
        if board is None:
            return await self._fetch(
                "SELECT board_period, players, closed_at FROM period_archives ORDER BY closed_at DESC, board_period"
            )
        return await self._fetch(
            "SELECT board_period, players, closed_at FROM period_archives WHERE board_period LIKE %s"
            " ORDER BY board_period DESC",
            (board.replace("_", r"\_") + ":%",),
        )
