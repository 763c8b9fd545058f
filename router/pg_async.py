"""PostgreSQL calls driven by the event loop: psycopg2's asynchronous connections.

The group commit is the write path's one PostgreSQL call per group. Run in a worker
thread, each call cost a hand-off to the thread and back and a wait for the GIL on
return; with a router worker's writers waiting in one group, that wait is the
cycle's length, and the cycle is what limits writes per second. Here the loop sends
the statement and wakes when the socket is readable, like any other I/O it waits on.

psycopg2's asynchronous connections are autocommit only, which suits a call that is
one statement and so its own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import psycopg2
import psycopg2.extensions

from router.errors import StoreUnavailable

_CONNECT_TIMEOUT_S = 3.0
_ACQUIRE_TIMEOUT_S = 10.0


async def _ready(conn: psycopg2.extensions.connection) -> None:
    """Waits until psycopg2 has finished what it started on `conn` (connect or query);
    raises what the server answered, as the blocking call would."""
    loop = asyncio.get_running_loop()
    fd = conn.fileno()
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        woken = loop.create_future()

        def wake(woken: asyncio.Future[None] = woken) -> None:
            if not woken.done():
                woken.set_result(None)

        if state == psycopg2.extensions.POLL_READ:
            loop.add_reader(fd, wake)
            try:
                await woken
            finally:
                loop.remove_reader(fd)
        else:
            loop.add_writer(fd, wake)
            try:
                await woken
            finally:
                loop.remove_writer(fd)


class AsyncConnectionPool:
    """Up to `size` asynchronous connections, opened when first needed and kept open.

    A connection that fails, or whose call is cancelled midway, is closed rather than
    reused: its state on the server is unknown.
    """

    def __init__(self, dsn: str, size: int, statement_timeout_ms: int) -> None:
        self._dsn = dsn
        self._options = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={statement_timeout_ms}"
        self._idle: list[psycopg2.extensions.connection] = []
        self._slots = asyncio.Semaphore(size)

    async def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(self._dsn, async_=True, options=self._options)
        try:
            # libpq does not time out an asynchronous connect by itself.
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                await _ready(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg2.extensions.connection]:
        try:
            async with asyncio.timeout(_ACQUIRE_TIMEOUT_S):
                await self._slots.acquire()
        except TimeoutError:
            raise StoreUnavailable(f"no free PostgreSQL connection within {_ACQUIRE_TIMEOUT_S:.0f} s") from None
        conn = None
        try:
            try:
                conn = self._idle.pop() if self._idle else await self._connect()
            except TimeoutError:
                raise StoreUnavailable("connecting timed out") from None
            yield conn
        except psycopg2.Error as exc:
            # No SQLSTATE, or a closed connection: the server is gone or unreachable.
            # With one (a serialization failure, a timeout, a constraint), the server
            # refused the statement, which rolled back: the caller decides what that
            # means, and the connection serves the next statement.
            lost = conn is None or bool(conn.closed) or exc.pgcode is None
            if conn is not None and (lost or conn.isexecuting()):
                conn.close()
                conn = None
            if lost:
                message = str(exc).strip()
                raise StoreUnavailable(message.splitlines()[0] if message else "connection lost") from exc
            raise
        except BaseException:
            # A cancellation midway leaves the connection mid-statement.
            if conn is not None and conn.isexecuting():
                conn.close()
                conn = None
            raise
        finally:
            if conn is not None and not conn.closed:
                self._idle.append(conn)
            self._slots.release()

    async def fetch_all(self, sql: str, params: Sequence[object]) -> list[tuple]:
        async with self.connection() as conn:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, params)
                await _ready(conn)
                return cursor.fetchall()
            finally:
                cursor.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
