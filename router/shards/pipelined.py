"""One pipelined connection per server for the hot script calls: a shard's apply,
lookup and range, and the rate limits' count (router.core.rate_limits).

redis-py's asyncio client spends about as much CPU per command on its own machinery
(a pooled connection taken and given back, its retry wrapper, option handling and
per-command observability hooks) as the command's bytes cost: a lookup of ten
players took 150-165 µs of the router's CPU through it and 72-81 µs written and read
here (a scratch microbenchmark, one redis-server, 3,000 calls each). Here commands
go out on one socket as they come, in order, and replies are matched to their
callers in the same order (Redis answers a connection's commands in order), parsed
by hiredis.

Its rules, for a connection that has sent commands not yet answered:
- It is dropped when one of its callers stops waiting (a deadline, a cancelled
  task): the reply still owed to that caller would otherwise be read as the next
  caller's. Everything still unanswered on it fails with ConnectionError.
- It is dropped when the socket fails or the server closes it; its unanswered
  commands fail with ConnectionError, as they would on redis-py's connections.
- A command that fails because the connection it was sent on had been open before
  (a shard restarted since) is sent once more on a fresh one: every command sent
  here is safe to repeat (reads, versioned applies).
- NOSCRIPT (the server lost its script cache: restarted, flushed) sends the script
  itself once, which caches it again.
- READONLY (a Sentinel-managed shard's old primary, now a replica) drops the
  connection, so the next one goes to the primary the sentinels name.

Errors are redis-py's exception types, so `ShardClients._call` treats them as it
treats redis-py's: ConnectionError and TimeoutError count against the breaker, any
other error answer is the shard unable to serve.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.asyncio.connection as aioconnection
import redis.asyncio.sentinel as aiosentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

# Where the shard's primary is now: (host, port).
Resolver = Callable[[], Awaitable[tuple[str, int]]]


class _Wire(asyncio.Protocol):
    """A connected socket and the callers waiting for its replies, oldest first."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8", errors="strict", replyError=ResponseError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiting:
            try:
                reply = self.reader.gets()
            except Exception as exc:  # noqa: BLE001 - a protocol error ends the connection
                self.drop(RedisConnectionError(f"unreadable reply: {exc}"))
                return
            if reply is False:
                return
            waiter = self.waiting.popleft()
            if waiter.done():
                continue
            if isinstance(reply, ResponseError):  # hiredis hands error answers back, not raised
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(RedisConnectionError(f"connection to the shard lost ({exc or 'closed by the server'})"))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise RedisConnectionError("connection to the shard is closed")
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self.transport.write(command)
        return waiter

    def drop(self, why: BaseException) -> None:
        self._fail_all(why)
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, why: BaseException) -> None:
        if self.lost is None:
            self.lost = why
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(why)

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()


class PipelinedScripts:
    """EVALSHA calls to one shard over one pipelined connection, opened when first needed."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        connect_timeout_s: float,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._resolve = resolve
        self._connect_timeout_s = connect_timeout_s
        self._setup = []
        if password:
            self._setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._setup.append(("SELECT", db))
        self._wire: _Wire | None = None
        self._connecting: asyncio.Future[_Wire] | None = None

    async def evalsha(self, sha: str, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        command = hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args))
        try:
            return await self._send(command)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._send(hiredis.pack_command(("EVAL", script, len(keys), *keys, *args)))

    async def _send(self, command: bytes) -> Any:
        wire = self._open_wire()
        fresh = wire is None
        if wire is None:
            wire = await self._connected()
        try:
            return await self._await_reply(wire, command)
        except RedisConnectionError:
            if fresh:
                raise
        # The connection had been open before this call: the shard may have restarted
        # since. Once more, on a fresh one (or one another caller has opened meanwhile).
        retry = self._open_wire()
        if retry is None or retry is wire:
            retry = await self._connected()
        return await self._await_reply(retry, command)

    def _open_wire(self) -> _Wire | None:
        return self._wire if self._wire is not None and self._wire.usable else None

    async def _await_reply(self, wire: _Wire, command: bytes) -> Any:
        waiter = wire.send(command)
        try:
            return await waiter
        except asyncio.CancelledError:
            if not waiter.done() or waiter.cancelled():
                wire.drop(RedisConnectionError("a caller stopped waiting on this connection"))
            raise
        except ResponseError as exc:
            # Plain, or inside a script's error ("... -READONLY You can't write against ...").
            if str(exc).startswith("READONLY") or "-READONLY " in str(exc):
                wire.drop(RedisConnectionError("the shard's server is a replica now"))
                raise ReadOnlyError(str(exc)) from None
            raise

    async def _connected(self) -> _Wire:
        """A fresh connection; callers that need one at the same time share it (and a
        caller that stops waiting does not stop it for the others)."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, connecting: asyncio.Future[_Wire]) -> None:
        if self._connecting is connecting:
            self._connecting = None
        if not connecting.cancelled():
            connecting.exception()  # seen here: its waiters may all have stopped waiting

    async def _connect(self) -> _Wire:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                host, port = await self._resolve()
                _, wire = await loop.create_connection(_Wire, host, port)
                for step in self._setup:
                    await wire.send(hiredis.pack_command(step))
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to the shard: {exc or type(exc).__name__}") from exc
        if self._wire is not None:
            self._wire.drop(RedisConnectionError("replaced by a fresh connection"))
        self._wire = wire
        return wire

    async def close(self) -> None:
        if self._wire is not None:
            self._wire.drop(RedisConnectionError("closed"))
            self._wire = None


async def call_script(
    pipelined: PipelinedScripts | None,
    script: Any,
    keys: Sequence[str],
    args: Sequence[Any],
    client: aioredis.Redis | None = None,
) -> Any:
    """A redis-py registered `script` called on `pipelined` where there is one, else
    through redis-py (on `client`, or the one it was registered with)."""
    if pipelined is None:
        return await script(keys=keys, args=args, client=client)
    return await pipelined.evalsha(script.sha, script.script, keys, args)


def pipelined_scripts_for(client: aioredis.Redis, connect_timeout_s: float) -> PipelinedScripts | None:
    """A pipelined script connection to the server `client` reaches (a Sentinel-managed
    shard's primary as the sentinels name it at each connect); None for what it does
    not speak (TLS, Unix sockets), whose calls stay on redis-py."""
    pool = client.connection_pool
    options = pool.connection_kwargs
    if isinstance(pool, aiosentinel.SentinelConnectionPool):
        resolve = pool.get_master_address
    elif pool.connection_class is not None and issubclass(pool.connection_class, aioconnection.Connection):
        if issubclass(pool.connection_class, aioconnection.SSLConnection):
            return None
        host, port = options.get("host", "localhost"), int(options.get("port", 6379))

        async def resolve() -> tuple[str, int]:
            return host, port
    else:
        return None
    return PipelinedScripts(
        resolve,
        connect_timeout_s=connect_timeout_s,
        db=int(options.get("db") or 0),
        username=options.get("username"),
        password=options.get("password"),
    )
